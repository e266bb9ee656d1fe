"""Many prompts through one model: the runner every many-prompt workload uses.

`run_workload(loaded, prompts, config, batch_size=, decode_mode=)` returns one `GenerationRecord`
per prompt, in the prompts' order, each with its own time to first token, per-token times, stop
reason and (optionally) log-probabilities, and the batch size and mode it ran with.

How rows share a batch: continuous batching. Every row ends on its own (eos, a stop string, its
own token budget); its slot then takes the next waiting prompt (slots.py), prefilled beside the
rows still decoding, so a finished row stops costing steps within a few steps. The other way,
grouping prompts whose answers end together, needs the answers' lengths before they exist.
Measured on HumanEval's 164 prompts with each row ending at its canonical solution's length (the
benchmark's workload, studies/workload_bench.py; decode steps counted from those lengths):

    batch size                                   16     32     48     64
    fixed batches, every row to the longest    1749   1069    838    655
    refilled slots, longest prompt first         740    410    310    299
    refilled slots, shortest prompt first        835    544    451    404
    grouped by the real answer lengths           683    344    299    299   (known to no real run)

The longest answer alone takes 300 steps. Waiting prompts are taken longest first: a prompt's
length and its answer's go together (correlation 0.47 on HumanEval), so long answers start early
and the tail, where few rows are left, is short; and neighbours in that order have similar
lengths, so a prefill pass pads little. A refill waits until `refill_min` slots are free
(default: an eighth of the batch), because each prefill pass pays a whole forward's launches.
On the H200 with the 34B shapes, the batch API that runs rows to the longest gave 270-286 useful
tokens/s with marlin's graph (issue 19); this runner gave 290 with exllamav2, static since its graph
is refused, 19.8x one prompt at a time (results/README.md).

Decode modes: "graph" and "static" run the slot loop (graph replays each step as a CUDA graph
after its first-replay check; a kernel that fails the check runs static and the record says so);
"fast" runs the same loop on the workbench's own step (fast_slots.py, its FastConfig from
`set_fast_config`); "eager" runs transformers' `generate` on batches of up to `batch_size` prompts
that share a config, each batch as long as its longest row; "auto" picks by device (modes.py) and
never picks "fast".

`dense_prefill_rows` (WorkloadConfig): prefill passes of at least that many rows dequantize each
weight once and run a dense GEMM (fast.DensePrefill), ExLlamaV2's switch, while the decode steps
keep the loaded kernel. On the H200 with marlin and the workload above it took the 164 prompts'
prefill from 8.0-8.2 s to 4.9-5.4 s and the best run from 590 to 733 useful tokens/s (batch 48),
for an 18 GB packed copy of the weights (results/README.md).

The fast step (decode_mode="fast") is where the runner is quickest. Measured there, 164 prompts,
marlin, batch 48, FastConfig(fuse=True, compile=True, attention="filled", dense_prefill_rows=32)
and what was added to it (results/README.md, sessions three to five):

                                                   each timed run made its     warm-up on the timed
                                                   decoder anew (until now)    run's decoder (calls 3-4)
    as above                                       966-978 tokens/s            not run
    + narrow_to=16 (the tail at 32, then 16 rows)  not run                     1111-1123 (9.6-9.7 s)
    + dense_keep (the prefill's fp16 weights)      934-1047                    1103-1127 (9.6-9.8 s)
    + both                                         1046-1067                   1140-1167 (9.3-9.5 s)

Until the fifth session's third call the benchmark's warm-up workload had another cache length
than the timed one, so each timed run made its decoder again (the cache, the graph's capture and
check, the tail's widths) inside its time; `cache_length` now lets both share one decoder. Of
~9.3 s, 4.0 s are the 22 prefill passes (31,102 prompt tokens). The tail: the longest answer
alone takes 300 steps, and once no prompt waits (110 of the ~311 steps at batch 48) a step over
all 48 rows costs 18-19 ms however few are left; narrowed, the last ~80 run over 16 rows
(marlin's GEMM takes rows 16 at a time). At batch 64 narrowing matters more (1013-1019 without,
1146-1154 with, call 3). narrow_to=4 gave 971-995 in a call where its four widths were still made
inside each timed run (0.9-1.2 s of it); not measured since. Made inside the workload, the
narrower steps cost more than they save: five widths compiled and captured there made the run
30.7 s instead of 11.1 (third session), so FastSlotDecoder.prepare_tail makes them before the
clock starts. The combo kernels with the cache writes in the rotary kernel, which gain 0.2 ms at
batch 1, make the batch-48 step 26.8 ms instead of 18.7: not for the runner. The refill threshold
hardly matters: 16 free slots instead of 6 halved the prefill passes (22 to 11) and gave 971-975
tokens/s against 966-978 (fourth session).

`cache_length` (WorkloadConfig): the slot cache's length, by default the longest prompt plus the
largest budget. Workloads of one batch size, mode and length share one decoder, its graphs and
compiled pieces; one of another length makes, compiles and captures a new one
(`slot_cache_length` tells a caller the length a list of prompts needs).
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..environment import collect_env
from ..errors import BatchMemoryError, ConfigError, PromptError
from ..measure import Clock, memory_snapshot
from ..model.attention import attention_in_use
from ..model.exllamav2_engine import is_runner
from ..prompts.encoding import check_context, encode_prompt
from ..prompts.formats import render_prompt
from .config import DecodeConfig
from .fast import dense_prefill_for
from .generate import context_tokens, generate_ids
from .inputs import input_device, left_pad
from .modes import AUTO, resolve_mode
from .record import GenerationRecord, TopToken
from .sampling import RowChooser
from .slots import slot_bytes_per_row, slot_decoder_for
from .static import _activation_dtype, cache_length, release_decoder
from .stopping import StopStrings, answer_end

SLOT_MODES = ("graph", "static", "fast")  # the modes the slot loop runs; "eager": transformers' generate on batches
WORKLOAD_MODES = (AUTO, *SLOT_MODES, "eager")


@dataclass(frozen=True)
class WorkItem:
    """One prompt of a workload, with what may differ from the workload's DecodeConfig."""

    prompt: object  # a string (the human turn; with format="raw" the whole prompt) or a message list
    max_new_tokens: int | None = None  # this row's own budget; None: the config's
    min_new_tokens: int | None = None  # eos is banned below this many new tokens; None: the config's
    seed: int | None = None  # this row's sampling seed; None: the config's seed plus the item's index

    def __post_init__(self):
        for name in ("max_new_tokens", "min_new_tokens", "seed"):
            value = getattr(self, name)
            low = 1 if name == "max_new_tokens" else 0
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"WorkItem.{name}={value!r} is invalid: allowed None or an integer >= {low}")


