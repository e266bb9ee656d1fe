"""Time to first token against prompt length, every sample kept, and where one prefill's GPU time goes.

05's TTFT column is a median of three runs after one warm-up. When a shorter prompt comes out
slower than a longer one, a median cannot say why; this script keeps every sample, goes over the
lengths in the order given (so a length can come again at the end, to see whether only its
first pass is slow) and profiles one prefill per distinct length: the GPU ops' total time
and the ops (CUDA kernel launches) that took most of it.

    python benchmarks/prefill_profile.py MODEL --kernels torch triton --lengths 128 512 2048 128 --out FILE
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict


def profile_prefill(loaded, ids, top: int = 8) -> dict:
    """Profile one prefill (one new token): its TTFT under the profiler, the GPU ops' total ms
    and the top GPU ops by time (both empty on the CPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate_ids
    from workbench.measure import synchronize

    config = DecodeConfig.greedy(max_new_tokens=1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(loaded.device).startswith("cuda") else [])
    with profile(activities=activities) as prof:
        rec = generate_ids(loaded, [ids], config, logprobs=False, decode_mode="eager")[0]
        synchronize(loaded.device)
    by_name = defaultdict(float)
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0:
            by_name[e.key] += e.self_device_time_total / 1e3
    ops = sorted(by_name.items(), key=lambda kv: -kv[1])
    return {"profiled_ttft_ms": rec.ttft_s * 1e3, "gpu_ops_ms": sum(by_name.values()),
            "top_gpu_ops_ms": [[name[:120], round(ms, 3)] for name, ms in ops[:top]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernels", nargs="+", default=["torch"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512, 2048, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attention", default=None, help="an attention setting (default: the workbench's)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.measure import median
    from workbench.model.attention import set_attention
    from workbench.prompts.encoding import prompt_ids_of_length
    from workbench.report.notebook import setup
    from workbench.studies.latency import first_token_records

    results = []
    for kernel in args.kernels:
        loaded = setup(args.model, kernel, args.device)
        if args.attention:
            set_attention(loaded, args.attention)
        passes = []
        for i, n in enumerate(args.lengths):
            recs = first_token_records(loaded, prompt_ids_of_length(loaded.tokenizer, n), args.repeats)
            samples = [round(r.ttft_s * 1e3, 2) for r in recs]
            passes.append({"pass": i, "prompt_tokens": n, "ttft_ms": samples,
                           "ttft_ms_median": median(samples)})
            print(kernel, passes[-1], flush=True)
        profiles = {}
        for n in dict.fromkeys(args.lengths):
            profiles[n] = profile_prefill(loaded, prompt_ids_of_length(loaded.tokenizer, n))
            print(kernel, n, {k: v for k, v in profiles[n].items() if k != "top_gpu_ops_ms"},
                  profiles[n]["top_gpu_ops_ms"][:3], flush=True)
        results.append({"kernel": loaded.kernel, "attention": loaded.attention, "passes": passes,
                        "profiles": profiles})
        loaded.release()
    atomic_write_json(args.out, {"model": args.model, "repeats": args.repeats, "lengths": args.lengths,
                                 "results": results, "env": collect_env(args.device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
