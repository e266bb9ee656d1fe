"""Measures of what the model says: next-token distributions, KL divergence between prompt
formats, whether an answer is code, and how diverse a set of samples is."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import asdict, dataclass
from typing import Sequence

from ..generation.inputs import input_device
from ..prompts.encoding import encode_prompt

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def code_of(answer: str) -> str:
    """The code in an answer: the first fenced block if there is one, else the whole text."""
    m = _FENCE.search(answer)
    return m.group(1) if m else answer


def parses(answer: str) -> bool:
    """Whether the answer's code is syntactically valid Python (and not empty)."""
    code = code_of(answer)
    if not code.strip():
        return False
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def next_token_logprobs(loaded, messages, format: str = "codefuse"):
    """Log-probabilities over the vocabulary for the answer's first token, as float32 on the CPU."""
    import torch


    ids = encode_prompt(loaded.tokenizer, messages, format=format)
    x = torch.tensor([ids], device=input_device(loaded.model))  # [1, T]
    with torch.inference_mode():
        logits = loaded.model(input_ids=x).logits[0, -1].float()  # [V]
    return torch.log_softmax(logits, dim=-1).cpu()


def kl_divergence(p_logprobs, q_logprobs) -> float:
    """KL(p || q) in nats, for two log-probability vectors over the same vocabulary."""
    import torch

    p = p_logprobs.exp()
    return float(torch.sum(p * (p_logprobs - q_logprobs)).clamp_min(0))


def top_tokens(tokenizer, logprobs, k: int = 5) -> list[tuple[str, float]]:
    import torch

    values, ids = torch.topk(logprobs, k)
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(v)) for v, i in zip(values, ids)]


def distinct_n(token_lists: Sequence[Sequence[int]], n: int = 2) -> float:
    """Share of distinct n-grams among all n-grams of a set of samples (1.0 = no repeats)."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


@dataclass(frozen=True)
class AnswerStats:
    """How a set of answers ended and whether they are code."""

    answers: int
    eos_share: float  # ended with </s> before the token limit
    parses_share: float  # code that ast.parse accepts
    mean_new_tokens: float
    mean_logprob: float

    def to_dict(self) -> dict:
        return asdict(self)


def answer_stats(records) -> AnswerStats:
    n = len(records)
    lps = [lp for r in records for lp in r.logprobs]
    return AnswerStats(
        answers=n,
        eos_share=sum(r.stop_reason == "eos" for r in records) / n if n else math.nan,
        parses_share=sum(parses(r.text) for r in records) / n if n else math.nan,
        mean_new_tokens=sum(r.new_tokens for r in records) / n if n else math.nan,
        mean_logprob=sum(lps) / len(lps) if lps else math.nan,
    )


def formats_headline(stats: dict[str, dict], kl_nats: dict[str, float], prompts: int) -> dict:
    """The numbers notebook 02 puts in the report's index, from its per-format `answer_stats`
    (as dicts) and the first token's KL divergences."""
    def eos(name):
        return stats[name]["eos_share"] if name in stats else None

    return {"eos_share_codefuse": eos("codefuse"), "eos_share_raw": eos("raw"),
            "max_kl_nats": round(max(kl_nats.values()), 4), "prompts": prompts}
