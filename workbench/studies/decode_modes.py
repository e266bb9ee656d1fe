"""Decode modes and attention backends, measured per loaded kernel (notebooks 04 and 05).

For each mode (eager / static / graph, generation/static.py) at each context length: ms per token (median
and p90 over forced-length greedy runs) beside the memory-bandwidth floor for that context. A
fast mode's numbers are only worth reading beside its proof (`prove_equal`: logits against
transformers' generate at every step) and, for graphs, the launch check (`graph_launch_check`:
the replay launches every GPU op the eager step launches).
"""

from __future__ import annotations

import math

from ..cache import atomic_write_json
from ..errors import ConfigError, WorkbenchError
from ..generation.config import DecodeConfig
from ..generation.generate import generate_ids
from ..measure import measure_copy_bandwidth_gbps, median, percentile
from ..model.attention import DEFAULT_ATTENTION, set_attention
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model
from ..model.registry import resolve_device
from ..prompts.encoding import prompt_ids_of_length
from .breakdown import graph_launch_check, profile_decode
from .floor import floor_share, step_floor_ms
from .proofs import prove_equal


def measure_modes(loaded, modes=("eager",), contexts=(128,), decode_tokens: int = 32, repeats: int = 3,
                  bandwidth_gbps: float | None = None, attention: str = DEFAULT_ATTENTION) -> list[dict]:
    """One row per (context, mode): token_ms_p50 and p90, tokens/s, the floor and its share. A mode
    that cannot run here gives a row with `why_not` instead of numbers."""
    set_attention(loaded, attention)
    config = DecodeConfig.forced(decode_tokens)
    rows = []
    for ctx in contexts:
        ids = prompt_ids_of_length(loaded.tokenizer, ctx)
        floor = step_floor_ms(loaded, ctx + decode_tokens // 2, 1, bandwidth_gbps)  # the cache midway
        for mode in modes:
            row = {"kernel": loaded.kernel, "attention": attention, "decode_mode_requested": mode,
                   "context_tokens": ctx, "floor_ms": floor}
            try:
                recs = [generate_ids(loaded, [ids], config, warmup=1 if r == 0 else 0, logprobs=False,
                                     decode_mode=mode)[0]
                        for r in range(repeats)]
            except (ConfigError, WorkbenchError, RuntimeError) as e:  # e.g. a graph on the CPU, flash with a mask
                rows.append({**row, "decode_mode": None,
                             "why_not": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                continue
            gaps_ms = sorted(1e3 * g for r in recs for g in r.token_gaps_s)
            p50 = percentile(gaps_ms, 50)
            # the first run reaches cache lengths this process may not have decoded at before; what is
            # built per new shape (cuDNN attention plans) shows there and not in the later repeats
            row.update(decode_mode=recs[-1].decode_mode, note=recs[-1].decode_note or recs[0].decode_note,
                       token_ms_p50=p50, token_ms_p90=percentile(gaps_ms, 90), tokens_per_s=1e3 / p50,
                       first_run_token_ms_p50=recs[0].token_ms_p50, floor_share=floor_share(floor, p50),
                       ttft_ms=median(r.ttft_s for r in recs) * 1e3)
            rows.append(row)
    return rows


def prove_modes(loaded, modes, context_tokens: int = 128, steps: int = 64,
                attention: str = DEFAULT_ATTENTION) -> list[dict]:
    """`prove_equal` for every fast mode, plus the graph launch check on a GPU."""

    set_attention(loaded, attention)
    rows = []
    for mode in modes:
        if mode == "eager":
            continue
        try:
            row = prove_equal(loaded, mode, context_tokens=context_tokens, steps=steps).to_dict()
        except (ConfigError, WorkbenchError, RuntimeError) as e:
            rows.append({"kernel": loaded.kernel, "decode_mode": mode, "why_not": f"{type(e).__name__}: {e}"})
            continue
        row["decode_mode_requested"] = mode
        if mode == "graph" and row["decode_mode"] == "graph":
            check = graph_launch_check(loaded, context_tokens=context_tokens, attention=attention)
            row.update({f"launch_check_{k}": v for k, v in check.items() if k not in ("decode_mode", "note")})
        rows.append(row)
    return rows


def breakdowns(loaded, modes, context_tokens: int = 128, steps: int = 16,
               attention: str = DEFAULT_ATTENTION) -> list[dict]:
    """`profile_decode` for every mode that can run: where each step's time goes."""

    rows = []
    for mode in modes:
        try:
            rows.append(profile_decode(loaded, context_tokens, steps, mode, attention).to_dict())
        except (ConfigError, WorkbenchError, RuntimeError) as e:
            rows.append({"kernel": loaded.kernel, "decode_mode": mode, "attention": attention,
                         "why_not": f"{type(e).__name__}: {e}"})
    return rows


def compare_attention(loaded, attentions, context_tokens: int = 128, decode_tokens: int = 32, repeats: int = 3,
                      steps: int = 16, bandwidth_gbps: float | None = None, mode: str = "eager") -> list[dict]:
    """For one kernel and mode, each attention implementation: decode speed and the step's split."""
    previous = getattr(loaded, "attention", DEFAULT_ATTENTION)
    rows = []
    for attention in attentions:
        speed = measure_modes(loaded, (mode,), (context_tokens,), decode_tokens, repeats, bandwidth_gbps, attention)[0]
        split = breakdowns(loaded, (mode,), context_tokens, steps, attention)[0] if "why_not" not in speed else {}
        rows.append({**speed, **{f"split_{k}": v for k, v in split.items()
                                 if k.endswith("_ms") and k != "wall_ms" and v is not None and not math.isnan(v)}})
    set_attention(loaded, previous)
    return rows


def main(argv=None) -> int:
    """`python -m workbench bench-modes`: ms/token per kernel, mode and context beside the floor,
    each fast mode with its proof."""
    import argparse


    parser = argparse.ArgumentParser(prog="python -m workbench bench-modes", description=main.__doc__)
    parser.add_argument("--model", default="demo", help="a checkpoint folder, or 'demo'")
    parser.add_argument("--kernels", nargs="+", default=["auto"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", nargs="+", default=["eager", "static", "graph"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[128, 2048])
    parser.add_argument("--new-tokens", type=int, default=32, help="decode steps timed per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prove-steps", type=int, default=64, help="0 skips the proof")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    quiet()
    device = resolve_device(args.device)
    path = resolve_model(args.model)
    bandwidth = measure_copy_bandwidth_gbps(device)
    rows, proofs = [], []
    for kernel in args.kernels:
        loaded = load_model(path, kernel=kernel, device=device)
        rows += measure_modes(loaded, args.modes, args.contexts, args.new_tokens, args.repeats, bandwidth)
        if args.prove_steps:
            proofs += prove_modes(loaded, args.modes, args.contexts[0], args.prove_steps)
        loaded.release()
    proven = {(p["kernel"], p.get("decode_mode_requested")): p.get("passed") for p in proofs}
    print(f"{path.name} on {device}" + (f" · copy bandwidth {bandwidth:.0f} GB/s" if bandwidth else ""))
    print(f"{'kernel':<12} {'mode':<16} {'context':>7} {'p50 ms':>8} {'p90 ms':>8} {'floor':>6} {'proven':>6}")
    for r in rows:
        asked = r["decode_mode_requested"]
        mode = asked if r.get("decode_mode") in (None, asked) else f"{asked}->{r['decode_mode']}"
        if "why_not" in r:
            print(f"{r['kernel']:<12} {mode:<16} {r['context_tokens']:>7}  {r['why_not'][:60]}")
            continue
        share = f"{r['floor_share']:.0%}" if r.get("floor_share") else "-"
        ok = proven.get((r["kernel"], asked))
        print(f"{r['kernel']:<12} {mode:<16} {r['context_tokens']:>7} {r['token_ms_p50']:>8.2f} "
              f"{r['token_ms_p90']:>8.2f} {share:>6} {'-' if ok is None else 'yes' if ok else 'NO':>6}")
    if args.out:

        atomic_write_json(args.out, {"model": str(path), "device": device, "bandwidth_gbps": bandwidth,
                                     "rows": rows, "proofs": proofs})
    return 0
