"""Instrumented generation: one call, one `GenerationRecord` per sequence.

`generate` renders and encodes the prompts, runs them through the eager path (eager.py) or the
static/graph loop (static.py), and turns what ran into records. Log-probabilities come from the
raw logits of each step (the model's distribution, before temperature, top-p or repetition
penalty).
"""

from __future__ import annotations

import time
from typing import Callable

from ..environment import collect_env
from ..errors import ConfigError
from ..measure import Clock, memory_snapshot, reset_peak_memory
from ..model.attention import attention_in_use
from ..model.exllamav2_engine import is_runner
from ..prompts.encoding import DEFAULT_CONTEXT_TOKENS, check_context, encode_prompt
from ..prompts.formats import render_prompt
from .config import DecodeConfig
from .eager import run_transformers
from .inputs import input_device, left_pad
from .modes import resolve_mode
from .record import GenerationRecord, TopToken
from .static import static_generate
from .stopping import answer_end as _finish
from .streaming import make_streamer

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


def context_tokens(loaded, max_context: int | None = None) -> int:
    """How many tokens (prompt plus new ones) a generation may hold.

    None: the card's input length, DEFAULT_CONTEXT_TOKENS (4096), or the model's
    max_position_embeddings where that is smaller. An explicit `max_context` may go up to the
    model's positions (CodeLlama's 16384), never past them."""
    positions = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    positions = positions if isinstance(positions, int) and positions > 0 else None
    if max_context is None:
        return min(DEFAULT_CONTEXT_TOKENS, positions or DEFAULT_CONTEXT_TOKENS)
    if not (_is_int(max_context) and max_context >= 1):
        raise ConfigError(f"max_context={max_context!r} is invalid: allowed None (the model's context) "
                          "or an integer >= 1")
    if positions is not None and max_context > positions:
        raise ConfigError(f"max_context={max_context} is past the model's {positions} positions "
                          "(config.json max_position_embeddings)")
    return max_context


def check_request(loaded, prompts_ids, config: DecodeConfig, *, warmup: int, logprobs: bool, top_logprobs: int,
                  context: int) -> None:
    """Every parameter of a generation, checked before any of it runs: a bad one is a ConfigError
    (PromptError for a request that does not fit the context) naming it, never a torch error."""
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    if not (_is_int(warmup) and warmup >= 0):
        raise ConfigError(f"warmup={warmup!r} is invalid: allowed an integer >= 0")
    if not isinstance(logprobs, bool):
        raise ConfigError(f"logprobs={logprobs!r} is invalid: allowed True or False")
    vocab = _vocab_size(loaded)
    if not (_is_int(top_logprobs) and 0 <= top_logprobs <= vocab):
        raise ConfigError(f"top_logprobs={top_logprobs!r} is invalid: allowed an integer in [0, {vocab}] "
                          "(the vocabulary)")
    if not prompts_ids or not all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompts_ids):
        raise ConfigError("prompts_ids must be a non-empty list of non-empty lists of token ids")
    if bad := sorted({t for p in prompts_ids for t in p if not 0 <= t < vocab})[:5]:
        raise ConfigError(f"prompts_ids hold token ids outside the vocabulary [0, {vocab}): {bad}")
    for p in prompts_ids:  # the cache holds the prompt and every new token
        check_context(len(p), config.max_new_tokens, context)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _vocab_size(loaded) -> int:
    """The output vocabulary: the lm_head's width (ExLlamaV2's engine has none: its config's)."""
    head = getattr(loaded.model, "get_output_embeddings", None)
    width = getattr(head(), "out_features", None) if head else None
    return int(width or loaded.model.config.vocab_size)


def generate(loaded, prompt, config: DecodeConfig | None = None, format: str = "codefuse",
             on_token: Callable[[int, str], None] | None = None, *, streamer=None, warmup: int = 0,
             logprobs: bool = True, top_logprobs: int = 5, max_context: int | None = None,
             decode_mode: str = "auto"):
    """Generate from `prompt` and measure it.

    `prompt` is a string (the human turn; with format="raw" it is used as it is), a message list,
    or a list of those, which runs as one left-padded batch and returns one record per prompt.
    `on_token(token_id, text)` streams new text (batch size 1 only); without it nothing is
    decoded during generation. `streamer` takes any transformers streamer (TextStreamer,
    TextIteratorStreamer, ...), in every decode mode, beside or instead of `on_token`. `warmup`
    untimed runs of a few tokens come first, and the record says how many there were.
    `decode_mode`: "eager" (transformers' generate), "static" (a static KV cache), "graph" (static,
    each step replayed as a CUDA graph; see static.py), "fast" (fast.py) or "auto" (graph on CUDA,
    eager on the CPU: modes.py says why). The record says which mode ran and why. The prompt's
    tokens plus `max_new_tokens` must fit `max_context` (None: the model's context, see
    context_tokens), or PromptError says by how much. Every parameter is checked before anything
    runs.
    """

    config = config or DecodeConfig.greedy()
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    batch = _is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    _check_streaming(on_token, streamer, len(prompts), config)
    tok = loaded.tokenizer
    context = context_tokens(loaded, max_context)
    encoded = [encode_prompt(tok, _as_messages(p), format=format, max_context=context) for p in prompts]
    if format == "raw":
        texts = [p if isinstance(p, str) else "".join(m["content"] for m in p) for p in prompts]
    else:

        texts = [render_prompt(_as_messages(p), format=format) for p in prompts]
    records = generate_ids(loaded, encoded, config, on_token, streamer=streamer, warmup=warmup,
                           logprobs=logprobs, top_logprobs=top_logprobs, decode_mode=decode_mode, max_context=context)
    for r, text in zip(records, texts):
        r.prompt_text = text
        r.format = format
    return records if batch else records[0]


