"""A whole HumanEval run: generate, score, and save, resumable task by task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..cache import atomic_write_json
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.generate import generate
from .protocol import CARD_PASS_AT_1, HumanEvalError, build_prompt, extract_completion, load_problems
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
    """

    config = config if config is not None else DecodeConfig.greedy()
    problems = load_problems()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(problems)):
        raise ConfigError(f"limit must be None or an integer in [1, {len(problems)}], got {limit!r}")
    chosen = list(problems.values())[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GENERATIONS_FILE
    config_dict = _as_json(config.to_dict())
    done = _read_generations(path)
    for task_id, line in done.items():
        if line["config"] != config_dict:
            raise HumanEvalError(
                f"{path} holds generations made with another DecodeConfig ({task_id}: {line['config']}); "
                f"use a new out folder, or the same config ({config_dict}) to resume"
            )

    with open(path, "a", encoding="utf-8") as f:
        for problem in chosen:
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

    completions = {p.task_id: [done[p.task_id]["completion"]] for p in chosen}
    report = evaluate(completions, timeout_s=timeout_s, workers=workers, limits=limits, problems=problems)
    first = done[chosen[0].task_id]["record"]
    atomic_write_json(
        out / SUMMARY_FILE,
        {
            "pass_at_1": report.pass_at_k(1),
            "card_pass_at_1": CARD_PASS_AT_1,  # the card: 4-bit model, greedy, all 164 problems
            "n_tasks": len(chosen),
            "counts": report.counts(),
            "stop_reasons": _count(done[p.task_id]["stop_reason"] for p in chosen),
            "config": config_dict,
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
