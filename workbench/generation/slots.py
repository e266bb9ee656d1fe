"""A static KV cache whose rows are slots: a finished row takes the next prompt while the others go on.

static.py's cache has one write position for the whole batch, so every row lives as long as
the longest. Here each row has its own (`SlotCache.slot`): a new prompt is prefilled into one
row's slot, from position 0, and decoded from there, beside rows that started long before.
Each row's attention mask ([B, 1, 1, L]) lets it see its own prompt and tokens only.

The decode step is still one fixed set of kernels on fixed buffers (token, rotary position,
write position, mask and which rows are active are all in-place buffers), so `SlotDecoder`
keeps StaticDecoder's forward pass and graphstep.CapturedStep's step, capture and first-replay
check unchanged.
"""

from __future__ import annotations

from ..errors import ConfigError
from .fast_slots import fast_slot_decoder
from .inputs import prefill_mask
from .static import StaticDecoder, grouped_attention, release_decoder


class SlotCache:
    """Keys and values [B, KV, L, D] per layer, each row written at its own position.

    Duck-typed as a transformers Cache: given a 4D mask and positions, a Llama forward calls only
    `update` (and `get_seq_length` when no positions are given). In a prefill
    (`prefill_rows` set) the new rows' prompts are written from position 0 and attend to
    themselves only; in a decode step each row writes its one token at `slot[row]`.
    """

    is_compileable = False

    def __init__(self, config, batch: int, length: int, dtype, device):
        import torch

        kv_heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.slot = torch.zeros(batch, dtype=torch.long, device=device)  # [B] where each row's next token goes
        self._index = self.slot.view(batch, 1, 1, 1).expand(batch, kv_heads, 1, head_dim)  # a view: follows slot
        self.prefill_rows = None  # [k] rows a prefill writes; None during a decode step

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.prefill_rows is not None:  # [k, KV, T, D]: the rows' prompts, nothing before them
            t = key_states.shape[2]
            keys[self.prefill_rows, :, :t] = key_states
            values[self.prefill_rows, :, :t] = value_states
            return key_states, value_states
        keys.scatter_(2, self._index, key_states)  # [B, KV, 1, D] at each row's slot
        values.scatter_(2, self._index, value_states)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given; nothing should ask

    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def slot_bytes_per_row(model_config, length: int, dtype_bytes: int) -> int:
    """Bytes one row of a SlotCache of `length` positions takes (keys and values, all layers)."""
    kv_heads = model_config.num_key_value_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    return 2 * model_config.num_hidden_layers * kv_heads * head_dim * length * dtype_bytes


class SlotDecoder(StaticDecoder):
    """A batch of `batch` slots over a cache of `length` positions, graph-captured in "graph" mode.

    `prefill(rows, ids, mask)` starts new prompts in some rows; `step(tokens)` (StaticDecoder's)
    feeds one token per row and returns [B, V] logits; `finish(row)` stops a row from advancing
    until it is refilled. Every row advances only while it is active, so an idle row keeps
    writing to one position and never runs past the cache.
    """

    def __init__(self, model, batch: int, length: int, graph: bool):
        import torch

        super().__init__(model, batch, length, graph)  # its buffers, with the cache of _new_cache
        self.active = torch.zeros(batch, dtype=torch.long, device=self.device)  # [B] 1 while a row decodes
        # [B, V] now: a step may come before any prefill has sized it (StaticDecoder's comes with its prefill)
        self.logits = torch.zeros((batch, model.config.vocab_size), dtype=torch.float32, device=self.device)

    def _new_cache(self):
        # not StaticDecoder's StaticCache, which has one write position; cpos is still passed, and ignored
        return SlotCache(self.model.config, self.batch, self.length, self.dtype, self.device)

    def _state(self):
        return [self.pos, self.cache.slot, self.mask]

    def _step_body(self):
        """One decode step on buffers only (what the graph holds)."""
        b = self.batch
        self.mask.view(b, self.length).scatter_(1, self.cache.slot.view(b, 1), 0.0)  # each new token sees itself
        self.logits.copy_(self._forward(self.ids, self.pos, self.mask, self.cpos))
        self.pos.add_(self.active.view(b, 1))
        self.cache.slot.add_(self.active)

    def prefill(self, rows: list[int], input_ids, attention_mask):
        """Start prompts in `rows`: a left-padded [k, T] batch and its 0/1 mask. Returns [k, V]
        float32 logits of each prompt's last position; the rows decode from the next step on."""
        import torch

        k, t = input_ids.shape
        if k != len(rows) or t >= self.length:
            raise ConfigError(f"{k} prompts of {t} tokens do not fit {len(rows)} rows of a {self.length}-token cache")
        d = self.device
        valid = attention_mask.bool()  # [k, T]
        mask, pos = prefill_mask(attention_mask, t, self.dtype)  # [k, 1, T, T], [k, T]
        index = torch.tensor(rows, dtype=torch.long, device=d)
        self.cache.prefill_rows = index
        try:
            with torch.inference_mode(), grouped_attention(self.model):
                logits = self._forward(input_ids, pos, mask, torch.arange(t, device=d)).float()  # [k, V]
        finally:
            self.cache.prefill_rows = None
        row_mask = torch.full((k, self.length), self.min, dtype=self.dtype, device=d)
        row_mask[:, :t].masked_fill_(valid, 0.0)
        self.mask[index, 0, 0] = row_mask
        self.pos[index, 0] = valid.long().sum(-1)
        self.cache.slot[index] = t
        self.active[index] = 1
        return logits

    def reset(self) -> None:
        """Every row idle, at position 0 (a decoder kept from an earlier workload starts clean)."""
        self.active.zero_()
        self.cache.slot.zero_()
        self.pos.zero_()
        self.mask.fill_(self.min)

    def finish(self, row: int) -> None:
        """`row` is done: it stops advancing (its slot stays where it is) until it is refilled."""
        self.active[row] = 0


def slot_decoder_for(loaded, batch: int, length: int, mode: str):
    """The loaded model's slot decoder for this shape and mode, made on first use and kept on
    `loaded.decoder` (one decoder at a time, as static.py's `decoder_for` keeps it): a SlotDecoder
    for "static" and "graph", the fast step's FastSlotDecoder (fast_slots.py) for "fast"."""
    key = ("slots", batch, length, mode)
    current = getattr(loaded, "decoder", None)
    if current is not None and current[0] == key:
        return current[1]
    release_decoder(loaded)  # before the new cache is allocated
    _free_cached_memory(loaded.model)
    if mode == "fast":
        decoder = fast_slot_decoder(loaded, batch, length)
    else:
        decoder = SlotDecoder(loaded.model, batch, length, graph=mode == "graph")
    loaded.decoder = (key, decoder)
    return decoder


def _free_cached_memory(model) -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and model.get_input_embeddings().weight.device.type == "cuda":
        torch.cuda.empty_cache()
