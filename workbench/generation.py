"""Instrumented generation: one call, one `GenerationRecord` per sequence.

`generate` runs transformers' own `model.generate` and watches it: a forward hook marks when
each step's logits are computed and a stopping-criteria hook marks when each token exists. The
marks are CUDA events (read once, at the end) or `perf_counter` readings on the CPU, so the
measurement adds no host-device synchronization to the loop it measures. Log-probabilities
come from the raw logits of each step (the model's distribution, before temperature, top-p or
repetition penalty).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .cache import atomic_write_json
from .errors import ConfigError
from .measure import Clock, Latency, memory_snapshot, reset_peak_memory

STOP_REASONS = ("eos", "max_new_tokens", "stop_string")


@dataclass(frozen=True)
class DecodeConfig:
    """How tokens are chosen. Defaults are greedy; `card()` is the model card's quick-start."""

    do_sample: bool = False  # False = greedy (or beam search with num_beams > 1)
    temperature: float = 1.0  # < 1.0 sharpens the distribution, > 1.0 flattens it; sampling only
    top_p: float = 1.0  # nucleus: sample from the smallest set holding this much probability
    top_k: int = 0  # sample from the k likeliest tokens; 0 = no limit
    repetition_penalty: float = 1.0  # > 1.0 discourages tokens already in the sequence
    num_beams: int = 1
    max_new_tokens: int = 512
    min_new_tokens: int = 0  # eos is suppressed until this many tokens exist
    seed: int | None = None  # seeds torch before generating, so sampled runs repeat exactly
    stop: tuple[str, ...] = ()  # generation ends once the new text contains one of these

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"DecodeConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        if not isinstance(self.do_sample, bool):
            bad("do_sample", "True or False")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            bad("temperature", "a number > 0")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            bad("top_p", "a number in (0, 1]")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            bad("top_k", "an integer >= 0 (0 = off)")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            bad("repetition_penalty", "a number > 0 (1.0 = off)")
        if not (isinstance(self.num_beams, int) and self.num_beams >= 1):
            bad("num_beams", "an integer >= 1")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            bad("max_new_tokens", "an integer >= 1")
        if not (isinstance(self.min_new_tokens, int) and 0 <= self.min_new_tokens <= self.max_new_tokens):
            bad("min_new_tokens", f"an integer in [0, max_new_tokens={self.max_new_tokens}]")
        if self.seed is not None and not (isinstance(self.seed, int) and self.seed >= 0):
            bad("seed", "None or an integer >= 0")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "a sequence of non-empty strings")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def greedy(cls, **overrides) -> "DecodeConfig":
        """Greedy decoding, as codefuse-ai evaluated HumanEval (at most 512 new tokens)."""
        return cls(**{"do_sample": False, "max_new_tokens": 512, **overrides})

    @classmethod
    def card(cls, **overrides) -> "DecodeConfig":
        """The model card's quick-start settings."""
        return cls(**{"do_sample": True, "top_p": 0.95, "temperature": 0.1, "max_new_tokens": 512, **overrides})

    def replace(self, **changes) -> "DecodeConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown DecodeConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**d, "stop": tuple(d.get("stop", ()))})

    def generation_config(self, tokenizer):
        """The transformers GenerationConfig that means the same thing."""
        from transformers import GenerationConfig

        kwargs = dict(
            do_sample=self.do_sample, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens, repetition_penalty=self.repetition_penalty,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:  # transformers warns when sampling knobs are set for greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.stop:
            kwargs["stop_strings"] = list(self.stop)
        return GenerationConfig(**kwargs)


@dataclass(frozen=True)
class TopToken:
    """One of the likeliest alternatives at a step."""

    id: int
    piece: str
    logprob: float


@dataclass
class GenerationRecord:
    """Everything measured about one generated sequence, with the context to trust it later."""

    text: str  # the new text, without the prompt, cut before a stop string
    prompt_text: str
    prompt_tokens: int
    token_ids: list[int]  # new tokens, the final eos included when there is one
    new_tokens: int
    token_times_s: list[float]  # when each new token existed, from the start of generation
    ttft_s: float  # time to first token (= token_times_s[0]): prefill plus the first choice
    prefill_s: float  # start to the end of the first forward pass
    itl: Latency | None  # inter-token latencies (the gaps between token_times_s)
    decode_tokens_per_s: float | None  # tokens after the first over the time they took
    logprobs: list[float]  # log-probability of each new token under the model
    top_logprobs: list[list[TopToken]]
    stop_reason: str
    kernel: str | None
    kernel_requested: str | None
    config: DecodeConfig
    format: str
    batch_size: int = 1
    batch_index: int = 0
    warmup_runs: int = 0
    decode_mode: str = "eager"  # what ran: eager (transformers' generate), static or graph (decode.py)
    decode_mode_requested: str = "eager"
    decode_note: str = ""  # why decode_mode differs from the request, what the graph cost
    attention: str = ""  # the attention that ran (workbench.attention.attention_in_use); "" in older records
    memory: dict = field(default_factory=dict)  # {"load": {...}, "generation": {...}} in GB
    env: dict = field(default_factory=dict)
    model: str | None = None
    checkpoint_hash: str | None = None
    created: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        d["itl"] = self.itl.to_dict() if self.itl else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationRecord":
        d = dict(d)
        d["config"] = DecodeConfig.from_dict(d["config"])
        d["itl"] = Latency(**d["itl"]) if d.get("itl") else None
        d["top_logprobs"] = [[TopToken(**t) for t in step] for step in d.get("top_logprobs", [])]
        return cls(**d)

    def save(self, path) -> Path:
        """Write this record as JSON, atomically."""
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path) -> "GenerationRecord":
        return cls.from_dict(json.loads(Path(path).read_text()))


