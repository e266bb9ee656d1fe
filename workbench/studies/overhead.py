"""`python -m workbench bench-overhead`: what instrumentation costs.

Each round runs the same prompts, forced to the same number of new tokens, four ways: plain
(transformers' `model.generate`, or for decode_mode "static"/"graph" the workbench's own static
loop with a clock that records nothing and no logits kept), the instrumented `generate` with
timing only, the instrumented `generate` with log-probabilities, and plain again. The order is
reversed every other round, so a machine that drifts during a round favours no variant. Each
instrumented run is compared with the mean of the two plain runs of its round, and the median of
those paired ratios is the overhead; the second plain run against the first (an A/A comparison)
shows how much the machine itself moves, which is the smallest overhead the run can resolve.
Beside them, `marking_cost_us` times the marks alone (what timing adds to every step), which
stays measurable where a host-bound decode loop is too noisy to show it in whole runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from ..cache import atomic_write_json
from ..environment import collect_env
from ..errors import ConfigError
from ..generation.config import DecodeConfig, check_mode
from ..generation.eager import StepMarks
from ..generation.generate import generate_ids
from ..generation.inputs import input_device, left_pad
from ..generation.static import static_generate
from ..measure import Clock, NullClock, median, synchronize
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model
from ..prompts.encoding import prompt_ids_of_length

VARIANTS = ("plain", "timing_only", "with_logprobs", "plain_again")


def _quartiles(values: list[float]) -> dict:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": q2, "q1": q1, "q3": q3}


def marking_cost_us(device, decode_mode: str = "eager", steps: int = 2000) -> float:
    """Host time of what the instrumentation adds to one decode step, in microseconds: for
    eager, the forward hook's mark and the stopping criterion's mark; for static and graph,
    the one mark. Measured directly, so it holds where whole runs are too noisy to show it."""
    import torch


    clock = Clock(device)
    criterion = StepMarks(clock, 1, device)
    ids = torch.zeros((1, 8), dtype=torch.long, device=device)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        if decode_mode == "eager":
            clock.mark()  # the forward hook
            criterion(ids, None)
        else:
            clock.mark()
    elapsed = time.perf_counter() - t0
    clock.seconds()  # read the events, as a generation does once at its end
    return 1e6 * elapsed / steps


def measure_overhead(loaded, prompt_tokens: int = 64, new_tokens: int = 64, rounds: int = 10,
                     batch: int = 1, decode_mode: str = "eager") -> dict:
    """Paired, order-balanced timings of plain and instrumented generation (see the module's doc)."""
    import torch


    check_mode(decode_mode)
    if not (isinstance(rounds, int) and rounds >= 2):
        raise ConfigError(f"rounds={rounds!r} is invalid: allowed an integer >= 2 (pairs need at least two)")
    device = input_device(loaded.model)
    ids = [prompt_ids_of_length(loaded.tokenizer, prompt_tokens)] * batch
    config = DecodeConfig.forced(new_tokens)
    gen_config = config.generation_config(loaded.tokenizer)
    x, mask = (t.to(device) for t in left_pad(ids, loaded.tokenizer.pad_token_id))

    def plain() -> tuple[float, float, list[int]]:
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if decode_mode == "eager":
                out = loaded.model.generate(input_ids=x, attention_mask=mask, generation_config=gen_config)
                new = out[:, x.shape[1]:]
            else:
                new = static_generate(loaded, x, mask, config, NullClock(), decode_mode, keep_logits=False).sequences
        synchronize(device)
        seconds = time.perf_counter() - t0
        return seconds, seconds, new[0].tolist()

    def instrumented(logprobs: bool) -> tuple[float, float, list[int]]:
        synchronize(device)
        t0 = time.perf_counter()
        rec = generate_ids(loaded, ids, config, logprobs=logprobs, decode_mode=decode_mode)[0]
        synchronize(device)
        if rec.decode_mode != decode_mode:
            raise ConfigError(f"asked for decode_mode={decode_mode!r} but {rec.decode_mode!r} ran "
                              f"({rec.decode_note}): the comparison would not be like with like")
        return time.perf_counter() - t0, rec.token_times_s[-1], rec.token_ids

    run = {"plain": plain, "plain_again": plain,
           "timing_only": lambda: instrumented(False), "with_logprobs": lambda: instrumented(True)}
    # Warm up every path: kernels tuned, allocator grown, the graph captured, outside the numbers.
    reference = plain()[2]
    instrumented(True)
    call = {v: [] for v in VARIANTS}  # wall seconds of the whole call
    loop = {v: [] for v in VARIANTS}  # instrumented: start to the last token, from its own marks
    same = {v: 0 for v in VARIANTS}
    for r in range(rounds):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            total, span, new = run[v]()
            call[v].append(total)
            loop[v].append(span)
            same[v] += new == reference

    base = [(a + b) / 2 for a, b in zip(call["plain"], call["plain_again"])]

    def paired_pct(values: list[float], against: list[float]) -> dict:
        return {k: 100 * v for k, v in _quartiles([x / b - 1 for x, b in zip(values, against)]).items()}

    per_token_ms = {v: 1e3 * median(call[v]) / new_tokens for v in VARIANTS}
    marks_us = marking_cost_us(device, decode_mode)
    return {
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "rounds": rounds, "batch": batch,
        "decode_mode": decode_mode, "kernel": loaded.kernel,
        "plain_is": "model.generate" if decode_mode == "eager"
        else f"static_generate({decode_mode!r}) without marks or logits",
        "runs_s": call, "loop_runs_s": {v: loop[v] for v in ("timing_only", "with_logprobs")},
        "median_s": {v: median(call[v]) for v in VARIANTS},
        "call_ms_per_new_token": per_token_ms,
        "overhead_pct": {
            "timing_only_call": paired_pct(call["timing_only"], base),
            "with_logprobs_call": paired_pct(call["with_logprobs"], base),
            "timing_only_loop": paired_pct(loop["timing_only"], base),
            "with_logprobs_loop": paired_pct(loop["with_logprobs"], base),
        },
        "plain_a_a_pct": paired_pct(call["plain_again"], call["plain"]),
        "marking_us_per_token": marks_us,
        "marking_pct_of_plain_token": 100 * marks_us / 1e3 / per_token_ms["plain"],
        "plain_spread_pct": 100 * (max(call["plain"]) - min(call["plain"])) / median(call["plain"]),
        "same_tokens_as_first_plain_run": {v: f"{same[v]}/{rounds}" for v in VARIANTS},
    }


def format_overhead(result: dict) -> str:
    """The benchmark's printout: one line per variant, paired medians with their quartiles."""
    def pct(d: dict) -> str:
        return f"{d['median']:+6.2f}%  [{d['q1']:+.2f}, {d['q3']:+.2f}]"

    o, ms = result["overhead_pct"], result["call_ms_per_new_token"]
    n = result["new_tokens"]
    lines = [
        f"{result['env']['device_name']} · kernel {result['kernel']} · decode_mode {result['decode_mode']} · "
        f"{result['prompt_tokens']} prompt + {result['new_tokens']} new tokens · batch {result['batch']} · "
        f"{result['rounds']} rounds, order reversed every other round",
        f"  plain = {result['plain_is']}; overhead = median over rounds of (run / mean of the round's two plain "
        "runs - 1) [quartiles]",
        f"  plain                        {ms['plain'] * n:9.1f} ms  ({ms['plain']:.2f} ms per new token)",
        f"  plain again (A/A noise)      {ms['plain_again'] * n:9.1f} ms  {pct(result['plain_a_a_pct'])}",
        f"  instrumented, timing only    {ms['timing_only'] * n:9.1f} ms  call {pct(o['timing_only_call'])}"
        f"   loop {pct(o['timing_only_loop'])}",
        f"  instrumented, with logprobs  {ms['with_logprobs'] * n:9.1f} ms  call {pct(o['with_logprobs_call'])}"
        f"   loop {pct(o['with_logprobs_loop'])}",
        "  (call: the whole instrumented call, records built; loop: its start to its last token, from its own marks)",
        f"  the marks themselves: {result['marking_us_per_token']:.1f} us of host time per token = "
        f"{result['marking_pct_of_plain_token']:.3f}% of a plain token",
        f"  same tokens as the first plain run: {result['same_tokens_as_first_plain_run']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Measure instrumentation overhead against plain generation."""
    parser = argparse.ArgumentParser(prog="workbench bench-overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="checkpoint folder, or 'demo'")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-mode", default="eager", help="eager (against model.generate), static or graph")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)


    quiet()
    loaded = load_model(resolve_model(args.model), kernel=args.kernel, device=args.device)
    result = measure_overhead(loaded, args.prompt_tokens, args.new_tokens, args.rounds, args.batch, args.decode_mode)
    result["env"] = collect_env(loaded.device)
    result["model"] = str(loaded.path)
    print(format_overhead(result))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
