"""A HumanEval-shaped workload, timed: today's one-at-a-time path against the workload runner.

`python -m workbench bench-workload --model M --kernel K --device D`: HumanEval's prompts in the
authors' format (humaneval/protocol.py), each row ending after as many tokens as its canonical
solution has when tokenized (eos is banned until then, so every path does the same work: the
synthetic model never emits eos, the demo model would). For each path it prints the useful
tokens per second (tokens before each row's end; padding and rows run past their end do not
count), the total time and the time per problem:

- "one at a time, eager": `generate` per prompt through transformers' `generate`, the path
  `humaneval.run` took before the runner. On the first `--eager-limit` problems only (it is
  slow); its total for all problems is projected from them, and says so.
- "batch API" (`--batch-api B ...`): `generate` on fixed batches; every row runs to its batch's
  longest, and the tokens past a row's own end are not useful.
- "runner" at each `--batch-sizes`: `run_workload` (continuous batching, `--decode-mode`), and
  with each `--dense-prefill-rows` (WorkloadConfig.dense_prefill_rows; 0 is the plain runner) and
  each `--refill-min` (WorkloadConfig.refill_min); with `--decode-mode fast`, for each
  `--fast-config` given (the flag may be repeated: every set runs in turn, in one process);
  `--repeats N` runs each of these rows N times in a row, for the spread of one machine's runs.

Then the runner's greedy answers are compared with the one-at-a-time answers on the problems
both ran (answer_equality.py): the share identical and, for the others, the first step that
differs and whether it is a near tie.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ..cache import atomic_write_json
from ..environment import collect_env
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.fast import FastConfig, dense_prefill_for, fast_config, parse_fast_config, set_fast_config
from ..generation.generate import generate
from ..generation.inputs import input_device
from ..generation.workload import WorkItem, run_workload, slot_cache_length
from ..humaneval.protocol import build_prompt, load_problems
from ..measure import median, synchronize
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model
from ..prompts.encoding import encode_prompt
from ..prompts.tokenizer import load_tokenizer
from .answer_equality import compare_answers


def humaneval_workload(tokenizer, limit: int | None = None, cap: int | None = None) -> tuple[list[str], list[WorkItem]]:
    """(task ids, items): each problem's prompt, its row ending after its canonical solution's tokens
    (at most `cap`, for a quick run)."""
    problems = list(load_problems().values())[:limit]
    items = []
    for p in problems:
        n = max(1, len(tokenizer.encode(p.canonical_solution, add_special_tokens=False)))
        n = min(n, cap) if cap else n
        items.append(WorkItem(prompt=build_prompt(p), max_new_tokens=n, min_new_tokens=n))
    return [p.task_id for p in problems], items


def _timed(device, fn):
    synchronize(device)
    started = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - started


def _row(path: str, batch: int | None, records, useful: int, seconds: float, problems: int, **extra) -> dict:
    modes = sorted({r.decode_mode for r in records})
    notes = sorted({r.decode_note for r in records if r.decode_note})
    steps = [r.token_ms_p50 for r in records if r.token_ms_p50 is not None]
    return {"path": path, "batch_size": batch, "problems": problems, "useful_tokens": useful, "total_s": seconds,
            "useful_tokens_per_s": useful / seconds, "s_per_problem": seconds / problems, "modes_ran": modes,
            "notes": notes[:3], "token_ms_p50": median(steps) if steps else None, **extra}


def one_at_a_time(loaded, items: list[WorkItem], base: DecodeConfig) -> tuple[dict, list]:
    """Today's path: `generate` per prompt, eager."""
    device = input_device(loaded.model)

    def run():
        return [generate(loaded, it.prompt, base.replace(max_new_tokens=it.max_new_tokens,
                                                          min_new_tokens=it.min_new_tokens),
                         format="raw", logprobs=False, decode_mode="eager") for it in items]
    records, seconds = _timed(device, run)
    return _row("one at a time, eager", 1, records, sum(r.new_tokens for r in records), seconds, len(items)), records