@dataclass(frozen=True)
class WorkloadConfig:
    """How a workload runs (how tokens are chosen is the DecodeConfig's business)."""

    batch_size: int = 16  # rows decoded together; each row's slot is refilled when it ends
    decode_mode: str = "auto"  # "auto" | "graph" | "static" | "eager" (modes.py)
    logprobs: bool = False  # keep each token's log-probability (and top_logprobs alternatives)
    top_logprobs: int = 0  # alternatives kept per token when logprobs is on
    refill_min: int | None = None  # free slots that start a refill; None: max(1, batch_size // 8)
    prefill_tokens: int = 8192  # padded prompt tokens per prefill pass, at most (bounds its memory)
    max_context: int | None = None  # prompt plus budget must fit this; None: the model's (generate.context_tokens)
    progress: bool = True  # a tqdm bar: prompts done, tokens/s, time left
    dense_prefill_rows: int = 0  # prefill passes of at least this many rows (prompts x padded length) dequantize
    # each weight once and run cuBLAS (fast.DensePrefill; costs a packed copy of the weights); 0 = off
    cache_length: int | None = None  # the slot cache's length; None: the longest prompt plus the largest budget,
    # rounded up. Workloads of one batch size, mode and cache length share one decoder (its graphs, compiles)

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"WorkloadConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        def positive_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        if not positive_int(self.batch_size):
            bad("batch_size", "an integer >= 1")
        if self.decode_mode not in WORKLOAD_MODES:
            bad("decode_mode", f"one of {', '.join(WORKLOAD_MODES)}")
        if not isinstance(self.logprobs, bool):
            bad("logprobs", "True or False")
        if isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int) or self.top_logprobs < 0:
            bad("top_logprobs", "an integer >= 0")
        if self.refill_min is not None and not (positive_int(self.refill_min) and self.refill_min <= self.batch_size):
            bad("refill_min", f"None or an integer in [1, batch_size={self.batch_size}]")
        if not positive_int(self.prefill_tokens):
            bad("prefill_tokens", "an integer >= 1")
        if self.max_context is not None and not positive_int(self.max_context):
            bad("max_context", "None or an integer >= 1")
        if not isinstance(self.progress, bool):
            bad("progress", "True or False")
        if isinstance(self.dense_prefill_rows, bool) or not isinstance(self.dense_prefill_rows, int) \
                or self.dense_prefill_rows < 0:
            bad("dense_prefill_rows", "an integer >= 0 (0 = off)")
        if self.cache_length is not None and not positive_int(self.cache_length):
            bad("cache_length", "None or an integer >= 1")

    @property
    def refill_at(self) -> int:
        return self.refill_min or max(1, self.batch_size // 8)


@dataclass
class _Work:
    """One prompt, encoded, with the settings its row runs under."""

    index: int
    ids: list[int]
    text: str
    config: DecodeConfig  # the workload's, with this row's budget, eos ban and seed


@dataclass
class _Row:
    """A prompt while it decodes in a slot."""

    work: _Work
    admit_mark: int
    prefill_mark: int
    tokens: list[int] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[TopToken]] = field(default_factory=list)
    dense_prefill: bool = False  # its prefill pass ran dequantize + cuBLAS (fast.DensePrefill)


