"""The memory-bandwidth floor of a decode step.

A decode step must read every quantized weight (4 bits + a 16-bit scale and a 4-bit zero per group),
the 16-bit lm_head and the KV cache, so bytes per step over measured copy bandwidth is the least
time a step can take. Speed is reported beside it as a share.
"""

from __future__ import annotations

import math

# --- bytes and the floor ----------------------------------------------------------------------

def decode_bytes_per_token(loaded) -> int:
    """Bytes one decode step must read at batch 1, not counting the KV cache (the count of
    docs/model-facts.md: packed weights, 16-bit scales and packed zeros of every quantized layer,
    the lm_head, norms)."""
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:  # the AutoGPTQ environment (make legacy-env) has no gptqmodel
        BaseQuantLinear = ()

    model = loaded.model
    if hasattr(model, "decode_bytes_per_token"):  # an engine that is not a torch model (model/exllamav2_engine.py)
        return model.decode_bytes_per_token()
    total = 0
    quantized_params = set()
    for module in model.modules():
        if isinstance(module, BaseQuantLinear) or type(module).__module__.startswith("auto_gptq.nn_modules.qlinear."):
            fin = getattr(module, "in_features", None) or module.infeatures  # AutoGPTQ: infeatures, outfeatures
            fout = getattr(module, "out_features", None) or module.outfeatures
            bits, group = module.bits, module.group_size if module.group_size > 0 else fin
            groups = math.ceil(fin / group)
            total += fin * fout * bits // 8
            total += groups * fout * 2  # fp16 scales
            total += groups * fout * bits // 8  # packed zeros
            quantized_params.update(id(p) for p in module.parameters(recurse=False))
    embed = model.get_input_embeddings().weight
    for p in model.parameters():
        if id(p) not in quantized_params and p is not embed:
            total += p.numel() * 2  # lm_head and norms, read in 16 bits on a GPU
    return total


def kv_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    """KV cache bytes each cached token adds (2 x layers x kv heads x head dim)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def floor_ms(bytes_per_step: float, bandwidth_gbps: float | None) -> float | None:
    if not bandwidth_gbps:
        return None
    return bytes_per_step / (bandwidth_gbps * 1e9) * 1e3


def step_floor_ms(loaded, context_tokens: float, batch: int = 1, bandwidth_gbps: float | None = None) -> float | None:
    """The floor of one decode step: the weights read once, plus every sequence's KV cache at
    `context_tokens`. None without a bandwidth (on the CPU)."""
    kv = kv_bytes_per_token(loaded.model.config)
    return floor_ms(decode_bytes_per_token(loaded) + batch * kv * context_tokens, bandwidth_gbps)


def floor_share(floor_ms: float | None, step_ms: float | None) -> float | None:
    """How close a measured step comes to its floor: floor / step (1.0 = at the floor). None
    without a floor (no bandwidth, on the CPU) or without a measured step."""
    if not floor_ms or step_ms is None or not math.isfinite(step_ms) or step_ms <= 0:
        return None
    return floor_ms / step_ms
