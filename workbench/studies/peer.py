"""ExLlamaV2's own engine beside the workbench's decode paths, on one checkpoint, in one process.

`python -m workbench bench-peer` measures, in this order, with the copy bandwidth measured first:
the peer (`exllamav2-engine`: its own loop) at every context, and its prefill; the workbench's
`graph` mode with the kernel asked for (marlin by default), proven against eager first; then each
step of the fast path's ladder (`LADDER`, generation/fast.py), each proven (`prove_equal`) before it is
measured, every proof against the same eager run. Decode speed is the median inter-token time
over `steps` steps of a generation forced to that length, after a warm-up generation of the same
shape (graph capture, compilation and autotuning happen there, not in the numbers); prefill is
the time to the first token of a `prefill_tokens` prompt, median of `prefill_repeats` after one
warm-up. A step that fails or cannot run gives a row that says why; nothing is left out.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from dataclasses import dataclass

from ..cache import atomic_write_json
from ..environment import collect_env
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.fast import FastConfig, set_fast_config
from ..generation.generate import generate_ids
from ..measure import current_keys, measure_copy_bandwidth_gbps, median
from ..model.attention import ATTENTION_CHOICES, DEFAULT_ATTENTION, set_attention
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model
from ..model.registry import resolve_device
from ..prompts.encoding import prompt_ids_of_length
from .breakdown import profile_decode
from .floor import floor_share, step_floor_ms
from .proofs import eager_reference, prove_equal

# exllama's own switch: above 32 rows its GEMM dequantizes the weight and calls cuBLAS (MAX_Q_GEMM_ROWS)
DENSE_PREFILL_ROWS = 32

# The fast path's ladder, each step adding one change to the one before (generation/fast.FastConfig); the
# last swaps the loaded kernel's GEMM for the workbench's Triton GEMV (measured slower on the H200).
LADDER: dict[str, FastConfig] = {
    "fused": FastConfig(fuse=True),
    "+compile": FastConfig(fuse=True, compile=True),
    "+filled-attention": FastConfig(fuse=True, compile=True, attention="filled"),
    "+dense-prefill": FastConfig(fuse=True, compile=True, attention="filled", dense_prefill_rows=DENSE_PREFILL_ROWS),
    "+store-in-rotary": FastConfig(fuse=True, compile=True, attention="filled", dense_prefill_rows=DENSE_PREFILL_ROWS,
                                   store_in_rotary=True),
    "+combo-kernels": FastConfig(fuse=True, compile=True, attention="filled", dense_prefill_rows=DENSE_PREFILL_ROWS,
                                 store_in_rotary=True, combo_kernels=True),
    "+triton-gemv": FastConfig(fuse=True, compile=True, attention="filled", gemm="triton",
                               dense_prefill_rows=DENSE_PREFILL_ROWS),
}
PEER_ATTENTIONS = ("sdpa-no-cudnn", "sdpa")  # the workbench's default, then torch's (cuDNN re-plans per length)


@dataclass(frozen=True)
class PeerBenchConfig:
    """What `bench-peer` measures."""

    contexts: tuple = (128, 2048)  # prompt tokens before the timed decode steps
    steps: int = 64  # decode steps timed per context (their median is reported)
    prefill_tokens: int = 2048
    prefill_repeats: int = 3
    prove_steps: int = 64  # greedy steps every fast mode is proven over (at the first context)
    kernel: str = "marlin"  # the workbench's kernel for its own paths
    ladder: tuple = tuple(LADDER)  # which LADDER steps to run, in order
    peer: bool = True  # measure ExLlamaV2's engine too
    peer_attentions: tuple = PEER_ATTENTIONS  # SDPA switches the peer is measured under (the first gives its row)
    profile: bool = True  # the profiler's split of the last proven ladder step, and both prefills' top GPU ops
    profile_graph: bool = True  # also the split of the graph mode's step

    def __post_init__(self):
        if not self.contexts or not all(isinstance(c, int) and c > 0 for c in self.contexts):
            raise ConfigError(f"PeerBenchConfig.contexts={self.contexts!r}: give positive token counts")
        for name in ("steps", "prefill_tokens", "prefill_repeats", "prove_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ConfigError(f"PeerBenchConfig.{name}={getattr(self, name)!r}: allowed an integer >= 1")
        unknown = [s for s in self.ladder if s not in LADDER]
        if unknown:
            raise ConfigError(f"PeerBenchConfig.ladder: unknown steps {unknown}; known: {', '.join(LADDER)}")
        if not self.peer_attentions or any(a not in ATTENTION_CHOICES for a in self.peer_attentions):
            raise ConfigError(f"PeerBenchConfig.peer_attentions={self.peer_attentions!r}: allowed "
                              f"{', '.join(ATTENTION_CHOICES)}")


# --- one path measured ------------------------------------------------------------------------------

def measure_decode(loaded, mode: str, context: int, steps: int, bandwidth_gbps: float | None) -> dict:
    """Median ms per token over `steps` steps after a `context`-token prompt (one warm-up run first)."""
    ids = prompt_ids_of_length(loaded.tokenizer, context)
    config = DecodeConfig.forced(steps + 1)
    rec = generate_ids(loaded, [ids], config, warmup=1, logprobs=False, decode_mode=mode)[0]
    floor = step_floor_ms(loaded, context + steps / 2, 1, bandwidth_gbps)
    return {"context_tokens": context, "steps": len(rec.token_gaps_s), "token_ms_p50": rec.token_ms_p50,
            "token_ms_p90": rec.token_ms_p90, "tokens_per_s": 1e3 / rec.token_ms_p50, "floor_ms": floor,
            "floor_share": floor_share(floor, rec.token_ms_p50), "decode_mode": rec.decode_mode,
            "note": rec.decode_note}


def measure_prefill(loaded, mode: str, tokens: int, repeats: int) -> dict:
    """Time to first token of a `tokens`-token prompt: median of `repeats` after one warm-up."""
    ids = prompt_ids_of_length(loaded.tokenizer, tokens)
    config = DecodeConfig.greedy(max_new_tokens=1)
    generate_ids(loaded, [ids], config, logprobs=False, decode_mode=mode)  # warm-up: shapes, plans, graphs
    recs = [generate_ids(loaded, [ids], config, logprobs=False, decode_mode=mode)[0] for _ in range(repeats)]
    ttft_s = median(r.ttft_s for r in recs)
    return {"prefill_tokens": tokens, "ttft_ms": ttft_s * 1e3, "ttft_ms_all": sorted(r.ttft_s * 1e3 for r in recs),
            "prefill_tokens_per_s": tokens / ttft_s}


_deadline = [math.inf]  # perf_counter() after which bench_peer starts no new measurement


def prefill_profile(loaded, mode: str, tokens: int, top: int = 12) -> dict:
    """One `tokens`-token prefill (after a warm-up) under torch.profiler: GPU time per GPU op name,
    the largest `top` of them, and the total. Works for any engine whose ops run on CUDA."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    ids = prompt_ids_of_length(loaded.tokenizer, tokens)
    config = DecodeConfig.greedy(max_new_tokens=1)
    generate_ids(loaded, [ids], config, logprobs=False, decode_mode=mode)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        rec = generate_ids(loaded, [ids], config, logprobs=False, decode_mode=mode)[0]
        torch.cuda.synchronize()
    ops = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us and e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith("wb::"):  # not ranges
            ops.append((e.key, us / 1e3, e.count))
    ops.sort(key=lambda k: -k[1])
    return {"prefill_tokens": tokens, "ttft_ms_profiled": rec.ttft_s * 1e3,
            "gpu_ops_ms": sum(k[1] for k in ops),
            "top_gpu_ops": [[n[:120], ms, c] for n, ms, c in ops[:top]]}


