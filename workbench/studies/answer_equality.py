"""Are a fast path's greedy answers the plain path's? Equal, or different only at near ties.

Two paths that compute the same function in a different order (another batch shape, another
attention kernel, a CUDA graph) give logits that differ in the last bits. Where the two best
tokens of a step are that close, either may win, and the answers part there. The statement
checked here: every answer is identical, except where, at the first token that differs, the two
tokens' logits (one forward pass of the prompt and the common prefix) are within the decode-mode
proof's tolerance, rtol = 1e-2 of the largest logit (studies/proofs.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..generation.inputs import input_device


@dataclass(frozen=True)
class AnswerEquality:
    """Greedy answers of a candidate path against a reference path, prompt by prompt."""

    answers: int
    identical: int
    share_identical: float
    divergences: list  # per differing answer: index, step, the two tokens, their logit gap, tolerance, near_tie
    rtol: float
    passed: bool  # every difference is a near tie

    def to_dict(self) -> dict:
        return asdict(self)


def compare_answers(loaded, prompts_ids: list[list[int]], reference: list[list[int]], candidate: list[list[int]],
                    rtol: float = 1e-2) -> AnswerEquality:
    """Compare greedy answers (new token ids) prompt by prompt; judge each first difference."""
    if not len(prompts_ids) == len(reference) == len(candidate):
        raise ValueError(f"{len(prompts_ids)} prompts, {len(reference)} reference and {len(candidate)} "
                         "candidate answers: one of each per prompt")
    divergences = []
    for i, (prompt, ref, cand) in enumerate(zip(prompts_ids, reference, candidate)):
        if ref == cand:
            continue
        step = next((k for k, (a, b) in enumerate(zip(ref, cand)) if a != b), min(len(ref), len(cand)))
        divergences.append({"index": i, "step": step, **_tie(loaded, prompt + ref[:step], ref, cand, step, rtol)})
    identical = len(reference) - len(divergences)
    return AnswerEquality(answers=len(reference), identical=identical,
                          share_identical=identical / len(reference) if reference else float("nan"),
                          divergences=divergences, rtol=rtol, passed=all(d["near_tie"] for d in divergences))


def _tie(loaded, ids: list[int], ref: list[int], cand: list[int], step: int, rtol: float) -> dict:
    """The two tokens chosen at `step` and how far apart their logits are, after `ids`."""
    import torch

    if step >= len(ref) or step >= len(cand):  # one answer ended where the other went on: no token pair
        return {"reference_token": ref[step] if step < len(ref) else None,
                "candidate_token": cand[step] if step < len(cand) else None,
                "logit_gap": None, "tolerance": None, "near_tie": False}
    x = torch.tensor([ids], device=input_device(loaded.model))  # [1, T]
    with torch.inference_mode():
        logits = loaded.model(input_ids=x).logits[0, -1].float()  # [V]
    gap = float((logits[ref[step]] - logits[cand[step]]).abs())
    tolerance = rtol * float(logits.abs().max())
    return {"reference_token": ref[step], "candidate_token": cand[step], "logit_gap": gap,
            "tolerance": tolerance, "near_tie": gap <= tolerance}
