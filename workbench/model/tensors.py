"""Which tensors a GPTQ checkpoint must hold, read against what its files do hold.

The model that config.json defines (built on the meta device: no memory, no weights) and the
quantize config decide every tensor's name and shape: a quantized linear of in x out features
holds `qweight` int32 [in*bits/32, out], `qzeros` int32 [groups, out*bits/32], `scales`
[groups, out] and `g_idx` int32 [in]; every other parameter keeps its own shape. `match_tensors`
compares that with the checkpoint's tensors one to one and names what is missing, unused or
misshapen, so a config.json with fewer layers than the weights, or a quantize_config.json whose
bits or group size were edited, is a CheckpointError before any kernel sees the weights.
`read_safetensors_header` reads a safetensors file's table of tensors, refusing a malformed one.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .libraries import quiet_library_logs
from .trust import open_regular

QUANT_PARTS = ("qweight", "qzeros", "scales", "g_idx")
_INT_PARTS = ("qweight", "qzeros", "g_idx")
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
# safetensors dtype -> (bytes per element, family)
_DTYPES = {"F64": (8, "float"), "F32": (4, "float"), "F16": (2, "float"), "BF16": (2, "float"),
           "I64": (8, "int"), "I32": (4, "int"), "I16": (2, "int"), "I8": (1, "int"), "U8": (1, "int"),
           "BOOL": (1, "bool"), "F8_E4M3": (1, "float"), "F8_E5M2": (1, "float")}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's dtype family ("float", "int", "bool") and shape, as a file declares it."""

    family: str
    shape: tuple[int, ...]


def read_safetensors_header(file) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares; CheckpointError for a header that is not one.

    Checked: the 8-byte length, JSON, known dtypes, whole shapes, and byte ranges that match the
    shapes, lie inside the file and neither overlap nor leave gaps."""
    file = Path(file)
    with open_regular(file, "weights file") as f:
        size = f.seek(0, 2)
        f.seek(0)
        if size < 8:
            raise CheckpointError(f"{file}: {size} bytes; too short to be safetensors")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise CheckpointError(f"{file}: bad safetensors header: it claims {n} bytes of a {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: bad safetensors header: not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: bad safetensors header: a JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    tensors, spans = {}, []
    for name, entry in header.items():
        info, span = _entry(file, name, entry)
        tensors[name] = info
        spans.append((span, name))
    _check_spans(file, sorted(spans), size - 8 - n)
    return tensors


def _entry(file: Path, name: str, entry) -> tuple[TensorInfo, tuple[int, int]]:
    def bad(why):
        raise CheckpointError(f"{file}: bad safetensors header: tensor {name!r} {why}")

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        bad("is not {dtype, shape, data_offsets}")
    if entry["dtype"] not in _DTYPES:
        bad(f"has unknown dtype {entry['dtype']!r}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        bad(f"has shape {shape!r}; expected non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
        bad(f"has data_offsets {offsets!r}; expected [begin, end]")
    width, family = _DTYPES[entry["dtype"]]
    if offsets[1] - offsets[0] != math.prod(shape) * width:
        bad(f"spans {offsets[1] - offsets[0]} bytes; {entry['dtype']} {shape} needs {math.prod(shape) * width}")
    return TensorInfo(family, tuple(shape)), (offsets[0], offsets[1])


def _check_spans(file: Path, spans: list, data_bytes: int) -> None:
    end = 0
    for (begin, stop), name in spans:
        if begin != end:
            why = "overlaps another" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise CheckpointError(f"{file}: bad safetensors header: tensor {name!r} {why}")
        end = stop
    if end != data_bytes:
        raise CheckpointError(f"{file}: bad safetensors header: the tensors span {end} bytes, the file holds "
                              f"{data_bytes} after the header (truncated or padded)")


def info_of(tensor) -> TensorInfo:
    """A torch tensor's TensorInfo."""
    import torch

    family = "bool" if tensor.dtype == torch.bool else "float" if tensor.dtype.is_floating_point else "int"
    return TensorInfo(family, tuple(tensor.shape))


# --- what config.json and the quantize config call for ---------------------------------------------

