"""Which attention implementation a loaded model runs, chosen by name and read back for records.

The choices are transformers' eager attention, or SDPA with all of its backends ("sdpa"), all but
cuDNN's ("sdpa-no-cudnn") or exactly one. SDPA's backend switches are process-wide in torch, so
the workbench sets them only while the model runs: a pair of forward hooks on the model switches
them on entering its forward and puts back what it found on leaving, and attention anywhere else
in the process (the user's own, another model's) keeps torch's settings. The pair costs a few
microseconds per forward (benchmarks/attention_scope.py; README).

The default is "sdpa-no-cudnn". On the H100 (torch 2.11, cuDNN SDPA) transformers' default
picks cuDNN for a decode step, and cuDNN builds an execution plan for every shape it has not
seen: with a dynamic KV cache that is every step of a first generation, which cost 39 ms a step
on the 34B shapes (74.5 ms against 35.8 once the lengths had been seen; flash attention, which
the default then picks, 34.1 ms either way; results/h100/first_lengths/). Its logits agree with
the cuDNN path's within that path's own run-to-run noise (results/h100/attention_check_34b.json).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from ..errors import ConfigError

ATTENTION_CHOICES = ("sdpa", "sdpa-no-cudnn", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math", "eager")
DEFAULT_ATTENTION = "sdpa-no-cudnn"
# SDPA backend -> the stem of torch.backends.cuda's switches for it (`enable_<stem>`, `<stem>_enabled`)
_SDPA_SWITCHES = {"cudnn": "cudnn_sdp", "flash": "flash_sdp", "efficient": "mem_efficient_sdp", "math": "math_sdp"}


def _switches():
    import torch

    cuda = torch.backends.cuda
    # an older torch (AutoGPTQ's environment) may lack a backend's switches: it has no such backend
    return {name: (getattr(cuda, f"{fn}_enabled"), getattr(cuda, f"enable_{fn}"))
            for name, fn in _SDPA_SWITCHES.items() if hasattr(cuda, f"enable_{fn}")}


def check_attention(attention: str) -> str:
    """`attention` if it is one of ATTENTION_CHOICES, else a ConfigError naming them."""
    if attention not in ATTENTION_CHOICES:

        raise ConfigError(f"attention={attention!r}: allowed {', '.join(ATTENTION_CHOICES)}")
    return attention


def _wanted(attention: str, backend: str) -> bool:
    """Whether SDPA's `backend` is on under the choice `attention`."""
    if attention == "sdpa-no-cudnn":
        return backend != "cudnn"
    return attention in ("sdpa", "eager") or attention == f"sdpa-{backend}"


@dataclass(eq=False)
class AttentionScope:
    """SDPA's switches set for `attention` while a model's forward runs, then put back.

    Entered by a forward pre-hook and left by a forward hook that runs even when the forward
    raises; the saved states are a stack, so a forward inside a forward (or inside `with scope:`)
    restores correctly.
    """

    attention: str
    _switches: dict = field(default_factory=_switches, repr=False)
    _saved: list = field(default_factory=list, repr=False)
    _handles: list = field(default_factory=list, repr=False)

    def __enter__(self):
        changed = {}  # only the switches that differ are set, and later put back
        for name, (enabled, enable) in self._switches.items():
            if (on := enabled()) != _wanted(self.attention, name):
                changed[name] = on
                enable(not on)
        self._saved.append(changed)
        return self

    def __exit__(self, *exc):
        for name, on in self._saved.pop().items():
            self._switches[name][1](on)
        return False

    def _on_forward(self, *_) -> None:  # a hook that returned something would replace the inputs
        self.__enter__()

    def _after_forward(self, *_) -> None:  # ... or the output
        self.__exit__(None, None, None)

    def attach(self, model) -> "AttentionScope":
        """Hold the choice around every forward of `model`. A model that is no torch module (ExLlamaV2's
        runner) runs no hooks: its engine enters the scope itself (`attention_applied`)."""
        if hasattr(model, "register_forward_pre_hook"):
            self._handles = [model.register_forward_pre_hook(self._on_forward),
                             model.register_forward_hook(self._after_forward, always_call=True)]
        model._workbench_attention_scope = self
        return self

    def detach(self, model) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(model, "_workbench_attention_scope", None) is self:
            del model._workbench_attention_scope


def attention_scope(model) -> AttentionScope | None:
    """The scope apply_attention gave `model`, or None (a model the workbench did not set)."""
    return getattr(model, "_workbench_attention_scope", None)


def attention_applied(model):
    """A `with` block in which SDPA's switches hold `model`'s choice (nothing changes for a model the
    workbench did not set): for engines that run a model without its forward hooks."""
    return attention_scope(model) or contextlib.nullcontext()


def apply_attention(model, attention: str = DEFAULT_ATTENTION) -> str:
    """Make a transformers model attend with `attention` (one of ATTENTION_CHOICES): its attention
    implementation, and SDPA's backends switched for the length of each of its forwards."""
    check_attention(attention)
    model.set_attn_implementation("eager" if attention == "eager" else "sdpa")
    if (previous := attention_scope(model)) is not None:
        previous.detach(model)
    AttentionScope(attention).attach(model)
    return attention


def set_attention(loaded, attention: str = DEFAULT_ATTENTION) -> str:
    """`apply_attention` to a LoadedModel, which remembers the choice (`loaded.attention`)."""
    loaded.attention = apply_attention(loaded.model, attention)
    return attention


def attention_in_use(model) -> str:
    """The attention a model runs, named as in ATTENTION_CHOICES where one fits ("sdpa[flash+math]"
    style otherwise), read from its config and from torch's SDPA switches as they stand while it
    runs (inside its scope; the process's own settings for a model the workbench did not set)."""
    impl = getattr(model.config, "_attn_implementation", None) or "unknown"
    if impl == "exllamav2-sdpa":  # ExLlamaV2's engine calls SDPA itself: the same switches pick its backend
        return f"exllamav2-sdpa ({_sdpa_in_use(model)})"
    if impl != "sdpa":
        return impl
    return _sdpa_in_use(model)


def _sdpa_in_use(model) -> str:
    """The SDPA backends switched on while `model` runs, named as in ATTENTION_CHOICES where one fits."""
    with attention_applied(model):
        return _backends_named()


def _backends_named() -> str:
    switches = _switches()
    on = [name for name, (enabled, _) in switches.items() if enabled()]
    if len(on) == len(switches):
        return "sdpa"
    if set(on) == set(switches) - {"cudnn"}:
        return "sdpa-no-cudnn"
    if len(on) == 1:
        return f"sdpa-{on[0]}"
    return f"sdpa[{'+'.join(on) or 'none'}]"