def _row(path: str, fn, log) -> dict:
    """Run one measurement; a failure becomes a row with the error instead of stopping the study,
    and past the deadline a row that says it was not run."""
    started = time.perf_counter()
    if started > _deadline[0]:
        log(f"[{path}] skipped: the time budget is spent")
        return {"path": path, "why_not": "not run: the call's time budget was spent"}
    try:
        row = fn()
    except Exception as e:  # a benchmark records every failure (OOM, a kernel that does not compile) and goes on
        log(f"[{path}] failed: {type(e).__name__}: {e}")
        return {"path": path, "why_not": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}",
                "traceback": traceback.format_exc()[-2000:]}
    row = {"path": path, **row, "seconds": round(time.perf_counter() - started, 2)}
    log(f"[{path}] " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()
                                 if k != "note" and isinstance(v, (int, float, str, bool, type(None)))))
    return row


def _short(v):
    return f"{v:.3f}" if isinstance(v, float) else v


# --- the study ----------------------------------------------------------------------------------------

def bench_peer(path, device: str = "cuda", config: PeerBenchConfig = PeerBenchConfig(), log=print,
               deadline_s: float | None = None, save=None) -> dict:
    """Everything `bench-peer` measures, as one JSON-ready dict (rows, proofs, splits, context).
    After `deadline_s` seconds no new measurement starts (their rows say so); `save(result)` is
    called after each path, so that a run cut short keeps what it measured."""
    _deadline[0] = time.perf_counter() + deadline_s if deadline_s else math.inf
    device = resolve_device(device)
    bandwidth = measure_copy_bandwidth_gbps(device)
    log(f"copy bandwidth {bandwidth} GB/s")
    out = {"model": str(path), "device": device, "bandwidth_gbps": bandwidth, "config": dataclasses.asdict(config),
           "env": collect_env(device), "rows": [], "proofs": [], "splits": [], "prefill_profiles": [], "loads": {}}
    save = save or (lambda result: None)
    if config.peer:
        out["rows"] += _peer_rows(path, device, config, bandwidth, out, log)
        save(out)
    try:
        loaded = load_model(path, kernel=config.kernel, device=device)
    except Exception as e:  # a kernel that does not build or load is a row, and the peer's rows stay
        log(f"[{config.kernel}] cannot run: {e}")
        out["rows"].append({"path": config.kernel, "why_not": str(e)})
        return out
    out["loads"][config.kernel] = loaded.load_record.to_dict()
    log(f"[{config.kernel}] loaded in {loaded.load_record.load_s:.1f} s")
    reference = _row("eager reference", lambda: {"reference": eager_reference(loaded, config.contexts[0],
                                                                            config.prove_steps)}, log)
    if "why_not" in reference:
        out["rows"].append(reference)
        return out
    reference = reference["reference"]
    for mode, step in [("graph", None)] + [("fast", name) for name in config.ladder]:
        out["rows"] += _workbench_rows(loaded, mode, step, config, bandwidth, reference, out, log)
        save(out)
    if config.profile:
        out["splits"] += _splits(loaded, config, out, log)
        save(out)
    loaded.release()
    return out


