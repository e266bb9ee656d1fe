"""`python -m workbench bench-overhead`: what instrumentation costs.

Alternates plain `model.generate` and the workbench's instrumented `generate` on the same
prompts, forced to the same number of new tokens, and prints how much longer the instrumented
runs take: in the decode loop itself (its first-to-last token span against the plain run's) and
for the whole call (with log-probabilities, text and records built after the loop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from .cache import atomic_write_json


def measure_overhead(loaded, prompt_tokens: int = 64, new_tokens: int = 64, rounds: int = 5,
                     batch: int = 1) -> dict:
    import torch

    from .generation import DecodeConfig, generate_ids, input_device, left_pad
    from .measure import synchronize
    from .study import prompt_ids_of_length

    device = input_device(loaded.model)
    ids = [prompt_ids_of_length(loaded.tokenizer, prompt_tokens)] * batch
    config = DecodeConfig.greedy(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    gen_config = config.generation_config(loaded.tokenizer)
    x, mask = (t.to(device) for t in left_pad(ids, loaded.tokenizer.pad_token_id))

    def plain() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            loaded.model.generate(input_ids=x, attention_mask=mask, generation_config=gen_config)
        synchronize(device)
        return time.perf_counter() - t0

    def instrumented(logprobs: bool) -> tuple[float, float, float]:
        synchronize(device)
        t0 = time.perf_counter()
        rec = generate_ids(loaded, ids, config, logprobs=logprobs)[0]
        synchronize(device)
        return time.perf_counter() - t0, rec.token_times_s[-1], rec.token_times_s[-1] - rec.ttft_s

    # Warm up both paths so compilation and allocator growth stay out of the numbers.
    plain()
    instrumented(True)
    rows = {"plain_s": [], "timing_only_s": [], "timing_only_loop_s": [], "full_s": [], "full_loop_s": []}
    for _ in range(rounds):  # interleaved, so drift in the machine hits both alike
        rows["plain_s"].append(plain())
        total, loop, _ = instrumented(False)
        rows["timing_only_s"].append(total)
        rows["timing_only_loop_s"].append(loop)
        total, loop, _ = instrumented(True)
        rows["full_s"].append(total)
        rows["full_loop_s"].append(loop)
    med = {k: statistics.median(v) for k, v in rows.items()}
    plain_s = med["plain_s"]
    return {
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "rounds": rounds, "batch": batch,
        "kernel": loaded.kernel, "median_s": med, "runs_s": rows,
        "overhead_pct": {
            "timing_only_call": 100 * (med["timing_only_s"] - plain_s) / plain_s,
            "timing_only_loop": 100 * (med["timing_only_loop_s"] - plain_s) / plain_s,
            "with_logprobs_call": 100 * (med["full_s"] - plain_s) / plain_s,
            "with_logprobs_loop": 100 * (med["full_loop_s"] - plain_s) / plain_s,
        },
        "spread_pct": 100 * (max(rows["plain_s"]) - min(rows["plain_s"])) / plain_s,
    }


def main(argv=None) -> int:
    """Measure instrumentation overhead against plain model.generate."""
    parser = argparse.ArgumentParser(prog="workbench bench-overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="checkpoint folder, or 'demo'")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)

    from .environment import collect_env
    from .notebook import setup

    loaded = setup(args.model, args.kernel, args.device)
    result = measure_overhead(loaded, args.prompt_tokens, args.new_tokens, args.rounds, args.batch)
    result["env"] = collect_env(loaded.device)
    result["model"] = str(loaded.path)
    med, pct = result["median_s"], result["overhead_pct"]
    print(f"{result['env']['device_name']} · kernel {loaded.kernel} · {args.prompt_tokens} prompt + "
          f"{args.new_tokens} new tokens · batch {args.batch} · median of {args.rounds} interleaved rounds")
    print(f"  plain model.generate          {med['plain_s'] * 1e3:9.1f} ms   (spread {result['spread_pct']:.1f}%)")
    print(f"  instrumented, timing only     {med['timing_only_s'] * 1e3:9.1f} ms   call {pct['timing_only_call']:+.2f}%"
          f"   loop {pct['timing_only_loop']:+.2f}%")
    print(f"  instrumented, with logprobs   {med['full_s'] * 1e3:9.1f} ms   call {pct['with_logprobs_call']:+.2f}%"
          f"   loop {pct['with_logprobs_loop']:+.2f}%")
    print("  (loop: start to last token, against the plain call; call: the whole instrumented call)")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
