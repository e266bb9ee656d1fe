"""A whole HumanEval run: generate, score, and save, resumable task by task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..cache import atomic_write_json
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.generate import generate
from .protocol import CARD_PASS_AT_1, HumanEvalError, Problem, build_prompt, extract_completion, load_problems
from .sandbox import SandboxLimits
from .score import DEFAULT_TIMEOUT_S, EvalReport, evaluate

# --- Generate, extract, evaluate ---------------------------------------------------------------

GENERATIONS_FILE = "generations.jsonl"
SUMMARY_FILE = "humaneval.json"


def run(
    loaded,
    config=None,
    limit: int | None = None,
    *,
    out: str | os.PathLike,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    limits: SandboxLimits | None = None,
) -> EvalReport:
    """Generate an answer for each problem, extract its completion, score them all; resumable.

    config: a DecodeConfig; default DecodeConfig.greedy() (greedy, at most 512 new tokens, as the
    authors ran it). limit: the first `limit` problems only. out: a folder that receives
    generations.jsonl (one line per finished task, appended and flushed as each one ends, so a
    rerun with the same folder skips those) and humaneval.json (pass@1, counts by status, the
    config, the card's 73.8% beside it, and every completion's result).

    Its two halves are `generate_answers` and `score_answers`: a sweep (report/sweep.py) runs the
    first on shards of the problems on several machines, merges their lines into one
    generations.jsonl in task order, then runs `score_answers` on it.
    """
    config = config if config is not None else DecodeConfig.greedy()
    generate_answers(loaded, config, select_problems(limit), out=out)
    return score_answers(out, limit, timeout_s=timeout_s, workers=workers, limits=limits)


def select_problems(limit: int | None = None) -> list[Problem]:
    """The first `limit` problems (all 164 when None), in task order."""
    problems = load_problems()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(problems)):
        raise ConfigError(f"limit must be None or an integer in [1, {len(problems)}], got {limit!r}")
    return list(problems.values())[:limit]


def generate_answers(loaded, config: DecodeConfig, problems: Sequence[Problem], *,
                     out: str | os.PathLike) -> dict[str, dict]:
    """Append a generations.jsonl line to `out` for each of `problems` that has none yet.

    Returns every finished line of the file by task id. Lines made with another DecodeConfig are
    refused, so one file never mixes two configs.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GENERATIONS_FILE
    config_dict = _as_json(config.to_dict())
    done = _read_generations(path)
    _check_one_config(path, done.values(), config_dict)

    with open(path, "a", encoding="utf-8") as f:
        for problem in problems:
            if problem.task_id in done:
                continue
            # logprobs=False: scoring needs only the text, and per-token alternatives for 164
            # answers of up to 512 tokens would make the file tens of megabytes.
            record = generate(loaded, build_prompt(problem), config=config, format="raw", logprobs=False)
            line = {
                "task_id": problem.task_id,
                "answer": record.text,
                "completion": extract_completion(record.text),
                "stop_reason": record.stop_reason,
                "new_tokens": record.new_tokens,
                "config": config_dict,
                "record": record.to_dict(),
            }
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a finished task survives a crash of the whole machine
            done[problem.task_id] = line
    return done


def score_answers(
    out: str | os.PathLike,
    limit: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    limits: SandboxLimits | None = None,
) -> EvalReport:
    """Score the completions of the first `limit` problems in out/generations.jsonl; write out/humaneval.json."""
    problems = load_problems()
    chosen = select_problems(limit)
    path = Path(out) / GENERATIONS_FILE
    done = _read_generations(path)
    missing = [p.task_id for p in chosen if p.task_id not in done]
    if missing:
        raise HumanEvalError(f"{path} has no answer for {len(missing)} of the first {len(chosen)} problems "
                             f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); generate them first")
    lines = [done[p.task_id] for p in chosen]
    _check_one_config(path, lines, lines[0]["config"])
    completions = {p.task_id: [done[p.task_id]["completion"]] for p in chosen}
    report = evaluate(completions, timeout_s=timeout_s, workers=workers, limits=limits, problems=problems)
    first = lines[0]["record"]
    atomic_write_json(
        Path(out) / SUMMARY_FILE,
        {
            "pass_at_1": report.pass_at_k(1),
            "card_pass_at_1": CARD_PASS_AT_1,  # the card: 4-bit model, greedy, all 164 problems
            "n_tasks": len(chosen),
            "counts": report.counts(),
            "stop_reasons": _count(line["stop_reason"] for line in lines),
            "config": lines[0]["config"],
            "limit": limit,
            "model": first.get("model"),
            "checkpoint_hash": first.get("checkpoint_hash"),
            "kernel": first.get("kernel"),
            "env": first.get("env"),
            "generations": GENERATIONS_FILE,
            "report": report.to_dict(),
        },
    )
    return report


def _check_one_config(path: Path, lines, config_dict: dict) -> None:
    """Refuse lines made with another DecodeConfig than `config_dict`."""
    for line in lines:
        if line["config"] != config_dict:
            raise HumanEvalError(
                f"{path} holds generations made with another DecodeConfig ({line['task_id']}: {line['config']}); "
                f"use a new out folder, or the same config ({config_dict}) to resume"
            )


def _as_json(value):
    """`value` as it reads back from JSON (tuples become lists), so that comparisons hold."""
    return json.loads(json.dumps(value))


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def _read_generations(path: Path) -> dict[str, dict]:
    """The finished tasks in generations.jsonl; a half-written last line (a crash) is cut off."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    done: dict[str, dict] = {}
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
            done[line["task_id"]] = line
        except (ValueError, KeyError, TypeError):
            if is_last:
                break
            raise HumanEvalError(f"{path} line {number} is not a generation record; fix or remove the file") from None
        good_end += len(raw) + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done