def _peer_rows(path, device, config, bandwidth, out, log) -> list:
    try:
        peer = load_model(path, kernel="exllamav2-engine", device=device)
    except Exception as e:  # no package, no nvcc, a checkpoint it would misread, a failed load: a row that says so
        log(f"[exllamav2-engine] cannot run: {type(e).__name__}: {e}")
        return [{"path": "exllamav2-engine", "why_not": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()[-2000:]}]
    out["loads"]["exllamav2-engine"] = peer.load_record.to_dict()
    log(f"[exllamav2-engine] loaded in {peer.load_record.load_s:.1f} s, "
        f"extension import {peer.load_record.env['exllamav2']['import_s']:.1f} s")
    rows = []
    for i, attention in enumerate(config.peer_attentions):  # the first is the peer's row; the others say what changes
        name = "exllamav2-engine" if i == 0 else f"exllamav2-engine [{attention}]"
        set_attention(peer, attention)
        rows += [_row(name, lambda c=c: {**measure_decode(peer, "eager", c, config.steps, bandwidth),
                                         "attention": attention}, log) for c in config.contexts]
        rows.append(_row(name, lambda: {**measure_prefill(peer, "eager", config.prefill_tokens, config.prefill_repeats),
                                        "attention": attention}, log))
    set_attention(peer, DEFAULT_ATTENTION)
    if config.profile:
        out["prefill_profiles"].append(_row("prefill profile exllamav2-engine",
                                            lambda: prefill_profile(peer, "eager", config.prefill_tokens), log))
    peer.release()
    return rows