def run_workload(loaded, prompts: Sequence, config: DecodeConfig | None = None,
                 workload: WorkloadConfig | None = None, *, format: str = "codefuse",
                 on_record: Callable[[int, GenerationRecord], None] | None = None,
                 **workload_fields) -> list[GenerationRecord]:
    """Generate an answer for every prompt; one record per prompt, in the prompts' order.

    `prompts`: strings, message lists or `WorkItem`s (for a row's own budget or seed).
    `workload`: a WorkloadConfig, or its fields as keywords (`batch_size=32, decode_mode="graph"`).
    `on_record(index, record)` is called as each prompt finishes, so a caller can save it at
    once. A batch that does not fit in GPU memory raises BatchMemoryError, which names a batch
    size that would fit and holds the records finished before it.
    """
    config = config if config is not None else DecodeConfig.greedy()
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    if workload is not None and workload_fields:
        raise ConfigError(f"give a WorkloadConfig or its fields, not both (got {sorted(workload_fields)})")
    workload = workload or WorkloadConfig(**workload_fields)
    work = _encode(loaded.tokenizer, prompts, config, format, context_tokens(loaded, workload.max_context))
    mode, why = resolve_mode(workload.decode_mode, input_device(loaded.model), config, workload=True,
                             model=loaded.model)
    if mode != "eager" and config.num_beams > 1:
        raise ConfigError(f"num_beams={config.num_beams}: beam search runs only with decode_mode='eager'")
    if mode == "eager" and workload.cache_length:
        raise ConfigError(f"cache_length={workload.cache_length} sizes the slot loop's cache; decode_mode="
                          f"{workload.decode_mode!r} runs eager here ({why or 'asked for'}), whose cache is "
                          "transformers': use 'static', 'graph' or 'fast', or cache_length=None")
    if mode == "eager" and workload.dense_prefill_rows:
        raise ConfigError(f"dense_prefill_rows={workload.dense_prefill_rows} works on the slot loop's prefill; "
                          f"decode_mode={workload.decode_mode!r} runs eager here ({why or 'asked for'}): use "
                          "'static' or 'graph', or dense_prefill_rows=0")
    if mode == "fast" and workload.dense_prefill_rows:
        raise ConfigError(f"dense_prefill_rows={workload.dense_prefill_rows} patches the loaded kernel's layers; "
                          "decode_mode='fast' has its own switch: FastConfig(dense_prefill_rows=...) "
                          "(generation.set_fast_config)")
    if mode != "eager" and is_runner(loaded.model):
        raise ConfigError(f"decode_mode={mode!r}: kernel 'exllamav2-engine' decodes with ExLlamaV2's own loop only; "
                          "use 'auto' or 'eager', which run that loop")
    records: list[GenerationRecord | None] = [None] * len(work)
    progress = _Progress(len(work), workload.progress, f"{mode} x{min(workload.batch_size, len(work))}")

    def emit(index: int, record: GenerationRecord) -> None:
        record.format = format
        record.decode_mode_requested = workload.decode_mode
        record.decode_note = "; ".join(n for n in (why, record.decode_note) if n)
        records[index] = record
        progress.update(record)
        if on_record is not None:
            on_record(index, record)

    try:
        if mode == "eager":
            _run_eager(loaded, work, workload, emit)
        else:
            _run_slots(loaded, work, workload, mode, emit, lambda: [r for r in records if r is not None])
    finally:
        progress.close()
    return records