def batch_api(loaded, items: list[WorkItem], base: DecodeConfig, batch: int, decode_mode: str) -> dict:
    """`generate` on fixed batches: rows run to the batch's longest; only each row's own tokens count."""
    device = input_device(loaded.model)
    chunks = [items[i:i + batch] for i in range(0, len(items), batch)]

    def run():
        records = []
        for chunk in chunks:
            longest = max(it.max_new_tokens for it in chunk)
            config = base.replace(max_new_tokens=longest, min_new_tokens=longest)
            records += generate(loaded, [it.prompt for it in chunk], config, format="raw", logprobs=False,
                                decode_mode=decode_mode)
        return records
    records, seconds = _timed(device, run)
    useful = sum(min(r.new_tokens, it.max_new_tokens) for r, it in zip(records, items))
    row_steps = sum(len(c) * max(it.max_new_tokens for it in c) for c in chunks)
    return _row("batch API (rows run to the longest)", batch, records, useful, seconds, len(items),
                useful_row_step_share=useful / row_steps)


def runner(loaded, items: list[WorkItem], base: DecodeConfig, batch: int, decode_mode: str,
           dense_prefill_rows: int = 0, refill_min: int | None = None) -> tuple[dict, list]:
    device = input_device(loaded.model)
    extra = {}
    if dense_prefill_rows:  # its packed copy is read from the checkpoint once per model: timed apart, as a load is
        _, extra["dense_prefill_build_s"] = _timed(device, lambda: dense_prefill_for(loaded, dense_prefill_rows))
    if decode_mode == "fast":  # its weights, torch.compile and graphs: once per process and shape, timed apart,
        # on the timed run's decoder (its cache length; a decoder of another length is made, compiled and captured
        # anew), with every prompt's prefill (the prefill's shapes)
        length = slot_cache_length(loaded, items, base, format="raw")
        warm = [WorkItem(prompt=it.prompt, max_new_tokens=2, min_new_tokens=2) for it in items]
        _, extra["fast_warmup_s"] = _timed(device, lambda: run_workload(loaded, warm, base, format="raw",
                                                                        batch_size=batch, decode_mode="fast",
                                                                        progress=False, cache_length=length,
                                                                        refill_min=refill_min))
        extra["fast_config"] = dataclasses.asdict(fast_config(loaded))
    records, seconds = _timed(device, lambda: run_workload(loaded, items, base, format="raw", batch_size=batch,
                                                            decode_mode=decode_mode, progress=False,
                                                            dense_prefill_rows=dense_prefill_rows,
                                                            refill_min=refill_min))
    passes = {r.queued_s: r.prefill_s for r in records}  # the prompts of one prefill pass share its start
    path = f"runner, dense prefill from {dense_prefill_rows} rows" if dense_prefill_rows else "runner"
    path += f", refill at {refill_min} free" if refill_min else ""
    return _row(path, batch, records, sum(r.new_tokens for r in records), seconds, len(items),
                mean_ttft_s=sum(r.ttft_s for r in records) / len(records), prefill_passes=len(passes),
                prefill_s_total=sum(passes.values()), dense_prefill_rows=dense_prefill_rows,
                refill_min=refill_min, **extra), records