def _workbench_rows(loaded, mode: str, step: str | None, config, bandwidth, reference, out, log) -> list:
    """Prove the path, then (only when proven) measure it at every context and its prefill."""
    name = f"{config.kernel} {mode}" + (f" {step}" if step else "")
    if step is not None:
        set_fast_config(loaded, LADDER[step])
    proof = _row(name, lambda: {"proof": prove_equal(loaded, mode, reference=reference).to_dict()}, log)
    if "why_not" in proof:
        return [proof]
    p = proof["proof"]
    out["proofs"].append({"path": name, "fast_config": dataclasses.asdict(LADDER[step]) if step else None, **p})
    log(f"[{name}] proof: passed={p['passed']} decode_mode={p['decode_mode']} max|dlogit|={p['max_abs_dlogit']:.4g} "
        f"of {p['max_abs_logit']:.4g}, tokens identical={p['tokens_identical']}; {p['note']}")
    if not p["passed"]:
        return [{"path": name, "why_not": f"not proven equal to eager (max |dlogit| {p['max_abs_dlogit']:.4g}, first "
                                          f"divergence {p['first_divergence']}): not measured"}]
    rows = [_row(name, lambda c=c: measure_decode(loaded, mode, c, config.steps, bandwidth), log)
            for c in config.contexts]
    rows.append(_row(name, lambda: measure_prefill(loaded, mode, config.prefill_tokens, config.prefill_repeats), log))
    return rows


def _splits(loaded, config, out, log) -> list:
    """The profiler's split of the graph step and of the last ladder step that was proven, and the
    top GPU ops of that step's prefill."""
    proven = [p for p in out["proofs"] if p["passed"]]
    last = proven[-1]["path"].split()[-1] if proven else None
    targets = ([("graph", None)] if config.profile_graph else []) + ([("fast", last)] if last in LADDER else [])
    if last in LADDER:
        set_fast_config(loaded, LADDER[last])
        out["prefill_profiles"].append(_row(f"prefill profile {config.kernel} fast {last}",
                                            lambda: prefill_profile(loaded, "fast", config.prefill_tokens), log))
    rows = []
    for mode, step in targets:
        if step is not None:
            set_fast_config(loaded, LADDER[step])
        row = _row(f"split {mode} {step or ''}".strip(),
                   lambda: {"split": profile_decode(loaded, config.contexts[0], 16, mode).to_dict()}, log)
        rows.append({"path": row.pop("path"), **row.pop("split", {}), **row})
    return rows


# --- the table -------------------------------------------------------------------------------------------

