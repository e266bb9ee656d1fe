"""The decoding grid behind notebook 03: temperature x top-p, with diversity and pass rates.
"""

from __future__ import annotations

from ..generation.config import DecodeConfig
from ..generation.generate import generate
from ..humaneval.protocol import build_prompt, extract_completion
from ..humaneval.score import evaluate
from .answers import distinct_n, parses


class DecodingGrid:
    """The records of a temperature x top-p sweep and one row of metrics per grid point."""

    def __init__(self, frame, records):
        self.frame, self.records = frame, records


def decoding_grid(loaded, problems, temperatures, top_ps, *, samples=2, top_k=0, repetition_penalty=1.0,
                  max_new_tokens=40, seed=0, pass_rate=False) -> DecodingGrid:
    """Sample every problem `samples` times (one seeded batch) at every grid point."""
    import pandas as pd


    rows, records = [], []
    for t in temperatures:
        for p in top_ps:
            config = DecodeConfig(do_sample=True, temperature=t, top_p=p, top_k=top_k,
                                  repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed)
            point = []
            for problem in problems:
                point += generate(loaded, [build_prompt(problem)] * samples, config, format="raw")
            records += point
            lps = [lp for r in point for lp in r.logprobs]
            row = {"temperature": t, "top_p": p,
                   "distinct_2": distinct_n([r.token_ids for r in point], 2),
                   "mean_logprob": sum(lps) / len(lps) if lps else float("nan"),
                   "parses_share": sum(parses(r.text) for r in point) / len(point),
                   "mean_new_tokens": sum(r.new_tokens for r in point) / len(point)}
            if pass_rate:
                row["pass_rate"] = _pass_rate(problems, point, samples)
            rows.append(row)
    return DecodingGrid(pd.DataFrame(rows), records)


def _pass_rate(problems, records, samples: int) -> float:

    completions = {}
    for i, problem in enumerate(problems):
        batch = records[i * samples:(i + 1) * samples]
        completions[problem.task_id] = [extract_completion(r.text) for r in batch]
    return evaluate(completions).pass_at_k(1)
