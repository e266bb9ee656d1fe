"""Does eager decoding slow down at KV-cache lengths the process has not decoded at before?

transformers' dynamic cache grows by one position per step, so every step of a first generation
has shapes never seen: anything cached per shape (the CUDA allocator's blocks, an attention
backend's execution plans) is built then, and reused by a later generation over the same
lengths. This script runs the same eager generation twice in one process, after a short warm-up,
and records per-step latency beside the allocator's count of driver allocations, so the first
run (new lengths) and the second (lengths seen) can be compared. --attention picks the
attention implementation (workbench.model.attention.ATTENTION_CHOICES), to tell the causes apart.

    python benchmarks/first_lengths.py MODEL --kernel exllamav2 --attention sdpa --out FILE
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--kernel", default="exllamav2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--attention", default="sdpa", help="sdpa, sdpa-cudnn, sdpa-flash, sdpa-math or eager")
    parser.add_argument("--warmup-tokens", type=int, default=4,
                        help="the warm-up run's length (4 = studies.latency.long_generation's)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    from workbench.cache import atomic_write_json
    from workbench.environment import collect_env
    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate_ids
    from workbench.measure import median
    from workbench.model.attention import set_attention
    from workbench.prompts.encoding import prompt_ids_of_length
    from workbench.report.notebook import setup

    loaded = setup(args.model, args.kernel, args.device)
    set_attention(loaded, args.attention)
    ids = prompt_ids_of_length(loaded.tokenizer, args.prompt_tokens)
    warm = DecodeConfig.forced(args.warmup_tokens)
    config = DecodeConfig.forced(args.new_tokens)
    generate_ids(loaded, [ids], warm, logprobs=False, decode_mode="eager")

    def driver_allocs() -> int | None:
        return torch.cuda.memory_stats(args.device).get("num_device_alloc") if args.device.startswith("cuda") else None

    runs = []
    for label in ("first run (new cache lengths)", "second run (lengths seen)"):
        before = driver_allocs()
        rec = generate_ids(loaded, [ids], config, logprobs=False, decode_mode="eager")[0]
        gaps_ms = [1e3 * g for g in rec.token_gaps_s]
        head = gaps_ms[: max(args.warmup_tokens - 1, 1)]
        tail = gaps_ms[args.warmup_tokens:]
        after = driver_allocs()
        runs.append({"run": label, "driver_allocations": after - before if after is not None else None,
                     "token_ms_p50": rec.token_ms_p50, "p50_within_warmup_lengths_ms": median(head),
                     "p50_beyond_warmup_lengths_ms": median(tail) if tail else None,
                     "gaps_ms": [round(g, 2) for g in gaps_ms]})
        print({k: v for k, v in runs[-1].items() if k != "gaps_ms"}, flush=True)
    atomic_write_json(args.out, {"model": str(loaded.path), "kernel": loaded.kernel,
                                 "prompt_tokens": args.prompt_tokens,
                                 "new_tokens": args.new_tokens, "warmup_tokens": args.warmup_tokens,
                                 "attention": args.attention,
                                 "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "runs": runs,
                                 "env": collect_env(args.device)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