def table(result: dict) -> str:
    """The side-by-side table: ms per token at each context and the prefill, tokens/s, floor share,
    speed-up over the peer, and whether the path was proven equal to eager."""
    rows = [current_keys(r) for r in result["rows"]]  # results/h200/issue21 has the old keys
    contexts = list(result["config"]["contexts"])
    paths = list(dict.fromkeys(r["path"] for r in rows))
    peer = {r["context_tokens"]: r["token_ms_p50"] for r in rows
            if r["path"] == "exllamav2-engine" and "token_ms_p50" in r}
    peer_prefill = next((r["ttft_ms"] for r in rows if r["path"] == "exllamav2-engine" and "ttft_ms" in r), None)
    proven = {p["path"]: p["passed"] for p in result["proofs"]}
    head = ["path"] + [f"{c} ctx ms (floor, x peer)" for c in contexts] + \
        [f"prefill {result['config']['prefill_tokens']} ms (x peer)", "proven"]
    lines = [head]
    for path in paths:
        mine = [r for r in rows if r["path"] == path]
        why = next((r["why_not"] for r in mine if "why_not" in r), None)
        cells = [path]
        for c in contexts:
            r = next((r for r in mine if r.get("context_tokens") == c), None)
            if r is None:
                cells.append("-")
                continue
            share = f"{r['floor_share']:.0%}" if r.get("floor_share") else "-"
            speed = f", {peer[c] / r['token_ms_p50']:.2f}x" if c in peer else ""
            cells.append(f"{r['token_ms_p50']:.2f} ({share}{speed})")
        pre = next((r for r in mine if "ttft_ms" in r), None)
        cells.append("-" if pre is None else f"{pre['ttft_ms']:.0f}" +
                     (f" ({peer_prefill / pre['ttft_ms']:.2f}x)" if peer_prefill else ""))
        cells.append("peer" if path.startswith("exllamav2-engine") else
                     {True: "yes", False: "NO", None: "-"}[proven.get(path)])
        lines.append(cells)
        if why:
            lines.append(["", f"  {why[:150]}"])
    width = [max(len(line[i]) for line in lines if len(line) == len(head)) for i in range(len(head))]
    text = [line[1] if len(line) == 2 else "  ".join(c.ljust(w) for c, w in zip(line, width)) for line in lines]
    bw = result.get("bandwidth_gbps")
    top = f"{result['model']} on {result['env'].get('device_name')}"
    top += f" · copy bandwidth {bw:.0f} GB/s" if bw else ""
    return "\n".join([top] + text)


def main(argv=None) -> int:
    """`python -m workbench bench-peer`: ExLlamaV2's engine beside the workbench's graph mode and
    the fast path's ladder, each proven before it is timed; prints the side-by-side table."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m workbench bench-peer", description=main.__doc__)
    parser.add_argument("--model", default="demo", help="a checkpoint folder, or 'demo'")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--kernel", default="marlin", help="the workbench's kernel (default marlin)")
    parser.add_argument("--contexts", nargs="+", type=int, default=[128, 2048])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument("--prove-steps", type=int, default=64)
    parser.add_argument("--ladder", nargs="*", default=list(LADDER), help=f"steps of: {', '.join(LADDER)}")
    parser.add_argument("--no-peer", action="store_true", help="skip ExLlamaV2's engine")
    parser.add_argument("--peer-attentions", nargs="+", default=list(PEER_ATTENTIONS),
                        help=f"SDPA switches the peer runs under, the first giving its row (default: "
                             f"{' '.join(PEER_ATTENTIONS)})")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-graph-split", action="store_true", help="profile the fast path's step only")
    parser.add_argument("--deadline-s", type=float, help="start no new measurement after this many seconds")
    parser.add_argument("--out", help="write every row, proof and split as JSON here")
    args = parser.parse_args(argv)
    quiet()
    config = PeerBenchConfig(contexts=tuple(args.contexts), steps=args.steps, prefill_tokens=args.prefill_tokens,
                             prefill_repeats=args.prefill_repeats, prove_steps=args.prove_steps, kernel=args.kernel,
                             ladder=tuple(args.ladder), peer=not args.no_peer,
                             peer_attentions=tuple(args.peer_attentions), profile=not args.no_profile,
                             profile_graph=not args.no_graph_split)

    def log(line):
        print(line, flush=True)

    def save(result):
        if args.out:
            atomic_write_json(args.out, json.loads(json.dumps(result, default=_jsonable)))

    result = bench_peer(resolve_model(args.model), args.device, config, log, args.deadline_s, save)
    save(result)
    print(table(result))
    return 0


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
