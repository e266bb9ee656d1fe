"""Which attention implementation a loaded model runs, chosen by name and read back for records.

The choices are transformers' eager attention, or SDPA with all of its backends ("sdpa"), all but
cuDNN's ("sdpa-no-cudnn") or exactly one. SDPA's backend switches are process-wide in torch.

The default is "sdpa-no-cudnn". On the H100 (torch 2.11, cuDNN SDPA) transformers' default
picks cuDNN for a decode step, and cuDNN builds an execution plan for every shape it has not
seen: with a dynamic KV cache that is every step of a first generation, which cost 39 ms a step
on the 34B shapes (74.5 ms against 35.8 once the lengths had been seen; flash attention, which
the default then picks, 34.1 ms either way; results/h100/first_lengths/). Its logits agree with
the cuDNN path's within that path's own run-to-run noise (results/h100/attention_check_34b.json).
"""

from __future__ import annotations

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


def apply_attention(model, attention: str = DEFAULT_ATTENTION) -> str:
    """Make a transformers model attend with `attention` (one of ATTENTION_CHOICES)."""
    check_attention(attention)
    model.set_attn_implementation("eager" if attention == "eager" else "sdpa")
    for name, (_, enable) in _switches().items():
        if attention == "sdpa-no-cudnn":
            enable(name != "cudnn")
        else:
            enable(attention in ("sdpa", "eager") or attention == f"sdpa-{name}")
    return attention


def set_attention(loaded, attention: str = DEFAULT_ATTENTION) -> str:
    """`apply_attention` to a LoadedModel, which remembers the choice (`loaded.attention`)."""
    loaded.attention = apply_attention(loaded.model, attention)
    return attention


def attention_in_use(model) -> str:
    """The attention a model runs now, named as in ATTENTION_CHOICES where one fits
    ("sdpa[flash+math]" style otherwise), read from its config and torch's SDPA switches."""
    impl = getattr(model.config, "_attn_implementation", None) or "unknown"
    if impl == "exllamav2-sdpa":  # ExLlamaV2's engine calls SDPA itself: the same switches pick its backend
        return f"exllamav2-sdpa ({_sdpa_in_use()})"
    if impl != "sdpa":
        return impl
    return _sdpa_in_use()


def _sdpa_in_use() -> str:
    """The SDPA backends switched on, named as in ATTENTION_CHOICES where one fits."""
    switches = _switches()
    on = [name for name, (enabled, _) in switches.items() if enabled()]
    if len(on) == len(switches):
        return "sdpa"
    if set(on) == set(switches) - {"cudnn"}:
        return "sdpa-no-cudnn"
    if len(on) == 1:
        return f"sdpa-{on[0]}"
    return f"sdpa[{'+'.join(on) or 'none'}]"
