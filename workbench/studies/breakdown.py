"""Where a decode step's time goes, from torch.profiler.

A step's wall time splits into GPU work — the quantized GEMMs, attention (the attention block
without its q/k/v/o projections: rotary embedding, cache update, the attention itself) and
everything else (norms, MLP activation, residual adds, lm_head, sampling) — and host time that
no GPU work covers, which is what launch overhead and Python cost when the GPU waits for them.

How GPU ops are attributed: during profiling every quantized linear and every attention block
runs inside a profiler annotation, and a GPU op (a CUDA kernel launch, a memcpy or a memset)
belongs to the innermost annotation that was open when the host launched it. A replayed CUDA
graph launches its ops from no Python code, so in graph mode they are attributed by name, with
the shares a static-mode profile of the same step gave each name. On the CPU there are no GPU
ops: the split is of host time itself. ("kernel" alone means the GPTQ kernel that was loaded.)
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..generation.config import DecodeConfig, check_mode
from ..generation.fast import fast_config, set_fast_config
from ..generation.generate import generate_ids
from ..generation.inputs import input_device
from ..model.attention import DEFAULT_ATTENTION, set_attention
from ..model.exllamav2_engine import is_runner
from ..prompts.encoding import prompt_ids_of_length

QGEMM, ATTENTION, OTHER = "wb::qgemm", "wb::attention", "other"
STEP_MARKS = ("wb::step", "wb::forward")  # static/graph steps; transformers' forward passes


@dataclass
class StepBreakdown:
    """Per decode step, in milliseconds (means over the profiled steps)."""

    kernel: str | None  # the GPTQ kernel
    decode_mode: str  # the decode mode that ran
    attention: str
    device: str
    context_tokens: int
    steps: int  # decode steps measured
    wall_ms: float  # profiled: the profiler's own cost per op lands in host time
    unprofiled_wall_ms: float | None  # the same steps without the profiler (median step)
    qgemm_ms: float  # GPU time (CPU: host time) inside quantized linears
    attention_ms: float  # attention blocks without their projections
    other_gpu_ms: float | None  # other GPU work (None on the CPU)
    gpu_busy_ms: float | None  # time at least one GPU op ran (overlaps counted once)
    host_uncovered_ms: float | None  # unprofiled wall time with no GPU work: the GPU waited for the host
    other_host_ms: float | None = None  # CPU only: wall time outside quantized linears and attention
    launches_per_step: float | None = None  # GPU ops launched per step
    top_gpu_ops: list = field(default_factory=list)  # [name, ms per step, launches per step]
    launches_by_op: dict = field(default_factory=dict)  # GPU op name -> launches per step
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def quantized_linears(model):
    """The model's quantized linear layers (gptqmodel's, or AutoGPTQ's in the legacy environment)."""
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:
        BaseQuantLinear = ()
    return [m for m in model.modules()
            if isinstance(m, BaseQuantLinear) or type(m).__module__.startswith("auto_gptq.nn_modules.qlinear.")]


def attention_blocks(model):
    return [m for name, m in model.named_modules() if name.endswith("self_attn")]


