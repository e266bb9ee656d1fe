"""The eager path: transformers' own `generate`, watched.

A forward hook marks when each step's logits are computed and a stopping-criteria hook marks when
each token exists. The marks are CUDA events (read once, at the end) or `perf_counter` readings on
the CPU, so the measurement adds no host-device synchronization to the loop it measures.
"""

from __future__ import annotations

from ..measure import Clock
from .config import DecodeConfig


class StepMarks:
    """A stopping criterion that never stops: it only marks the moment each token exists."""

    def __init__(self, clock: Clock, batch: int, device):
        import torch

        self.clock, self.indices = clock, []
        self.never = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores, **kwargs):
        self.indices.append(self.clock.mark())
        if self.never.shape[0] != input_ids.shape[0]:  # beam search widens the batch
            import torch

            self.never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.never


def run_transformers(model, tok, input_ids, mask, config: DecodeConfig, clock: Clock, streamer, want_logits: bool):
    """transformers' own generate, watched: a forward hook marks each step's logits and a
    stopping criterion marks each token. Returns ([B, N] new ids on the CPU, logits per step or
    None, the token marks, the prefill mark)."""
    import torch
    from transformers import StoppingCriteriaList

    forward_marks: list[int] = []
    steps = StepMarks(clock, input_ids.shape[0], input_ids.device)
    hook = model.register_forward_hook(lambda *_: forward_marks.append(clock.mark()))
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=mask, generation_config=config.generation_config(tok),
                stopping_criteria=StoppingCriteriaList([steps]), return_dict_in_generate=True,
                output_logits=want_logits, tokenizer=tok if config.stop else None, streamer=streamer,
            )
    finally:
        hook.remove()
    sequences = out.sequences[:, input_ids.shape[1]:].cpu()  # [B, N]
    return sequences, out.logits if want_logits else None, steps.indices, forward_marks[0] if forward_marks else None
