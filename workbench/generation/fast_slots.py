"""The fast step with slots: `decode_mode="fast"` in the workload runner.

FastDecoder (fast.py) keeps one position for the whole batch, so its rows start and end
together, and the runner could not refill a finished row with it. Its step is the one the
runner wants, though: on the H200 with the 34B shapes it took 8.2 ms at batch 1 where
transformers' forward in a CUDA graph took 13.8 (results/h200/issue21), and the runner's steps
are that forward at batch 32-48 (results/README.md, issue 19). `FastSlotDecoder` is the same
layers and weights with what slots.py gave transformers' forward:

- every row has its own position ([B]), which is both its rotary position and the cache slot
  its next token is written to (a row's prompt sits from slot 0, with no padding in the cache);
- each row's mask ([B, 1, 1, L]) lets it see its own slots only, when attention is SDPA over
  the whole cache under that mask; FastConfig.attention="filled" reads each row's own filled
  slots instead (the Triton kernel takes the position per row), which no mask is needed for;
- `prefill(rows, ids, mask)` runs a left-padded group of prompts through the layers at once
  (causal SDPA under the padding mask, positions counted from each prompt's first real token)
  and moves each prompt's keys and values to the front of its row of the cache;
- `finish(row)` stops a row from advancing, as SlotDecoder's does;
- the tail (FastConfig.narrow_to): `compact(rows)` moves rows to the front of the batch and
  `narrow(n)` is the step over the first n rows only (views of the same caches and buffers, a
  CUDA graph of its own). `prepare_tail()` makes and captures every width before a workload
  starts, so that none is compiled or captured inside it: done inside the 164-prompt run on the
  H200, the compiles and captures of five narrower widths took the run from 11.1 s to 30.7 s
  (third session, results/README.md).

The step's buffers are fixed, so CapturedStep captures and checks it as it does the others.
FastConfig's other switches (fuse, compile, store_in_rotary, combo_kernels, dense_prefill_rows,
graph) hold; dense_prefill_rows applies to the group prefills only, never to a step.
"""

from __future__ import annotations

import copy

from ..errors import ConfigError
from ..model import triton_kernels
from .fast import FastConfig, FastDecoder, fast_config, fast_weights
from .inputs import prefill_mask


class FastSlotDecoder(FastDecoder):
    """FastDecoder's step with a position, a mask and an active flag per row (see the module docstring)."""

    mode = "fast"

    def __init__(self, loaded, weights, config: FastConfig, batch: int, length: int):
        import torch

        super().__init__(loaded, weights, config, batch, length)
        d = self.device
        self.pos = torch.zeros(batch, dtype=torch.long, device=d)  # [B] each row's next slot = its rotary position
        self._slot = self.pos.view(batch, 1, 1, 1).expand(batch, self.kv, 1, self.head_dim)  # a view: follows pos
        self.active = torch.zeros(batch, dtype=torch.long, device=d)  # [B] 1 while a row decodes
        self._narrowed = {}  # n -> the step over the first n rows (narrow)

    @property
    def note(self) -> str:
        return "slots: one position per row; " + super().note

    def _state(self):
        return [self.pos, self.mask]

    def reset(self) -> None:
        """Every row idle at slot 0 (a decoder kept from an earlier workload starts clean)."""
        self.active.zero_()
        self.pos.zero_()
        self.mask.fill_(self.min)

    def finish(self, row: int) -> None:
        """`row` is done: it stops advancing (it keeps writing one slot) until it is refilled."""
        self.active[row] = 0

    # --- the tail: the rows left, at a narrower width -------------------------------------------------

    def tail_widths(self) -> list[int]:
        """The widths below the batch that the tail may step at: narrow_to and every power of two
        above it; [] when FastConfig.narrow_to is 0."""
        low = self.config.narrow_to
        if not low or low >= self.batch:
            return []
        return sorted({low} | {1 << k for k in range(self.batch.bit_length()) if low < 1 << k < self.batch})

    def width_for(self, rows: int) -> int:
        """The narrowest tail width that holds `rows` rows (the batch when none does)."""
        return next((w for w in self.tail_widths() if w >= rows), self.batch)

    def prepare_tail(self) -> float:
        """Make every tail width's step and take it once on idle rows (on CUDA: compile its pieces for
        that width, capture its graph and check it), then reset every row; returns the seconds it
        took (0 when every width was ready). Kept with the decoder for later workloads."""
        import time

        import torch

        widths = [w for w in self.tail_widths() if w not in self._narrowed]
        if not widths:
            return 0.0
        started = time.perf_counter()
        # each width compiles the step's pieces for its shape; past the recompile limit (8 by default)
        # torch.compile would run a piece uncompiled without a word
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, 32)
        self.reset()
        for w in widths:
            self.narrow(w).step(torch.zeros(w, dtype=torch.long, device=self.device))
        self.reset()  # the steps wrote slot 0 of idle rows; nothing of it is read
        return time.perf_counter() - started

    def compact(self, rows: list[int]) -> None:
        """Move `rows` (in this order) to rows 0..len(rows)-1: their caches, positions, masks and flags;
        every row after them is idle."""
        import torch

        m = len(rows)
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for k, v in zip(self.k_cache, self.v_cache):
            k[:m] = k[index]  # the gather copies first, so rows that move onto each other are safe
            v[:m] = v[index]
        for t in (self.pos, self.active, self.mask):
            t[:m] = t[index]
        self.active[m:] = 0

    def narrow(self, n: int) -> "FastSlotDecoder":
        """The step over the first `n` rows: this decoder's caches and buffers as views, its own graph
        (captured and checked on its first step like any other), kept for the next workload."""
        if n == self.batch:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < self.batch:
            raise ConfigError(f"narrow({n!r}): a width between 1 and the batch's {self.batch} rows")
        view = self._narrowed.get(n)
        if view is None:
            view = copy.copy(self)
            view.batch = n
            view.k_cache, view.v_cache = [k[:n] for k in self.k_cache], [v[:n] for v in self.v_cache]
            for name in ("ids", "pos", "active", "mask", "attn_out", "logits"):
                setattr(view, name, getattr(self, name)[:n])
            view._slot = view.pos.view(n, 1, 1, 1).expand(n, self.kv, 1, self.head_dim)
            view.attention = None if self.attention is None else \
                triton_kernels.DecodeAttention(n, self.heads, self.kv, self.head_dim, self.device)
            view.graph, view.graph_note, view._narrowed = None, "", {}
            self._narrowed[n] = view
        return view

    # --- prefill: a left-padded group into some rows ---------------------------------------------------

    def prefill(self, rows: list[int], input_ids, attention_mask):
        """Start the prompts of a left-padded [k, T] batch (its 0/1 mask) in `rows`; returns [k, V]
        float32 logits of each prompt's last position."""
        import torch

        k, t = input_ids.shape
        if k != len(rows) or t >= self.length:
            raise ConfigError(f"{k} prompts of {t} tokens do not fit {len(rows)} rows of a {self.length}-token cache")
        d = self.device
        attention_mask = attention_mask.to(d)
        lengths = attention_mask.long().sum(-1)  # [k] real tokens per prompt
        mask, positions = prefill_mask(attention_mask, t, self.dtype)  # [k, 1, T, T], [k, T]
        q_idx = torch.arange(t, device=d)
        cos, sin = self.cos_table[positions][:, None], self.sin_table[positions][:, None]  # [k, 1, T, D]
        index = torch.tensor(rows, dtype=torch.long, device=d)
        # slot j of row r takes the prompt's token T - len_r + j (its real tokens, moved to the front);
        # the slots past len_r take copies, masked until the row's own tokens are written there
        source = (t - lengths[:, None] + q_idx[None, :]).clamp_(max=t - 1)  # [k, T]
        gather = source[:, None, :, None].expand(k, self.kv, t, self.head_dim)

        def store(i, key, value):
            self.k_cache[i][index, :, :t] = key.gather(2, gather)
            self.v_cache[i][index, :, :t] = value.gather(2, gather)

        logits = self._prefill_layers(input_ids.to(d), cos, sin, store, mask)  # [k, V]
        row_mask = torch.full((k, self.length), self.min, dtype=self.dtype, device=d)
        row_mask.masked_fill_(torch.arange(self.length, device=d)[None, :] < lengths[:, None], 0.0)
        self.mask[index, 0, 0] = row_mask
        self.pos[index] = lengths
        self.active[index] = 1
        return logits

    # --- one step, per row (FastDecoder._step_body calls these) ----------------------------------------

    def _step_rotary(self):
        return self.cos_table[self.pos][:, None, None], self.sin_table[self.pos][:, None, None]  # [B, 1, 1, D] each

    def _step_mask(self):
        if self.attention is None:  # SDPA under the mask; the filled-cache kernel reads pos instead
            self.mask.view(self.batch, self.length).scatter_(1, self.pos.view(self.batch, 1), 0.0)  # sees itself

    def _rotate_store(self, i: int, qkv, cos, sin):
        fn = self.fn
        if self.config.store_in_rotary:
            return fn["rotate_store_rows"](qkv, cos, sin, self._slot, self.k_cache[i], self.v_cache[i], self.heads,
                                           self.kv, self.head_dim)
        q, k, v = fn["split_rotate"](qkv, cos, sin, self.heads, self.kv, self.head_dim)
        self.k_cache[i].scatter_(2, self._slot, k)  # [B, KV, 1, D] at each row's slot
        self.v_cache[i].scatter_(2, self._slot, v)
        return q

    def _advance(self):
        self.pos.add_(self.active)  # finished rows stay where they are


def fast_slot_decoder(loaded, batch: int, length: int) -> FastSlotDecoder:
    """The slot decoder for `loaded` with its FastConfig (the workload runner keeps it)."""
    config = fast_config(loaded)
    return FastSlotDecoder(loaded, fast_weights(loaded, config), config, batch, length)