@contextmanager
def annotated(model):
    """Open a profiler annotation around every quantized linear, attention block and forward pass."""
    import torch

    handles, open_ = [], []

    def enter(name):
        def pre(module, args, kwargs=None):
            rf = torch.profiler.record_function(name)
            rf.__enter__()
            open_.append(rf)
        return pre

    def leave(module, args, out):
        open_.pop().__exit__(None, None, None)

    groups = [(quantized_linears(model), QGEMM), (attention_blocks(model), ATTENTION), ([model], "wb::forward")]
    for modules, name in groups:
        for m in modules:
            handles.append(m.register_forward_pre_hook(enter(name)))
            handles.append(m.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def profile_decode(loaded, context_tokens: int = 128, steps: int = 16, decode_mode: str = "eager",
                   attention: str = DEFAULT_ATTENTION, warmup: int = 1) -> StepBreakdown:
    """Profile `steps` greedy decode steps after a prompt of `context_tokens` and split their time."""

    check_mode(decode_mode)
    if is_runner(loaded.model):
        raise ConfigError("kernel 'exllamav2-engine': ExLlamaV2's modules are not torch modules, so the profiler's "
                          "split cannot attribute its kernels to GEMMs and attention")
    set_attention(loaded, attention)
    device = input_device(loaded.model)
    shares = None
    if decode_mode == "graph":  # learn which GPU op names belong where from the same step run eagerly
        shares = _name_shares(_profile(loaded, context_tokens, steps, "static", warmup)[0])
    elif decode_mode == "fast" and fast_config(loaded).graph and device.type == "cuda":
        with _fast_without_graph(loaded):  # the fast step itself, launched from Python
            shares = _name_shares(_profile(loaded, context_tokens, steps, "fast", warmup)[0])
    trace, ran, note, unprofiled_ms = _profile(loaded, context_tokens, steps, decode_mode, warmup)
    decoder = loaded.decoder[1] if loaded.decoder else None  # generation/static.decoder_for keeps it
    graph_ran = ran == "graph" or (ran == "fast" and getattr(decoder, "graph", None) is not None)
    result = _split(trace, device.type, shares if graph_ran else None)
    if result["gpu_busy_ms"] is not None:  # the GPU's share is what the profiler cannot inflate
        result["host_uncovered_ms"] = max(0.0, unprofiled_ms - result["gpu_busy_ms"])
    return StepBreakdown(kernel=loaded.kernel, decode_mode=ran, attention=attention, device=str(device),
                         context_tokens=context_tokens, note=note, unprofiled_wall_ms=unprofiled_ms, **result)


@contextmanager
def _fast_without_graph(loaded):
    """The loaded model's fast config without its CUDA graph, for the length of the block."""
    config = fast_config(loaded)
    set_fast_config(loaded, dataclasses.replace(config, graph=False))
    try:
        yield
    finally:
        set_fast_config(loaded, config)


def _profile(loaded, context_tokens, steps, mode, warmup):
    """(the parsed Chrome trace of `steps` + 2 decode steps, the mode that ran, its note)."""
    import torch
    from torch.profiler import ProfilerActivity, profile


    ids = prompt_ids_of_length(loaded.tokenizer, context_tokens)
    n = steps + 2  # the first token comes from the prefill; the last step has no end mark
    config = DecodeConfig.forced(n)
    plain = generate_ids(loaded, [ids], config, warmup=warmup, logprobs=False, decode_mode=mode)[0]
    unprofiled_ms = plain.token_ms_p50
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available() and next(loaded.model.parameters()).is_cuda:
        activities.append(ProfilerActivity.CUDA)
    with annotated(loaded.model), profile(activities=activities) as prof:
        record = generate_ids(loaded, [ids], config, logprobs=False, decode_mode=mode)[0]
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    return trace, record.decode_mode, record.decode_note, unprofiled_ms


def _events(trace):
    return [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]


def _intervals(events, name):
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "user_annotation" and e["name"] == name)
    return [s for s, _ in spans], [t for _, t in spans]


def _inside(starts, ends, ts) -> bool:
    i = bisect.bisect_right(starts, ts) - 1
    return i >= 0 and ts <= ends[i]


def _step_starts(events) -> list[float]:
    for name in STEP_MARKS:
        starts, _ = _intervals(events, name)
        if name == "wb::forward":
            starts = starts[1:]  # the first forward pass is the prefill
        if len(starts) >= 2:
            return starts
    raise RuntimeError("the profile holds fewer than two decode steps")