# --- prompts in -------------------------------------------------------------------------------

def _encode(tok, prompts: Sequence, config: DecodeConfig, format: str, max_context: int) -> list[_Work]:
    if isinstance(prompts, (str, WorkItem)) or not isinstance(prompts, Sequence) or not prompts:
        raise ConfigError("prompts must be a non-empty list of strings, message lists or WorkItems")
    work = []
    for i, p in enumerate(prompts):
        item = p if isinstance(p, WorkItem) else WorkItem(prompt=p)
        messages = [{"role": "human", "content": item.prompt}] if isinstance(item.prompt, str) else list(item.prompt)
        budget = item.max_new_tokens or config.max_new_tokens
        min_new = config.min_new_tokens if item.min_new_tokens is None else item.min_new_tokens
        if min_new > budget:
            raise ConfigError(f"prompt {i}: min_new_tokens={min_new} is above its max_new_tokens={budget}")
        seed = item.seed if item.seed is not None else None if config.seed is None else config.seed + i
        try:
            ids = encode_prompt(tok, messages, format=format, max_context=None)
            check_context(len(ids), budget, max_context)
        except PromptError as e:
            raise PromptError(f"prompt {i}: {e}") from None
        if format == "raw":
            text = item.prompt if isinstance(item.prompt, str) else "".join(m["content"] for m in messages)
        else:
            text = render_prompt(messages, format=format)
        row_config = config.replace(max_new_tokens=budget, min_new_tokens=min_new, seed=seed)
        work.append(_Work(index=i, ids=ids, text=text, config=row_config))
    return work


def slot_cache_length(loaded, prompts: Sequence, config: DecodeConfig | None = None, *, format: str = "codefuse",
                      max_context: int | None = None) -> int:
    """The slot cache's length `run_workload` gives these prompts by default: a caller that runs
    several workloads on one decoder (a warm-up before a timed run, a grid) passes the largest as
    WorkloadConfig.cache_length."""
    config = config if config is not None else DecodeConfig.greedy()
    return _cache_length(_encode(loaded.tokenizer, prompts, config, format, context_tokens(loaded, max_context)))


def _cache_length(work: list[_Work]) -> int:
    return cache_length(max(len(w.ids) for w in work), max(w.config.max_new_tokens for w in work))


# --- the slot loop: continuous batching ---------------------------------------------------------