def save_records(path, records: Sequence[GenerationRecord]) -> Path:
    atomic_write_json(Path(path), [r.to_dict() for r in records])
    return Path(path)


def load_records(path) -> list[GenerationRecord]:
    return [GenerationRecord.from_dict(d) for d in json.loads(Path(path).read_text())]


def records_frame(records: Sequence[GenerationRecord]):
    """One row per record with its scalar measurements and settings: for tables and plots."""
    import pandas as pd

    rows = []
    for r in records:
        row = {
            "kernel": r.kernel, "format": r.format, "batch_size": r.batch_size, "batch_index": r.batch_index,
            "prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens, "ttft_s": r.ttft_s,
            "prefill_s": r.prefill_s, "decode_tokens_per_s": r.decode_tokens_per_s,
            "stop_reason": r.stop_reason, "decode_mode": r.decode_mode, "attention": r.attention,
            "mean_logprob": sum(r.logprobs) / len(r.logprobs) if r.logprobs else None,
            "device": r.env.get("device_name"),
        }
        if r.itl:
            row.update({f"itl_{k}": v for k, v in r.itl.to_dict().items() if k != "n"})
        row.update({f"cfg_{k}": v for k, v in r.config.to_dict().items() if k != "stop"})
        gen_mem = r.memory.get("generation", {})
        row["peak_allocated_gb"] = gen_mem.get("peak_allocated_gb")
        row["peak_rss_gb"] = gen_mem.get("peak_rss_gb")
        rows.append(row)
    return pd.DataFrame(rows)


# --- generation -----------------------------------------------------------------------------

PromptLike = "str | list[dict]"


def _is_batch(prompt) -> bool:
    if isinstance(prompt, str):
        return False
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        return False  # one conversation
    if isinstance(prompt, (list, tuple)) and prompt:
        return True
    raise ConfigError(f"prompt must be a string, a message list or a non-empty list of those; got {prompt!r}")