def expected_tensors(folder, bits: int, group_size: int, lm_head_quantized: bool = False) -> tuple[dict, set]:
    """({name: TensorInfo} the checkpoint must hold, {names it may hold}) for the model that
    `folder`'s config.json defines, quantized with `bits` and `group_size`.

    Every linear of the model except the output embedding is quantized (GPTQ's practice, and
    gptqmodel's for Llama). A quantized linear without a bias may carry an all-zero one
    (AutoGPTQ 0.4.2 saves them): those are the optional names."""
    import torch

    model = _meta_model(folder)
    head = model.get_output_embeddings()
    expected: dict[str, TensorInfo] = {}
    optional: set[str] = set()
    quantized_params = set()
    for prefix, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or (module is head and not lm_head_quantized):
            continue
        fin, fout = module.in_features, module.out_features
        if (fin * bits) % 32 or (fout * bits) % 32:
            raise CheckpointError(f"{prefix}: {fin}x{fout} features cannot be packed at bits={bits} "
                                  "(config.json and quantize_config.json disagree with any GPTQ checkpoint)")
        groups = 1 if group_size == -1 else -(-fin // group_size)
        expected |= {f"{prefix}.qweight": TensorInfo("int", (fin * bits // 32, fout)),
                     f"{prefix}.qzeros": TensorInfo("int", (groups, fout * bits // 32)),
                     f"{prefix}.scales": TensorInfo("float", (groups, fout)),
                     f"{prefix}.g_idx": TensorInfo("int", (fin,))}
        quantized_params |= {f"{prefix}.weight", f"{prefix}.bias"}
        if module.bias is not None:
            expected[f"{prefix}.bias"] = TensorInfo("float", (fout,))
        else:
            optional.add(f"{prefix}.bias")
    for name, t in unique_state(model).items():
        if name not in quantized_params:
            expected[name] = TensorInfo("float" if t.dtype.is_floating_point else "int", tuple(t.shape))
    return expected, optional


def unique_state(model) -> dict:
    """The model's state dict with each tensor once: tied weights (an lm_head sharing the input
    embedding) are one tensor, which a checkpoint stores once."""
    seen, out = set(), {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def _meta_model(folder):
    """The model config.json defines, on the meta device (shapes without memory)."""
    import torch

    quiet_library_logs()
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise CheckpointError(f"{Path(folder) / 'config.json'} does not define a model transformers can build "
                              f"({type(e).__name__}: {e})") from None


def match_tensors(found: dict[str, TensorInfo], expected: dict[str, TensorInfo], optional: set[str],
                  source: str) -> None:
    """CheckpointError unless `found` (the checkpoint's tensors) and `expected` (the model's)
    match one to one in names, dtype family and shape; the error names what differs."""
    missing = sorted(set(expected) - set(found))
    unused = sorted(set(found) - set(expected) - optional)
    wrong = [f"{name} is {found[name].family} {list(found[name].shape)}, the model needs "
             f"{expected[name].family} {list(expected[name].shape)}"
             for name in sorted(set(expected) & set(found)) if found[name] != expected[name]]
    for name in sorted(set(found) & optional):  # an AutoGPTQ bias must at least fit its linear
        fits = TensorInfo("float", (expected_bias_width(name, expected),))
        if found[name] != fits:
            wrong.append(f"{name} is {found[name].family} {list(found[name].shape)}, the model needs "
                         f"float {list(fits.shape)}")
    if not (missing or unused or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors the model needs are missing ({_names(missing)})")
    if unused:
        parts.append(f"{len(unused)} tensors would be left unused ({_names(unused)})")
    if wrong:
        parts.append(f"{len(wrong)} do not fit ({'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''})")
    raise CheckpointError(f"{source}: the weights do not match the model that config.json and the quantize "
                          "config define: " + "; ".join(parts) + ". Was a config file edited, or does it come "
                          "from another checkpoint?")


def expected_bias_width(name: str, expected: dict[str, TensorInfo]) -> int:
    """The out-features of the quantized linear whose optional bias `name` is."""
    return expected[name.removesuffix(".bias") + ".scales"].shape[1]


def _names(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f", ... {len(names) - limit} more" if len(names) > limit else "")
