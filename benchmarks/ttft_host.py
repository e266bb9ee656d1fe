"""Where a short prompt's time to first token goes on the host, sample by sample.

A 128-token prefill of the 34B shapes keeps the GPU busy for a fixed time (the profile in
prefill_profile.py), yet its time to first token came out bimodal on the H100 (torch: 85 ms or
140-175 ms, the GPU's kernels 79 ms in both). This script repeats one prefill and records, for
each sample, what the host did meanwhile: time spent in Python's garbage collector (gc.callbacks),
the process's CPU time against the wall, and context switches. With --gc both it runs the same
samples with the collector on and off, so its share is measured rather than guessed.

    python benchmarks/ttft_host.py MODEL --kernels torch triton --prompt-tokens 128 --samples 12 --out FILE
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time


class GcTimer:
    """Accumulates the time Python's collector runs, through gc.callbacks."""

    def __init__(self):
        self.total_s, self.count, self._start = 0.0, 0, None

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.total_s += time.perf_counter() - self._start
            self.count += 1
            self._start = None

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def sample(loaded, ids, config) -> dict:
    """One prefill (one new token): TTFT, the call's wall, the collector's time, CPU time, switches."""
    from workbench.generation.generate import generate_ids

    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with GcTimer() as gct:
        rec = generate_ids(loaded, [ids], config, logprobs=False, decode_mode="eager")[0]
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"ttft_ms": round(rec.ttft_s * 1e3, 2), "call_ms": round(wall * 1e3, 2),
            "gc_ms": round(gct.total_s * 1e3, 2), "gc_runs": gct.count,
            "cpu_ms": round((time.process_time() - cpu0) * 1e3, 2),
            "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
            "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw}


def summary(rows: list[dict]) -> dict:
    from workbench.measure import median

    ttft = sorted(r["ttft_ms"] for r in rows)
    slow = [r for r in rows if r["ttft_ms"] > 1.25 * ttft[0]]
    return {"ttft_ms_min": ttft[0], "ttft_ms_median": median(ttft), "ttft_ms_max": ttft[-1],
            "slow_samples": len(slow), "gc_ms_in_slow": round(sum(r["gc_ms"] for r in slow), 2),
            "gc_ms_total": round(sum(r["gc_ms"] for r in rows), 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernels", nargs="+", default=["torch"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--gc", choices=["on", "off", "both"], default="both")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error("--samples must be at least 2")

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate_ids
    from workbench.prompts.encoding import prompt_ids_of_length
    from workbench.report.notebook import setup

    config = DecodeConfig.greedy(max_new_tokens=1)
    conditions = ["on", "off"] if args.gc == "both" else [args.gc]
    results = []
    for kernel in args.kernels:
        loaded = setup(args.model, kernel, args.device)
        ids = prompt_ids_of_length(loaded.tokenizer, args.prompt_tokens)
        generate_ids(loaded, [ids], config, warmup=1, logprobs=False, decode_mode="eager")
        for cond in conditions:
            gc.collect()
            if cond == "off":
                gc.disable()
            try:
                rows = [sample(loaded, ids, config) for _ in range(args.samples)]
            finally:
                gc.enable()
            results.append({"kernel": loaded.kernel, "attention": loaded.attention, "gc": cond,
                            "summary": summary(rows), "samples": rows})
            print(kernel, "gc", cond, results[-1]["summary"], flush=True)
            print(kernel, "gc", cond, "ttft", [r["ttft_ms"] for r in rows], "cpu", [r["cpu_ms"] for r in rows],
                  "invol", [r["involuntary_switches"] for r in rows], flush=True)
        loaded.release()
    atomic_write_json(args.out, {"model": args.model, "prompt_tokens": args.prompt_tokens, "samples": args.samples,
                                 "results": results, "env": collect_env(args.device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
