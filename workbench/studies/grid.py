"""The decoding grid behind notebook 03: temperature x top-p, with diversity and pass rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..generation.config import DecodeConfig
from ..generation.workload import WORKLOAD_MODES, WorkItem, run_workload
from ..humaneval.protocol import build_prompt, extract_completion, load_problems
from ..humaneval.runner import sample_seed
from ..humaneval.score import evaluate
from .answers import distinct_n, parses


@dataclass(frozen=True)
class DecodingGridConfig:
    """What notebook 03 sweeps: one field per entry of its parameters cell (MODEL, KERNEL, DEVICE
    and OUTPUT_DIR apart), same names in lower case."""

    temperatures: tuple[float, ...] = (0.1, 0.7, 1.2)  # < 1 sharpens the distribution, > 1 flattens it
    top_ps: tuple[float, ...] = (0.5, 0.95)  # nucleus sampling mass
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0  # 1.0: off
    samples: int = 2  # seeded samples per grid point and prompt
    n_prompts: int = 2  # HumanEval prompts used
    max_new_tokens: int = 40
    seed: int = 0
    pass_rate: bool = False  # also score each point's samples with HumanEval's tests (slower)
    batch_size: int = 16  # samples decoded together on the workload runner
    decode_mode: str = "auto"  # the runner's: "auto" | "graph" | "static" | "eager"

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"DecodingGridConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        for name in ("temperatures", "top_ps"):
            if isinstance(getattr(self, name), list):  # lists from a notebook's parameters cell
                object.__setattr__(self, name, tuple(getattr(self, name)))
            if not (isinstance(getattr(self, name), tuple) and getattr(self, name)):
                bad(name, "a non-empty list of numbers")
        if self.decode_mode not in WORKLOAD_MODES:
            bad("decode_mode", ", ".join(WORKLOAD_MODES))
        for name in ("samples", "n_prompts", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                bad(name, "an integer >= 1")
        for t, p in ((t, p) for t in self.temperatures for p in self.top_ps):
            self.point(t, p)  # DecodeConfig names a bad temperature, top_p, top_k, ... itself

    def point(self, temperature: float, top_p: float) -> DecodeConfig:
        """The sampling settings of one grid point."""
        return DecodeConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=self.top_k,
                            repetition_penalty=self.repetition_penalty, max_new_tokens=self.max_new_tokens,
                            seed=self.seed)


@dataclass
class DecodingGrid:
    """The records of a temperature x top-p sweep and one row of metrics per grid point."""

    frame: object  # pandas DataFrame: temperature, top_p, distinct_2, mean_logprob, parses_share, ...
    records: list
    problems: list = field(default_factory=list)  # the HumanEval problems it sampled

    def headline(self) -> dict:
        """The numbers notebook 03 puts in the report's index."""
        f = self.frame
        return {"grid_points": len(f), "best_parses_share": float(f["parses_share"].max()),
                "distinct_2_range": [round(float(f["distinct_2"].min()), 3), round(float(f["distinct_2"].max()), 3)]}

    def data(self) -> dict:
        return {"grid": self.frame.to_dict(orient="records")}


def decoding_grid(loaded, config: DecodingGridConfig = DecodingGridConfig(), problems=None) -> DecodingGrid:
    """Sample every problem `config.samples` times at every grid point, on the workload runner;
    the problems are the first `config.n_prompts` of HumanEval unless given. Each sample has its
    own seed, as humaneval.run draws them, so it does not depend on the batch it ran in."""
    import pandas as pd

    problems = list(problems) if problems is not None else list(load_problems().values())[:config.n_prompts]
    rows, records = [], []
    for t in config.temperatures:
        for p in config.top_ps:
            settings = config.point(t, p)
            items = [WorkItem(prompt=build_prompt(problem), seed=sample_seed(settings, problem.task_id, i))
                     for problem in problems for i in range(config.samples)]
            point = run_workload(loaded, items, settings, format="raw", batch_size=config.batch_size,
                                 decode_mode=config.decode_mode, logprobs=True, progress=False)
            records += point
            lps = [lp for r in point for lp in r.logprobs]
            row = {"temperature": t, "top_p": p,
                   "distinct_2": distinct_n([r.token_ids for r in point], 2),
                   "mean_logprob": sum(lps) / len(lps) if lps else float("nan"),
                   "parses_share": sum(parses(r.text) for r in point) / len(point),
                   "mean_new_tokens": sum(r.new_tokens for r in point) / len(point)}
            if config.pass_rate:
                row["pass_rate"] = _pass_rate(problems, point, config.samples)
            rows.append(row)
    return DecodingGrid(pd.DataFrame(rows), records, problems)


def _pass_rate(problems, records, samples: int) -> float:
    completions = {}
    for i, problem in enumerate(problems):
        batch = records[i * samples:(i + 1) * samples]
        completions[problem.task_id] = [extract_completion(r.text) for r in batch]
    return evaluate(completions).pass_at_k(1)
