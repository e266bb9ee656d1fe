"""How each row of a refilled batch chooses its next token, with state kept per row.

In a batch whose rows start at different times (workload.py), the processors that depend on a
row's past cannot share one counter: the repetition penalty reads each row's own tokens, the
eos ban of `min_new_tokens` counts each row's own new tokens, and seeded sampling draws from
each row's own generator, so a sample depends on its seed, not on which rows ran beside it.
The rules are transformers' (the same processors, in `generate`'s order: static.py's
`logits_processors`).
"""

from __future__ import annotations

from .config import DecodeConfig


class RowChooser:
    """Per-row state for choosing tokens: history, new-token counts, min_new_tokens, generators."""

    def __init__(self, config: DecodeConfig, tokenizer, batch: int, history: int, device):
        import torch

        self.config, self.device, self.eos = config, device, tokenizer.eos_token_id
        self.warpers = logits_warpers(config)
        self.penalty = None
        if config.repetition_penalty != 1.0:
            from transformers import RepetitionPenaltyLogitsProcessor

            self.penalty = RepetitionPenaltyLogitsProcessor(penalty=config.repetition_penalty)
            # [B, H] each row's prompt and new tokens; unused places repeat the row's first token,
            # which the penalty counts anyway, so they change nothing
            self.history = torch.zeros((batch, history), dtype=torch.long, device=device)
            self.history_len = torch.zeros(batch, dtype=torch.long, device=device)  # [B]
        self.new_tokens = torch.zeros(batch, dtype=torch.long, device=device)  # [B] per row
        self.min_new = torch.zeros(batch, dtype=torch.long, device=device)  # [B] eos banned below this
        self.uses_min = False  # known on the host, so the ban costs nothing when no row has one
        self.generators: list = [None] * batch

    def admit(self, row: int, prompt_ids: list[int], min_new_tokens: int, seed: int | None) -> None:
        """Start `row` afresh for a new prompt."""
        import torch

        self.new_tokens[row] = 0
        self.min_new[row] = min_new_tokens
        self.uses_min = self.uses_min or min_new_tokens > 0
        if self.penalty is not None:
            self.history[row].fill_(prompt_ids[0])
            self.history[row, : len(prompt_ids)] = torch.tensor(prompt_ids, device=self.device)
            self.history_len[row] = len(prompt_ids)
        if self.config.do_sample:
            g = torch.Generator(device=self.device)
            g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
            self.generators[row] = g

    def compact(self, rows: list[int]) -> None:
        """Move the state of `rows` (in this order) to rows 0..len(rows)-1, as the fast slot decoder's
        `compact` moves their caches (the workload runner's narrowing tail)."""
        import torch

        m = len(rows)
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for name in ["new_tokens", "min_new"] + (["history", "history_len"] if self.penalty is not None else []):
            t = getattr(self, name)
            t[:m] = t[index]
        self.generators = [self.generators[r] for r in rows] + [None] * (len(self.generators) - m)

    def choose(self, rows, logits):
        """The next token ([n] long) of each of `rows` ([n] long) from their raw logits ([n, V] float32)."""
        import torch

        scores = logits
        if self.penalty is not None:
            scores = self.penalty(self.history[rows], scores)
        if self.uses_min:
            banned = self.new_tokens[rows] < self.min_new[rows]  # [n]
            eos_col = scores[:, self.eos]
            scores = scores.clone() if scores is logits else scores
            scores[:, self.eos] = torch.where(banned, torch.full_like(eos_col, -float("inf")), eos_col)
        if self.config.do_sample:
            for w in self.warpers:
                scores = w(None, scores)
            probs = torch.softmax(scores, dim=-1)
            chosen = torch.cat([torch.multinomial(probs[i], 1, generator=self.generators[r])
                                for i, r in enumerate(rows.tolist())])  # each row from its own generator
        else:
            chosen = scores.argmax(-1)  # [n]
        self.new_tokens[rows] += 1
        if self.penalty is not None:
            at = self.history_len[rows].clamp(max=self.history.shape[1] - 1)
            self.history[rows, at] = chosen
            self.history_len[rows] += 1
        return chosen


def logits_warpers(config: DecodeConfig) -> list:
    """Temperature, top-k and top-p, as transformers' generate applies them (rows are independent);
    none for greedy decoding."""
    if not config.do_sample:
        return []
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = []
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers
