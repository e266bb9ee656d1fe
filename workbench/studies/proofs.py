"""Proving a fast decode mode equal to transformers' eager generate, step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..generation.config import DecodeConfig, check_mode
from ..generation.eager import run_transformers
from ..generation.inputs import left_pad
from ..generation.static import static_generate
from ..measure import Clock
from ..model.exllamav2_engine import is_runner
from ..prompts.encoding import prompt_ids_of_length

# --- the proof --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModeEquality:
    """A fast mode's logits against transformers' eager generate, step by step (greedy)."""

    kernel: str | None  # the GPTQ kernel
    decode_mode: str  # the mode that ran (a graph that fell back says "static")
    note: str
    context_tokens: int
    steps: int
    tokens_identical: bool
    first_divergence: int | None  # the first step whose tokens differ (later logits are not comparable)
    max_abs_dlogit: float  # over the steps before any divergence
    step_max_abs_dlogit: list  # per step
    max_abs_logit: float
    rtol: float  # passes when max |dlogit| <= rtol * max |logit| at every step
    passed: bool
    # eager against itself (a second run): how deterministic the kernel is on its own
    eager_repeat_max_abs_dlogit: float | None = None
    eager_repeat_first_divergence: int | None = None

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class EagerReference:
    """transformers' generate, run twice on one prompt: what a fast mode is proven against, and how
    far the eager path is from itself. Computed once, it serves every mode proven on that prompt."""

    prompt_ids: list
    steps: int
    tokens: list  # the first run's greedy tokens
    logits: list  # its per-step logits
    repeat_tokens: list
    repeat_logits: list


def eager_reference(loaded, context_tokens: int = 128, steps: int = 64,
                    prompt_ids: list[int] | None = None) -> EagerReference:
    """Greedy-decode `steps` tokens after a `context_tokens` prompt with transformers' generate, twice."""
    if is_runner(loaded.model):
        raise ConfigError("kernel 'exllamav2-engine' has no transformers path to prove a mode against; its own loop "
                          "is compared with the other kernels by logits (studies.kernels.agreement)")
    tok = loaded.tokenizer
    ids = prompt_ids or prompt_ids_of_length(tok, context_tokens)
    device = loaded.model.get_input_embeddings().weight.device
    input_ids, mask = (t.to(device) for t in left_pad([ids], tok.pad_token_id))
    config = DecodeConfig.forced(steps)
    runs = [run_transformers(loaded.model, tok, input_ids, mask, config, Clock(device), None, True) for _ in range(2)]
    return EagerReference(prompt_ids=ids, steps=steps, tokens=runs[0][0][0].tolist(), logits=runs[0][1],
                          repeat_tokens=runs[1][0][0].tolist(), repeat_logits=runs[1][1])


def prove_equal(loaded, mode: str = "graph", context_tokens: int = 128, steps: int = 64,
                rtol: float = 1e-2, prompt_ids: list[int] | None = None,
                reference: EagerReference | None = None) -> ModeEquality:
    """Greedy-decode `steps` tokens after a `context_tokens` prompt with transformers' generate and
    with `mode`, and compare every step's logits. rtol = 1e-2 of the largest logit is what float16
    activations through a deep model allow between two attention kernels that add in a different
    order; NaN or infinity never pass. `reference` (eager_reference) saves running transformers again
    when several modes are proven on one prompt; it then sets the prompt and the steps."""
    import math

    check_mode(mode)
    ref = reference or eager_reference(loaded, context_tokens, steps, prompt_ids)
    tok = loaded.tokenizer
    device = loaded.model.get_input_embeddings().weight.device
    input_ids, mask = (t.to(device) for t in left_pad([ref.prompt_ids], tok.pad_token_id))
    config = DecodeConfig.forced(ref.steps)
    fast = static_generate(loaded, input_ids, mask, config, Clock(device), mode)
    a, b = ref.tokens, fast.sequences[0].tolist()
    diverge, per_step, biggest = _compare(a, b, ref.logits, fast.logits)
    repeat_diverge, repeat_steps, _ = _compare(a, ref.repeat_tokens, ref.logits, ref.repeat_logits)
    worst = max(per_step, default=math.nan) if not any(math.isnan(x) for x in per_step) else math.nan
    passed = diverge is None and len(a) == len(b) and not math.isnan(worst) and worst <= rtol * biggest
    return ModeEquality(kernel=getattr(loaded, "kernel", None), decode_mode=fast.mode, note=fast.note,
                        context_tokens=len(ref.prompt_ids), steps=len(b), tokens_identical=diverge is None and a == b,
                        first_divergence=diverge, max_abs_dlogit=worst, step_max_abs_dlogit=per_step,
                        max_abs_logit=biggest, rtol=rtol, passed=passed,
                        eager_repeat_max_abs_dlogit=max(repeat_steps, default=None),
                        eager_repeat_first_divergence=repeat_diverge)


def _compare(a: list[int], b: list[int], logits_a, logits_b):
    """(first step whose tokens differ or None, max |dlogit| per step up to it, max |logit|)."""
    import math

    import torch

    diverge = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    upto = min(len(a), len(b)) if diverge is None else diverge + 1  # the diverging step is still comparable
    per_step, biggest = [], 0.0
    for i in range(upto):
        e, f = logits_a[i][0].float(), logits_b[i][0].float()
        finite = bool(torch.isfinite(e).all() and torch.isfinite(f).all())
        per_step.append(float((e - f).abs().max()) if finite else math.nan)
        biggest = max(biggest, float(e.abs().max()))
    return diverge, per_step, biggest