def bench_workload(loaded, batch_sizes: list[int], *, limit: int | None = None, eager_limit: int = 16,
                   decode_mode: str = "auto", batch_api_sizes: tuple[int, ...] = (), budget_s: float | None = None,
                   cap: int | None = None, dense_prefill_rows: tuple[int, ...] = (0,),
                   refill_mins: tuple[int | None, ...] = (None,), fast_configs: tuple[FastConfig, ...] = (),
                   repeats: int = 1, log=print) -> dict:
    """Every path on the same workload, in one process; see the module's docstring.

    `fast_configs`: with decode_mode="fast", run every batch size with each of these in turn (each
    makes its decoder, compiles and captures again, in the warm-up that is timed apart); empty: the
    one `loaded` has. `refill_mins`: WorkloadConfig.refill_min values (None: the runner's default).
    `repeats`: each runner row that many times in a row (the spread of one machine's runs; the
    answers are compared with one at a time on the first)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats={repeats!r} is invalid: allowed an integer >= 1")
    started = time.perf_counter()
    base = DecodeConfig.greedy()
    task_ids, items = humaneval_workload(loaded.tokenizer, limit, cap)
    n = len(items)
    log(f"{collect_env(input_device(loaded.model))['device_name']} · kernel {loaded.kernel} · {n} HumanEval prompts, "
        f"{sum(it.max_new_tokens for it in items)} useful tokens (each row ends at its canonical solution's length)")
    rows, equality = [], {}
    eager_items = items[:eager_limit]
    row, eager_records = one_at_a_time(loaded, eager_items, base)
    row["projected_total_s_all"] = row["s_per_problem"] * n
    row["subset"] = f"first {len(eager_items)} of {n} problems"
    rows.append(row)
    log(format_row(row))
    for b in batch_api_sizes:
        rows.append(batch_api(loaded, items, base, b, decode_mode))
        log(format_row(rows[-1]))
    ids = [encode_prompt(loaded.tokenizer, [{"role": "human", "content": it.prompt}], format="raw")
           for it in eager_items]
    configs = list(fast_configs) or [None]
    for fc, b, dense, refill, run in [(f, b, d, r, n) for f in configs for b in batch_sizes for d in dense_prefill_rows
                                      for r in refill_mins for n in range(1, repeats + 1)]:
        if fc is not None and fast_config(loaded) != fc:
            set_fast_config(loaded, fc)
        what = f"batch size {b}" + (f" with dense prefill from {dense} rows" if dense else "") \
            + (f", refill at {refill} free" if refill else "") + (f", fast: {fc.describe()}" if fc else "") \
            + (f", run {run} of {repeats}" if repeats > 1 else "")
        if budget_s is not None and time.perf_counter() - started > budget_s:
            log(f"budget of {budget_s:.0f} s spent: {what} not run")
            continue
        try:
            row, records = runner(loaded, items, base, b, decode_mode, dense, refill)
        except Exception as e:  # one batch size failing (memory, a kernel) must not lose the others' rows
            rows.append({"path": "runner", "batch_size": b, "dense_prefill_rows": dense, "refill_min": refill,
                         "fast_config": dataclasses.asdict(fc) if fc else None, "run": run,
                         "error": f"{type(e).__name__}: {e}"})
            log(f"runner, {what}: {rows[-1]['error']}")
            continue
        row["speedup_vs_one_at_a_time"] = row["useful_tokens_per_s"] / rows[0]["useful_tokens_per_s"]
        if repeats > 1:
            row["path"] += f" (run {run} of {repeats})"
            row["run"] = run
        rows.append(row)
        log(format_row(row))
        if run > 1:
            continue
        eq = compare_answers(loaded, ids, [r.token_ids for r in eager_records],
                             [r.token_ids for r in records[: len(eager_items)]])
        key = str(b) + (f"+dense{dense}" if dense else "") + (f"+refill{refill}" if refill else "")
        equality[key + (f"+fast{configs.index(fc)}" if fc else "")] = eq.to_dict()
        log(f"    answers equal to one at a time: {eq.identical}/{eq.answers}"
            + "".join(f"; problem {d['index']} from step {d['step']} (gap {d['logit_gap']}, tolerance "
                      f"{d['tolerance']}, near tie: {d['near_tie']})" for d in eq.divergences[:5]))
    return {"workload": {"problems": n, "task_ids": task_ids, "cap": cap,
                         "budgets": [it.max_new_tokens for it in items],
                         "useful_tokens_all": sum(it.max_new_tokens for it in items)},
            "rows": rows, "equality": equality, "decode_mode": decode_mode, "kernel": getattr(loaded, "kernel", None),
            "wall_s": time.perf_counter() - started}


def format_row(row: dict) -> str:
    text = (f"{row['path']:<38} batch {row['batch_size'] or '-':>4}  "
            f"{row['useful_tokens_per_s']:9.1f} useful tokens/s  "
            f"{row['total_s']:8.2f} s total  {row['s_per_problem']:7.3f} s per problem  ({row['problems']} problems, "
            f"{row['useful_tokens']} tokens; ran {'/'.join(row['modes_ran'])}")
    if row.get("speedup_vs_one_at_a_time"):
        text += f"; {row['speedup_vs_one_at_a_time']:.1f}x one at a time"
    if row.get("projected_total_s_all"):
        text += f"; all problems projected {row['projected_total_s_all']:.1f} s"
    if row.get("token_ms_p50"):
        text += f"; median step {row['token_ms_p50']:.1f} ms"
    if row.get("prefill_passes"):
        text += f"; {row['prefill_passes']} prefill passes, {row['prefill_s_total']:.2f} s"
    if row.get("fast_warmup_s") is not None:
        text += f"; a warm-up workload of {row['fast_warmup_s']:.1f} s before (compiles), not counted"
    if row.get("dense_prefill_build_s") is not None:
        text += f"; its dense copy read in {row['dense_prefill_build_s']:.1f} s before, not counted"
    return text + ")" + "".join(f"\n    note: {n}" for n in row["notes"])


def main(argv=None) -> int:
    """Time today's one-at-a-time path and the workload runner on HumanEval's prompts."""
    parser = argparse.ArgumentParser(prog="workbench bench-workload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="checkpoint folder, or 'demo'")
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-mode", default="auto", help="the runner's mode: auto, graph, static, fast or eager")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--limit", type=int, help="the first N problems (default: all 164)")
    parser.add_argument("--eager-limit", type=int, default=16, help="problems run one at a time (default 16)")
    parser.add_argument("--batch-api", type=int, nargs="*", default=[], help="batch sizes for the batch API")
    parser.add_argument("--budget-s", type=float, help="start no runner batch size after this many seconds")
    parser.add_argument("--cap", type=int, help="end every row after at most this many tokens (a quick run)")
    parser.add_argument("--tokenizer", help="encode with this tokenizer.model instead of the checkpoint's (a synthetic "
                                            "checkpoint's is a stand-in: the real one gives the real lengths)")
    parser.add_argument("--dense-prefill-rows", type=int, nargs="+", default=[0],
                        help="run each batch size with each of these (0: the loaded kernel's prefill; N: passes of "
                             "at least N rows dequantize once and run cuBLAS, WorkloadConfig.dense_prefill_rows)")
    parser.add_argument("--fast-config", nargs="+", metavar="FIELD=VALUE", action="append", default=[],
                        help="with --decode-mode fast: the FastConfig fields, e.g. fuse=1 compile=1 "
                             "dense_prefill_rows=32 store_in_rotary=1 (generation/fast.py); given again, "
                             "every batch size runs with each set in turn")
    parser.add_argument("--refill-min", type=int, nargs="+", default=None,
                        help="run each batch size with each of these WorkloadConfig.refill_min values (free "
                             "slots that start a refill; default: the runner's, an eighth of the batch)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each runner row this many times in a row (the spread of one machine's runs)")
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give an integer >= 1")

    quiet()
    loaded = load_model(resolve_model(args.model), kernel=args.kernel, device=args.device)
    if args.tokenizer:
        loaded.tokenizer = load_tokenizer(args.tokenizer)
    if args.fast_config and args.decode_mode != "fast":
        parser.error(f"--fast-config is for --decode-mode fast, not {args.decode_mode!r}")
    try:
        fast_configs = tuple(parse_fast_config(pairs) for pairs in args.fast_config)
    except ConfigError as e:
        parser.error(str(e))
    if args.refill_min and any(r < 1 or r > max(args.batch_sizes) for r in args.refill_min):
        parser.error(f"--refill-min {args.refill_min}: each must be in [1, the batch size]")
    result = bench_workload(loaded, args.batch_sizes, limit=args.limit, eager_limit=args.eager_limit,
                            decode_mode=args.decode_mode, batch_api_sizes=tuple(args.batch_api), budget_s=args.budget_s,
                            cap=args.cap, dense_prefill_rows=tuple(args.dense_prefill_rows),
                            refill_mins=tuple(args.refill_min or [None]), fast_configs=fast_configs,
                            repeats=args.repeats)
    result["env"] = collect_env(input_device(loaded.model))
    result["model"] = str(loaded.path)
    result["load"] = loaded.load_record.to_dict()
    result["tokenizer"] = args.tokenizer or "the checkpoint's"
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