def _run_slots(loaded, work: list[_Work], workload: WorkloadConfig, mode: str, emit, finished) -> None:
    import torch

    model = loaded.model
    batch = min(workload.batch_size, len(work))
    length = _cache_length(work)
    if workload.cache_length is not None:
        if workload.cache_length < length:
            raise ConfigError(f"cache_length={workload.cache_length} is below what this workload needs: {length} "
                              "(its longest prompt plus its largest budget, rounded up)")
        length = workload.cache_length
    base = work[0].config
    # the packed copy first, outside the batch's memory check: it does not depend on the batch size
    dense = dense_prefill_for(loaded, workload.dense_prefill_rows) if workload.dense_prefill_rows else None
    try:
        decoder = slot_decoder_for(loaded, batch, length, mode)
        with torch.inference_mode():  # the tail's steps are prepared (compiled, captured) in the loop's making
            _SlotLoop(loaded, decoder, work, workload, base, emit, dense).run()
    except torch.cuda.OutOfMemoryError:
        release_decoder(loaded)
        fits = _batch_that_fits(model, length, batch, workload.prefill_tokens)
        done = finished()
        raise BatchMemoryError(
            f"batch_size={batch} does not fit in GPU memory (a {length}-token cache per row); "
            f"batch_size={fits} would fit. {len(done)} of {len(work)} prompts had finished and were kept.",
            batch_size=batch, fits=fits, finished=done) from None