def generate_ids(loaded, prompts_ids: list[list[int]], config: DecodeConfig | None = None,
                 on_token: Callable[[int, str], None] | None = None, *, streamer=None, warmup: int = 0,
                 logprobs: bool = True, top_logprobs: int = 5, decode_mode: str = "auto",
                 max_context: int | None = None) -> list[GenerationRecord]:
    """`generate` for prompts already encoded (lists of token ids): one record per prompt."""

    config = config or DecodeConfig.greedy()
    mode, why = resolve_mode(decode_mode, input_device(loaded.model), config, model=loaded.model)
    check_request(loaded, prompts_ids, config, warmup=warmup, logprobs=logprobs, top_logprobs=top_logprobs,
                  context=context_tokens(loaded, max_context))
    if on_token is not None and not callable(on_token):
        raise ConfigError(f"on_token={on_token!r} is invalid: allowed None or a function (token_id, text)")
    _check_streaming(on_token, streamer, len(prompts_ids), config)
    for _ in range(warmup):  # a few tokens through the same path (and, static, the same cache and graph)
        _run(loaded, prompts_ids, config.replace(max_new_tokens=min(4, config.max_new_tokens), min_new_tokens=0),
             None, False, 0, mode, cache_for=config.max_new_tokens)
    records = _run(loaded, prompts_ids, config, make_streamer(loaded.tokenizer, on_token, streamer), logprobs,
                   top_logprobs, mode)
    for r in records:
        r.warmup_runs = warmup
        r.format = "ids"
        r.decode_mode_requested = decode_mode
        r.decode_note = "; ".join(n for n in (why, r.decode_note) if n)
    return records


def _check_streaming(on_token, streamer, n_prompts: int, config: DecodeConfig) -> None:
    if (on_token is not None or streamer is not None) and (n_prompts > 1 or config.num_beams > 1):
        raise ConfigError("on_token and streamer stream one sequence: use them with a single prompt and num_beams=1")


def _run(loaded, encoded: list[list[int]], config: DecodeConfig, streamer, want_logprobs: bool,
         top_k: int, decode_mode: str = "eager", cache_for: int | None = None) -> list[GenerationRecord]:
    import torch


    model, tok = loaded.model, loaded.tokenizer
    device = input_device(model)
    input_ids, mask = left_pad(encoded, tok.pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    beams = config.num_beams > 1
    if config.seed is not None:
        torch.manual_seed(config.seed)
    attention = attention_in_use(model)  # the static path swaps in grouped SDPA, which obeys the same switches
    clock = Clock(device)
    reset_peak_memory(device)
    clock.mark()  # index 0: the start
    if decode_mode == "eager" and not is_runner(model):
        sequences, logits, step_marks, prefill_mark = run_transformers(
            model, tok, input_ids, mask, config, clock, streamer, want_logprobs and not beams)
        ran, note = "eager", ""
    else:  # the static loop: the workbench's own modes, and ExLlamaV2's engine with its own decoder
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
        records.append(GenerationRecord(
            text=text, prompt_text="", prompt_tokens=len(prompt_ids), token_ids=ids, new_tokens=n,
            token_times_s=times, ttft_s=times[0] if times else float("nan"), prefill_s=prefill_s,
            logprobs=lps, top_logprobs=tops, stop_reason=reason,
            kernel=getattr(loaded, "kernel", None), kernel_requested=getattr(loaded, "kernel_requested", None),
            config=config, format="", batch_size=len(encoded), batch_index=b,
            decode_mode=ran, decode_mode_requested=decode_mode, decode_note=note, attention=attention,
            memory={"load": load_dict.get("memory"), "generation": gen_memory}, env=env,
            model=str(getattr(loaded, "path", "")) or None, checkpoint_hash=env["checkpoint_hash"],
            created=created,
        ))
    return records


def _stop_check(tok, config: DecodeConfig):
    """For the static loop: True once every row's new text holds one of the stop strings."""
    def check(new_ids) -> bool:
        return all(any(s in tok.decode(row, skip_special_tokens=True) for s in config.stop) for row in new_ids.tolist())
    return check


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
