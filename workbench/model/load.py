"""Loading a checkpoint with exactly the kernel asked for, and the float32 reference model.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from ..errors import CheckpointError, ConfigError, KernelUnavailable
from ..measure import timed_s
from ..prompts.tokenizer import load_tokenizer
from .attention import DEFAULT_ATTENTION, apply_attention, check_attention
from .autogptq_engine import load_autogptq
from .checkpoint import (
    CONVERSION_NOTE,
    conversion_seconds,
    converted_folder,
    dequantize_gptq_v1,
    detect_layout,
    gptq_module_names,
    model_tensors,
    prepare_checkpoint,
    read_gptq_settings,
    read_state_dict,
    verify_checkpoint,
)
from .demo import build
from .exllamav2_engine import load_exllamav2
from .libraries import import_gptqmodel, quiet_library_logs
from .loaded import LoadedModel, record_load
from .registry import AUTO, choose_kernel, kernel_in_use, resolve_device, resolve_dtype
from .tensors import QUANT_PARTS, unique_state
from .trust import refuse_remote_code


def load_model(path, kernel: str = AUTO, device: str = AUTO, dtype=None, verify: bool = True,
               attention: str = DEFAULT_ATTENTION, *, trust_remote_code: bool = False,
               trust_cache: bool = False) -> LoadedModel:
    """Load a GPTQ checkpoint with the named kernel (see KERNELS) and record what ran.

    device: 'auto' (a GPU if there is one; gptqmodel spreads the layers over every visible GPU),
    'cpu', 'cuda' or 'cuda:N'. dtype: activations; None = float16 on a GPU, float32 on the CPU
    where the kernel has it. verify: re-hash every file against the card's table or the folder's
    own SHA256SUMS (the record says which: "card" or "self-declared"); trust_cache=True lets the
    hash cache answer, and the record names the files it answered for. A pickled checkpoint is
    converted once to safetensors. The checkpoint's tensors must match the model its config.json
    defines, one to one (CheckpointError names the difference). attention: see workbench.attention
    (default: SDPA without cuDNN; AutoGPTQ's loader keeps its own).

    trust_remote_code: a folder whose configs ask for code of its own to be run (`auto_map`, ...)
    is refused unless this is True; the card's checkpoint needs none.
    """

    path = Path(path).expanduser()
    check_attention(attention)  # before minutes of loading, not after
    hooks = refuse_remote_code(path, trust_remote_code)  # before any library reads the folder
    device = resolve_device(device)
    detect_layout(path)  # a folder that is no GPTQ checkpoint fails here, not later
    settings = read_gptq_settings(path)
    spec = choose_kernel(path, kernel, device, dtype)
    torch_dtype = resolve_dtype(dtype, spec, device)
    if spec.engine == "autogptq":  # loads the AutoGPTQ layout as it is: no conversion

        return load_autogptq(path, spec, kernel, device, torch_dtype, verify, trust_remote_code=trust_remote_code,
                             trust_cache=trust_cache)

    verified = verify_checkpoint(path, trust_cache=trust_cache) if verify else None
    digests = verified.sha256 if verified else None
    expected = model_tensors(path, settings)
    converted_before = (converted_folder(path, digests=digests, trust_remote_code=trust_remote_code)
                        / CONVERSION_NOTE).exists()
    prepared = prepare_checkpoint(path, digests=digests, trust_remote_code=trust_remote_code, expected=expected)
    convert_s = None if converted_before or prepared == path else conversion_seconds(prepared)
    if spec.engine == "exllamav2":  # ExLlamaV2's own engine reads the safetensors copy itself
        return load_exllamav2(path, prepared, kernel, device, verified, convert_s, attention,
                              trust_remote_code=trust_remote_code, code_hooks=hooks)

    gptqmodel = import_gptqmodel()

    def load():
        with contextlib.redirect_stdout(io.StringIO()):  # gptqmodel prints its adapter setting
            return gptqmodel.GPTQModel.load(str(prepared), backend=spec.backend, device=device, dtype=torch_dtype,
                                            trust_remote_code=trust_remote_code)

    try:
        handle, load_s = timed_s(load, device)
    except (ValueError, NotImplementedError, ImportError, RuntimeError) as e:
        raise KernelUnavailable(f"gptqmodel could not load {path.name} with kernel {spec.name!r} "
                                f"({spec.backend}) on {device}: {e}") from e
    model = handle.model
    model.eval()
    check_loaded_tensors(model, expected[0], str(path))
    in_use = kernel_in_use(model)
    if in_use != spec.name:
        raise KernelUnavailable(f"asked for kernel {spec.name!r} but gptqmodel loaded {in_use!r}; "
                                "refusing a silent fallback")
    apply_attention(model, attention)  # before the first forward, which record_load times
    record = record_load(model, path, kernel=in_use, kernel_requested=kernel, backend=spec.backend, device=device,
                         torch_dtype=torch_dtype, loaded_from=prepared, verified=verified, convert_s=convert_s,
                         load_s=load_s, attention=attention, trust_remote_code=trust_remote_code,
                         code_hooks=hooks)
    return LoadedModel(model=model, tokenizer=load_tokenizer(path), kernel=in_use, kernel_requested=kernel,
                       device=device, dtype=torch_dtype, path=path, load_record=record, engine_handle=handle,
                       attention=attention)


def check_loaded_tensors(model, expected: dict, source: str) -> None:
    """After loading: the model gptqmodel built has a quantized layer for every quantized linear
    of the checkpoint and a tensor for every other one, and nothing else (CheckpointError names
    the difference), so no layer was dropped, added or left at its initial values."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    quantized = {name for name, m in model.named_modules() if isinstance(m, BaseQuantLinear)}
    want_quantized = {n.removesuffix(".qweight") for n in expected if n.endswith(".qweight")}
    dense = {n for n in unique_state(model) if n.rpartition(".")[0] not in quantized}
    want_dense = {n for n in expected if not (n.rpartition(".")[2] in (*QUANT_PARTS, "bias")
                                             and n.rpartition(".")[0] in want_quantized)}
    problems = []
    for what, have, want in (("quantized layers", quantized, want_quantized), ("tensors", dense, want_dense)):
        if missing := sorted(want - have):
            problems.append(f"{len(missing)} {what} of the checkpoint are not in the loaded model "
                            f"({', '.join(missing[:4])})")
        if extra := sorted(have - want):
            problems.append(f"{len(extra)} {what} of the loaded model are not in the checkpoint "
                            f"({', '.join(extra[:4])})")
    if problems:
        raise CheckpointError(f"{source}: the loaded model and the checkpoint differ: " + "; ".join(problems))


# --- the float32 reference --------------------------------------------------------------------

def load_reference_model(path, dtype=None, *, trust_remote_code: bool = False):
    """An unquantized LlamaForCausalLM holding the checkpoint's weights dequantized by
    `dequantize_gptq_v1`, in float32 unless told otherwise: the yardstick every kernel's logits are
    measured against. Dense, so only for small models (the 34B model would need 130 GB). A folder
    that asks for its own code to run is refused unless `trust_remote_code`."""
    import torch

    refuse_remote_code(Path(path).expanduser(), trust_remote_code)

    quiet_library_logs()
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = dtype or torch.float32
    settings = read_gptq_settings(path)
    if settings.checkpoint_format != "gptq":
        raise ConfigError(f"{path}: checkpoint_format={settings.checkpoint_format!r}; "
                          "the reference decodes v1 ('gptq') only")
    state = read_state_dict(path)
    dense = {}
    for prefix in gptq_module_names(state):
        w = dequantize_gptq_v1(state[f"{prefix}.qweight"], state[f"{prefix}.qzeros"], state[f"{prefix}.scales"],
                               state[f"{prefix}.g_idx"], settings.bits)  # [in, out]
        dense[f"{prefix}.weight"] = w.t().contiguous()
        if f"{prefix}.bias" in state:
            dense[f"{prefix}.bias"] = state[f"{prefix}.bias"]
    quantized_parts = (".qweight", ".qzeros", ".scales", ".g_idx", ".bias")
    for name, t in state.items():
        if not name.endswith(quantized_parts):
            dense[name] = t
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    expected = set(model.state_dict())
    for name in [k for k in dense if k not in expected and k.endswith(".bias")]:
        if dense[name].any():
            raise ConfigError(f"{name} is non-zero but the model defined by config.json has no such bias")
        del dense[name]  # AutoGPTQ's all-zero bias of a bias-free linear
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in dense.items()}, strict=True)
    except RuntimeError as e:  # missing, unexpected or misshapen tensors: the checkpoint's fault
        raise CheckpointError(f"{path}: the weights do not fit the model config.json defines: {e}") from None
    return model.eval()


def resolve_model(model: str | os.PathLike) -> Path:
    """'demo' means the embedded demo model (built on first use); anything else is a folder."""
    if str(model) == "demo":

        return build(log=lambda msg: print(msg, file=sys.stderr))
    path = Path(model).expanduser()
    if not path.exists():

        raise CheckpointError(f"MODEL={model!r}: no such folder. Use 'demo' or the path of a checkpoint folder.")
    return path