class _SlotLoop:
    """The continuous-batching loop over one SlotDecoder: refill, step, choose, finish."""

    def __init__(self, loaded, decoder, work: list[_Work], workload: WorkloadConfig, base: DecodeConfig, emit,
                 dense=None):
        import torch

        self.loaded, self.decoder, self.work, self.workload, self.emit = loaded, decoder, work, workload, emit
        self.dense = dense  # fast.DensePrefill, or None
        decoder.reset()
        # the tail's narrower steps made (compiled, captured) before the workload's clock starts
        self.tail_s = decoder.prepare_tail() if hasattr(decoder, "prepare_tail") else 0.0
        self.tok = loaded.tokenizer
        self.device = decoder.device
        self.batch = decoder.batch
        self.clock = Clock(self.device)
        self.clock.mark()  # index 0: the workload's start
        self.chooser = RowChooser(base, self.tok, self.batch, decoder.length, self.device)
        self.stops = StopStrings(self.tok, base.stop)
        self.rows: list[_Row | None] = [None] * self.batch
        self.last = torch.zeros(self.batch, dtype=torch.long, device=self.device)  # [B] each row's newest token
        self.pending = deque(sorted(work, key=lambda w: (-len(w.ids), w.index)))  # longest first (module docstring)
        self.context = _Context(loaded, self.device)
        self.width, self.stepper = self.batch, decoder  # the rows a step runs over, and its step (narrow)

    def run(self) -> None:
        import torch

        self.refill()
        while any(r is not None for r in self.rows):
            if not self.pending:
                self.narrow()
            logits = self.stepper.step(self.last[: self.width])  # [W, V]
            live = [r for r in range(self.width) if self.rows[r] is not None]
            index = torch.tensor(live, dtype=torch.long, device=self.device)
            self.take(live, index, logits[index])
            self.refill()

    def narrow(self) -> None:
        """Once no prompt waits, a decoder with tail widths (the fast step's, FastConfig.narrow_to) steps
        only as many rows as hold the ones still decoding: those move to the front, and the step over
        the first `width` rows (its own graph, captured before the workload) replays instead. A record's
        batch_index is then the row its prompt ended in."""
        import torch

        live = [r for r in range(self.width) if self.rows[r] is not None]
        width = self.decoder.width_for(len(live)) if hasattr(self.decoder, "width_for") else self.batch
        if width >= self.width:
            return
        self.decoder.compact(live)
        self.chooser.compact(live)
        self.last[: len(live)] = self.last[torch.tensor(live, dtype=torch.long, device=self.device)]
        self.rows = [self.rows[r] for r in live] + [None] * (self.batch - len(live))
        self.width, self.stepper = width, self.decoder.narrow(width)

    def refill(self) -> None:
        """Prefill waiting prompts into free slots: all at the start, later once enough are free."""
        free = [r for r in range(self.batch) if self.rows[r] is None]
        busy = len(free) < self.batch
        if not self.pending or not free or (busy and len(free) < min(self.workload.refill_at, len(self.pending))):
            return
        while free and self.pending:
            group = self._group(len(free))
            slots, free = free[: len(group)], free[len(group):]
            self.prefill(slots, group)
            free += [r for r in slots if self.rows[r] is None]  # rows that ended at their first token

    def _group(self, room: int) -> list[_Work]:
        """The next waiting prompts for one prefill pass: at most `room`, and at most
        `prefill_tokens` padded tokens (at least one prompt)."""
        group = [self.pending.popleft()]
        width = len(group[0].ids)  # the longest: prompts wait longest first
        while self.pending and len(group) < room and (len(group) + 1) * width <= self.workload.prefill_tokens:
            group.append(self.pending.popleft())
        return group

    def prefill(self, slots: list[int], group: list[_Work]) -> None:
        import torch

        admit = self.clock.mark()
        ids, mask = left_pad([w.ids for w in group], self.tok.pad_token_id)
        with self.dense.applied(ids.numel()) if self.dense else nullcontext(False) as dense:
            logits = self.decoder.prefill(slots, ids.to(self.device), mask.to(self.device))  # [k, V]
        done = self.clock.mark()
        for slot, w in zip(slots, group):
            self.chooser.admit(slot, w.ids, w.config.min_new_tokens, w.config.seed)
            self.rows[slot] = _Row(work=w, admit_mark=admit, prefill_mark=done, dense_prefill=dense)
        self.take(slots, torch.tensor(slots, dtype=torch.long, device=self.device), logits)

    def take(self, live: list[int], index, logits) -> None:
        """Choose the next token of each of `live` (its [n] index tensor, its [n, V] logits), then
        end the rows that are done."""
        import torch

        chosen = self.chooser.choose(index, logits)  # [n]
        self.last[index] = chosen
        lps = tops = None
        if self.workload.logprobs:
            table = torch.log_softmax(logits.float(), dim=-1)  # [n, V]
            lps = table.gather(1, chosen[:, None])[:, 0].tolist()
            if self.workload.top_logprobs:
                values, ids = torch.topk(table, self.workload.top_logprobs)
                tops = [[TopToken(id=i, piece=self.tok.convert_ids_to_tokens(i), logprob=v)
                         for v, i in zip(vs, is_)] for vs, is_ in zip(values.tolist(), ids.tolist())]
        mark = self.clock.mark()
        tokens = chosen.tolist()  # the step's one synchronization
        for n, (r, t) in enumerate(zip(live, tokens)):
            row = self.rows[r]
            row.tokens.append(t)
            row.marks.append(mark)
            if lps is not None:
                row.logprobs.append(lps[n])
                row.tops.append(tops[n] if tops else [])
            if self._ended(row):
                self.rows[r] = None
                self.decoder.finish(r)
                self.emit(row.work.index, self._record(row, r))

    def _ended(self, row: _Row) -> bool:
        cfg = row.work.config
        return row.tokens[-1] == self.tok.eos_token_id \
            or len(row.tokens) >= cfg.max_new_tokens or (bool(cfg.stop) and self.stops.hit(row.tokens))

    def _record(self, row: _Row, slot: int) -> GenerationRecord:
        w, cfg = row.work, row.work.config
        n, reason, text = answer_end(self.tok, row.tokens, cfg)
        admit, prefilled, *times = self.clock.seconds_of([row.admit_mark, row.prefill_mark] + row.marks[:n])
        times = [t - admit for t in times]
        return self.context.record(
            text=text, prompt_text=w.text, prompt_tokens=len(w.ids), token_ids=row.tokens[:n], new_tokens=n,
            token_times_s=times, ttft_s=times[0] if times else float("nan"), prefill_s=prefilled - admit,
            logprobs=row.logprobs[:n], top_logprobs=row.tops[:n], stop_reason=reason, config=cfg,
            batch_size=self.batch, batch_index=slot, decode_mode=self.decoder.mode, decode_note=self._note(row),
            queued_s=admit)

    def _note(self, row: _Row) -> str:
        note = self.stepper.note
        if self.width < self.batch:
            note += f"; its last steps ran {self.width} rows wide (no prompt waiting)"
        if self.tail_s:
            note += f"; tail widths {self.decoder.tail_widths()} prepared in {self.tail_s:.2f} s before the workload"
        if self.dense is None:
            return note
        how = "dequantize + cuBLAS" if row.dense_prefill else "the loaded kernel (a pass below that)"
        return f"{note}; dense prefill from {self.dense.min_rows} rows: this prompt's ran {how}"