def _gpu_work(events):
    """GPU ops (CUDA kernels, memcpys, memsets) with the host timestamp of the call that launched them."""
    launch_ts = {e["args"]["correlation"]: e["ts"] for e in events
                 if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    work = []
    for e in events:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            launched = launch_ts.get(e.get("args", {}).get("correlation"))
            if launched is not None:
                work.append((launched, e["ts"], e["dur"], e["name"]))
    return work


def _union_us(spans) -> float:
    total, end = 0.0, float("-inf")
    for s, t in sorted(spans):
        if t > end:
            total += t - max(s, end)
            end = t
    return total


def _split(trace, device_type: str, shares: dict | None) -> dict:
    events = _events(trace)
    starts = _step_starts(events)
    first, last = starts[0], starts[-1]
    n = len(starts) - 1
    wall_us = (last - first) / n
    q_s, q_e = _intervals(events, QGEMM)
    a_s, a_e = _intervals(events, ATTENTION)
    if device_type != "cuda":  # host time: annotations' own spans inside the measured steps
        def inside_total(s_, e_):
            return sum(min(e, last) - max(s, first) for s, e in zip(s_, e_) if e > first and s < last)
        q_us = inside_total(q_s, q_e)
        a_us = inside_total(a_s, a_e) - sum(  # projections inside attention count as GEMMs
            min(e, last) - max(s, first) for s, e in zip(q_s, q_e) if e > first and s < last and _inside(a_s, a_e, s))
        return dict(steps=n, wall_ms=wall_us / 1e3, qgemm_ms=q_us / n / 1e3, attention_ms=a_us / n / 1e3,
                    other_gpu_ms=None, gpu_busy_ms=None, host_uncovered_ms=None,
                    other_host_ms=(wall_us - (q_us + a_us) / n) / 1e3)
    work = [w for w in _gpu_work(events) if first <= w[0] < last]
    totals = Counter()
    per_name_us, per_name_n = Counter(), Counter()
    for launched, ts, dur, name in work:
        per_name_us[name] += dur
        per_name_n[name] += 1
        if shares is not None:  # graph replay: by name, with the static step's shares
            for cat, share in shares.get(name, {OTHER: 1.0}).items():
                totals[cat] += dur * share
        else:
            totals[QGEMM if _inside(q_s, q_e, launched) else ATTENTION if _inside(a_s, a_e, launched) else OTHER] += dur
    busy = _union_us([(ts, ts + dur) for _, ts, dur, _ in work])
    top = sorted(per_name_us.items(), key=lambda kv: -kv[1])[:12]
    return dict(
        steps=n, wall_ms=wall_us / 1e3, qgemm_ms=totals[QGEMM] / n / 1e3, attention_ms=totals[ATTENTION] / n / 1e3,
        other_gpu_ms=totals[OTHER] / n / 1e3, gpu_busy_ms=busy / n / 1e3,
        host_uncovered_ms=max(0.0, wall_us - busy / n) / 1e3,
        launches_per_step=len(work) / n,
        top_gpu_ops=[[name, us / n / 1e3, per_name_n[name] / n] for name, us in top],
        launches_by_op={name: c / n for name, c in sorted(per_name_n.items())},
    )


def _name_shares(trace) -> dict:
    """For each GPU op name in a static-mode profile: the share of its time in each category."""
    events = _events(trace)
    q_s, q_e = _intervals(events, QGEMM)
    a_s, a_e = _intervals(events, ATTENTION)
    by_name = defaultdict(Counter)
    for launched, _, dur, name in _gpu_work(events):
        cat = QGEMM if _inside(q_s, q_e, launched) else ATTENTION if _inside(a_s, a_e, launched) else OTHER
        by_name[name][cat] += max(dur, 1e-3)
    return {name: {cat: v / sum(c.values()) for cat, v in c.items()} for name, c in by_name.items()}


def graph_launch_check(loaded, context_tokens: int = 128, steps: int = 4, attention: str = DEFAULT_ATTENTION) -> dict:
    """Does a replayed graph step launch the same GPU ops as the same step run eagerly (static)?

    Counts every GPU op name per step in both profiles; `missing` lists names the graph launches
    fewer times (a graph that lost its GEMMs shows them here), `qgemm_launches` the launches that
    the static profile attributes to quantized linears, in both."""
    set_attention(loaded, attention)
    static_trace = _profile(loaded, context_tokens, steps, "static", 1)[0]
    graph_trace, ran, note, _ = _profile(loaded, context_tokens, steps, "graph", 1)
    shares = _name_shares(static_trace)
    s = _split(static_trace, "cuda", None)["launches_by_op"]
    g = _split(graph_trace, "cuda", shares)["launches_by_op"]
    qnames = {name for name, share in shares.items() if share.get(QGEMM, 0) > 0.5}
    missing = {name: [s[name], g.get(name, 0.0)] for name in s if g.get(name, 0.0) + 1e-9 < s[name]}
    return {"decode_mode": ran, "note": note, "static_launches_per_step": sum(s.values()),
            "graph_launches_per_step": sum(g.values()),
            "qgemm_launches_static": sum(v for k, v in s.items() if k in qnames),
            "qgemm_launches_graph": sum(v for k, v in g.items() if k in qnames),
            "qgemm_op_names": sorted(qnames), "missing": missing, "ok": ran == "graph" and not missing and bool(qnames)}