def _as_messages(prompt) -> list[dict]:
    return [{"role": "human", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def generate(loaded, prompt, config: DecodeConfig | None = None, format: str = "codefuse",
             on_token: Callable[[int, str], None] | None = None, *, warmup: int = 0,
             logprobs: bool = True, top_logprobs: int = 5, max_context: int = 4096,
             decode_mode: str = "eager"):
    """Generate from `prompt` and measure it.

    `prompt` is a string (the human turn; with format="raw" it is used as it is), a message list,
    or a list of those, which runs as one left-padded batch and returns one record per prompt.
    `on_token(token_id, text)` streams new text (batch size 1 only); without it nothing is
    decoded during generation. `warmup` untimed runs of a few tokens come first, and the record
    says how many there were. `decode_mode`: "eager" (transformers' generate), "static" (a static
    KV cache) or "graph" (static, each step replayed as a CUDA graph); see decode.py. The record
    says which mode ran and why, if it differs.
    """
    from .prompts import encode_prompt

    config = config or DecodeConfig.greedy()
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ConfigError(f"warmup={warmup!r} is invalid: allowed an integer >= 0")
    batch = _is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    if on_token is not None and (len(prompts) > 1 or config.num_beams > 1):
        raise ConfigError("on_token streams one sequence: use it with a single prompt and num_beams=1")
    tok = loaded.tokenizer
    encoded = [encode_prompt(tok, _as_messages(p), format=format, max_context=max_context) for p in prompts]
    if format == "raw":
        texts = [p if isinstance(p, str) else "".join(m["content"] for m in p) for p in prompts]
    else:
        from .prompts import render_prompt

        texts = [render_prompt(_as_messages(p), format=format) for p in prompts]
    records = generate_ids(loaded, encoded, config, on_token, warmup=warmup, logprobs=logprobs,
                           top_logprobs=top_logprobs, decode_mode=decode_mode)
    for r, text in zip(records, texts):
        r.prompt_text = text
        r.format = format
    return records if batch else records[0]


def generate_ids(loaded, prompts_ids: list[list[int]], config: DecodeConfig | None = None,
                 on_token: Callable[[int, str], None] | None = None, *, warmup: int = 0,
                 logprobs: bool = True, top_logprobs: int = 5, decode_mode: str = "eager") -> list[GenerationRecord]:
    """`generate` for prompts already encoded (lists of token ids): one record per prompt."""
    from .decode import check_mode

    config = config or DecodeConfig.greedy()
    check_mode(decode_mode)
    if not prompts_ids or not all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts_ids):
        raise ConfigError("prompts_ids must be a non-empty list of non-empty lists of token ids")
    if on_token is not None and (len(prompts_ids) > 1 or config.num_beams > 1):
        raise ConfigError("on_token streams one sequence: use it with a single prompt and num_beams=1")
    for _ in range(warmup):  # a few tokens through the same path (and, static, the same cache and graph)
        _run(loaded, prompts_ids, config.replace(max_new_tokens=min(4, config.max_new_tokens), min_new_tokens=0),
             None, False, 0, decode_mode, cache_for=config.max_new_tokens)
    records = _run(loaded, prompts_ids, config, on_token, logprobs, top_logprobs, decode_mode)
    for r in records:
        r.warmup_runs = warmup
        r.format = "ids"
    return records


def input_device(model):
    """Where the model's inputs go: the embedding's device (the first of several with device_map)."""
    return model.get_input_embeddings().weight.device


def left_pad(ids: list[list[int]], pad_id: int):
    """[B, T] input ids and attention mask, padded on the left as the card's tokenizer does."""
    import torch

    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, seq in enumerate(ids):
        input_ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq):] = 1
    return input_ids, mask