class _Context:
    """What every record of one workload shares: kernel, attention, environment, model, memory at load."""

    def __init__(self, loaded, device):
        load_record = getattr(loaded, "load_record", None)
        self.load = load_record.to_dict() if hasattr(load_record, "to_dict") else (load_record or {})
        self.env = collect_env(device)
        self.env["checkpoint_hash"] = self.load.get("checkpoint_hash")
        self.device = device
        self.fixed = dict(kernel=getattr(loaded, "kernel", None),
                          kernel_requested=getattr(loaded, "kernel_requested", None),
                          attention=attention_in_use(loaded.model), model=str(getattr(loaded, "path", "")) or None,
                          checkpoint_hash=self.env["checkpoint_hash"])

    def record(self, **fields) -> GenerationRecord:
        memory = {"load": self.load.get("memory"), "generation": memory_snapshot(self.device).to_dict()}
        return GenerationRecord(format="", memory=memory, env=self.env, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                **self.fixed, **fields)


def _batch_that_fits(model, length: int, failed: int, prefill_tokens: int) -> int:
    """A batch size whose slot cache fits in the memory free now, with room for a prefill pass;
    below the one that failed."""
    import torch

    device = input_device(model)
    config = model.config
    dtype_bytes = torch.finfo(_activation_dtype(model)).bits // 8
    per_row = slot_bytes_per_row(config, length, dtype_bytes) + 16 * config.vocab_size  # the cache, logits buffers
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    intermediate = getattr(config, "intermediate_size", 4 * config.hidden_size)
    prefill = prefill_tokens * (3 * intermediate + 4 * config.hidden_size) * dtype_bytes
    fits = int((0.9 * free - prefill) // per_row)
    return max(1, min(fits, failed // 2 if fits >= failed else fits))


# --- the eager path: transformers' generate on batches ------------------------------------------

def _run_eager(loaded, work: list[_Work], workload: WorkloadConfig, emit) -> None:
    """Batches of up to batch_size prompts of the same row config, longest prompts first; each batch
    runs as long as its longest row (transformers' generate cannot refill a row), and rows whose
    budget or seed differ from their neighbours' run in batches of their own."""
    ordered = sorted(work, key=lambda w: (-len(w.ids), w.index))
    unpadded = is_runner(loaded.model)  # ExLlamaV2's engine takes batches of one prompt length only
    batches: list[list[_Work]] = []
    for w in ordered:
        if batches and len(batches[-1]) < workload.batch_size and batches[-1][0].config == w.config \
                and (not unpadded or len(batches[-1][0].ids) == len(w.ids)):
            batches[-1].append(w)
        else:
            batches.append([w])
    started = time.perf_counter()
    for group in batches:
        queued = time.perf_counter() - started
        records = generate_ids(loaded, [w.ids for w in group], group[0].config, logprobs=workload.logprobs,
                               top_logprobs=workload.top_logprobs, decode_mode="eager")
        for w, r in zip(group, records):
            r.prompt_text, r.queued_s = w.text, queued
            emit(w.index, r)


# --- progress -----------------------------------------------------------------------------------

class _Progress:
    """tqdm.auto's bar (a widget in JupyterLab, text in a terminal): prompts done, tokens/s, time left."""

    def __init__(self, total: int, enabled: bool, label: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="prompt", desc=label, dynamic_ncols=True)
        self.tokens, self.started = 0, time.perf_counter()

    def update(self, record: GenerationRecord) -> None:
        self.tokens += record.new_tokens
        if self.bar is not None:
            elapsed = time.perf_counter() - self.started
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tokens/s" if elapsed > 0 else "", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