class _StepMarks:
    """A stopping criterion that never stops: it only marks the moment each token exists."""

    def __init__(self, clock: Clock, batch: int, device):
        import torch

        self.clock, self.indices = clock, []
        self.never = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores, **kwargs):
        self.indices.append(self.clock.mark())
        if self.never.shape[0] != input_ids.shape[0]:  # beam search widens the batch
            import torch

            self.never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.never


class _Streamer:
    """transformers' streamer protocol, turning new token ids into text deltas for `on_token`."""

    def __init__(self, tokenizer, on_token):
        self.tok, self.on_token, self.ids, self.sent, self.prompt_seen = tokenizer, on_token, [], "", False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.ids.append(token_id)
            text = self.tok.decode(self.ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                delta = ""
            else:
                delta, self.sent = text[len(self.sent):], text
            self.on_token(token_id, delta)

    def end(self):
        pass


def _run(loaded, encoded: list[list[int]], config: DecodeConfig, on_token, want_logprobs: bool,
         top_k: int, decode_mode: str = "eager", cache_for: int | None = None) -> list[GenerationRecord]:
    import torch

    from .attention import attention_in_use
    from .environment import collect_env

    model, tok = loaded.model, loaded.tokenizer
    device = input_device(model)
    input_ids, mask = left_pad(encoded, tok.pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    beams = config.num_beams > 1
    if config.seed is not None:
        torch.manual_seed(config.seed)
    attention = attention_in_use(model)  # the static path swaps in grouped SDPA, which obeys the same switches
    clock = Clock(device)
    streamer = _Streamer(tok, on_token) if on_token else None
    reset_peak_memory(device)
    clock.mark()  # index 0: the start
    if decode_mode == "eager":
        sequences, logits, step_marks, prefill_mark = _run_transformers(
            model, tok, input_ids, mask, config, clock, streamer, want_logprobs and not beams)
        ran, note = "eager", ""
    else:
        from .decode import static_generate

        stop_check = _stop_check(tok, config) if config.stop else None
        result = static_generate(loaded, input_ids, mask, config, clock, decode_mode, streamer, stop_check,
                                 cache_new_tokens=cache_for, keep_logits=want_logprobs)
        sequences, step_marks, prefill_mark = result.sequences, result.token_marks, result.prefill_mark
        logits = result.logits if want_logprobs else None
        ran, note = result.mode, result.note
    seconds = clock.seconds()  # the one synchronization
    gen_memory = memory_snapshot(device).to_dict()
    load_record = getattr(loaded, "load_record", None)
    load_dict = load_record.to_dict() if hasattr(load_record, "to_dict") else (load_record or {})
    env = collect_env(device)
    env["checkpoint_hash"] = load_dict.get("checkpoint_hash")
    step_times = [seconds[i] for i in step_marks]
    prefill_s = seconds[prefill_mark] if prefill_mark is not None else float("nan")
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records = []
    for b, prompt_ids in enumerate(encoded):
        new_ids = sequences[b].tolist()
        n, reason, text = _finish(tok, new_ids, config)
        ids = new_ids[:n]
        times = step_times[:n]
        lps, tops = _logprobs(tok, logits, b, ids, top_k) if logits is not None else \
            _rescore(model, prompt_ids, ids, device, tok, top_k) if want_logprobs else ([], [])
        gaps = [t1 - t0 for t0, t1 in zip(times, times[1:])]
        records.append(GenerationRecord(
            text=text, prompt_text="", prompt_tokens=len(prompt_ids), token_ids=ids, new_tokens=n,
            token_times_s=times, ttft_s=times[0] if times else float("nan"), prefill_s=prefill_s,
            itl=Latency.from_values(gaps),
            decode_tokens_per_s=(len(gaps) / (times[-1] - times[0])) if len(times) > 1 and times[-1] > times[0] else None,
            logprobs=lps, top_logprobs=tops, stop_reason=reason,
            kernel=getattr(loaded, "kernel", None), kernel_requested=getattr(loaded, "kernel_requested", None),
            config=config, format="", batch_size=len(encoded), batch_index=b,
            decode_mode=ran, decode_mode_requested=decode_mode, decode_note=note, attention=attention,
            memory={"load": load_dict.get("memory"), "generation": gen_memory}, env=env,
            model=str(getattr(loaded, "path", "")) or None, checkpoint_hash=env["checkpoint_hash"],
            created=created,
        ))
    return records


def _run_transformers(model, tok, input_ids, mask, config: DecodeConfig, clock: Clock, streamer, want_logits: bool):
    """transformers' own generate, watched: a forward hook marks each step's logits and a
    stopping criterion marks each token. Returns ([B, N] new ids on the CPU, logits per step or
    None, the token marks, the prefill mark)."""
    import torch
    from transformers import StoppingCriteriaList

    forward_marks: list[int] = []
    steps = _StepMarks(clock, input_ids.shape[0], input_ids.device)
    hook = model.register_forward_hook(lambda *_: forward_marks.append(clock.mark()))
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=mask, generation_config=config.generation_config(tok),
                stopping_criteria=StoppingCriteriaList([steps]), return_dict_in_generate=True,
                output_logits=want_logits, tokenizer=tok if config.stop else None, streamer=streamer,
            )
    finally:
        hook.remove()
    sequences = out.sequences[:, input_ids.shape[1]:].cpu()  # [B, N]
    return sequences, out.logits if want_logits else None, steps.indices, forward_marks[0] if forward_marks else None


def _stop_check(tok, config: DecodeConfig):
    """For the static loop: True once every row's new text holds one of the stop strings."""
    def check(new_ids) -> bool:
        return all(any(s in tok.decode(row, skip_special_tokens=True) for s in config.stop) for row in new_ids.tolist())
    return check


def _finish(tok, new_ids: list[int], config: DecodeConfig) -> tuple[int, str, str]:
    """How many of the new tokens belong to the answer, why it stopped, and its text."""
    eos = tok.eos_token_id
    n = new_ids.index(eos) + 1 if eos in new_ids else len(new_ids)
    reason = "eos" if eos in new_ids[:n] else "max_new_tokens"
    if config.stop:
        # The first prefix whose text holds a stop string ends the answer (finished sequences
        # are padded afterwards, so the text of all tokens would run past it).
        for k in range(1, n + 1):
            text = tok.decode(new_ids[:k], skip_special_tokens=True)
            hits = [text.find(s) for s in config.stop if s in text]
            if hits:
                return k, "stop_string", text[: min(hits)]
    return n, reason, tok.decode(new_ids[:n], skip_special_tokens=True)


def _top(tok, logprobs_row, k: int) -> list[TopToken]:
    import torch

    values, ids = torch.topk(logprobs_row, k)
    return [TopToken(id=int(i), piece=tok.convert_ids_to_tokens(int(i)), logprob=float(v))
            for v, i in zip(values.tolist(), ids.tolist())]


def _logprobs(tok, logits, b: int, ids: list[int], top_k: int):
    import torch

    lps, tops = [], []
    for step, token_id in enumerate(ids):
        row = torch.log_softmax(logits[step][b].float(), dim=-1)
        lps.append(float(row[token_id]))
        tops.append(_top(tok, row, top_k) if top_k else [])
    return lps, tops


def _rescore(model, prompt_ids: list[int], ids: list[int], device, tok, top_k: int):
    """Beam search returns no per-step logits for the winning beam: score it in one forward pass."""
    import torch

    if not ids:
        return [], []
    full = torch.tensor([prompt_ids + ids], device=device)
    with torch.inference_mode():
        logits = model(input_ids=full).logits[0, len(prompt_ids) - 1: -1].float()  # [N, V]
    rows = torch.log_softmax(logits, dim=-1)
    return ([float(rows[i, t]) for i, t in enumerate(ids)],
            [_top(tok, rows[i], top_k) if top_k else [] for i in range(len(ids))])
