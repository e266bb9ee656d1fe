"""AutoGPTQ 0.7.1, the engine the model card loads with: its kernels, and what really ran.

The card's question, exllama on or off, is about AutoGPTQ's kernels, so the registry has an
`autogptq-*` entry for each (see `kernels.KERNELS`); `AUTOGPTQ_FLAGS` maps every one to the
`from_quantized` flags that select it by AutoGPTQ's own rule. AutoGPTQ needs transformers 4.57
and lives in its own environment (`make legacy-env`), so nothing here imports it until a model
is loaded, and this module imports cleanly without it.

AutoGPTQ falls back silently: when exllama's extension does not load it uses the old CUDA
kernels, and when those do not load (or the input is on the CPU) they dequantize in PyTorch and
call matmul; all it says is a log line. `kernel_in_use` therefore reads the quantized layers
that were injected (their module: qlinear_exllama, qlinear_cuda_old, ...) and whether their
extension loaded, and names what ran, e.g. "autogptq-cuda-old (torch fallback: extension not
loaded)". The load record never names a kernel that did not run.

The AutoGPTQ `.bin` is loaded as it is, with no conversion: AutoGPTQ hands it to accelerate,
which reads it with `torch.load(weights_only=True)` (whole, into RAM: 19 GB for the real model).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelUnavailable
from ..measure import timed_s
from ..prompts.encoding import DEFAULT_CONTEXT_TOKENS
from ..prompts.tokenizer import load_tokenizer
from .attention import attention_in_use
from .checkpoint import (
    check_checkpoint_tensors,
    detect_layout,
    read_gptq_settings,
    verify_checkpoint,
    weight_files,
)
from .loaded import LoadedModel, record_load
from .trust import refuse_remote_code

ENGINE = "autogptq"
NEEDS_ENVIRONMENT = "needs the auto-gptq environment (make legacy-env)"

# Which quantized-linear class AutoGPTQ injects for each set of flags (dynamically_import_QuantLinear
# in auto_gptq 0.7.1): triton if asked, else exllamav2, else exllama, when their extension loads
# and bits == 4; else cuda-old for checkpoints without act-order (or without groups), else cuda.
# autogptq-cuda-old and autogptq-cuda therefore share flags: the checkpoint decides between them.
AUTOGPTQ_FLAGS: dict[str, dict[str, bool]] = {
    "autogptq-exllama": {"use_triton": False, "disable_exllama": False, "disable_exllamav2": True},
    "autogptq-exllamav2": {"use_triton": False, "disable_exllama": True, "disable_exllamav2": False},
    "autogptq-cuda-old": {"use_triton": False, "disable_exllama": True, "disable_exllamav2": True},
    "autogptq-cuda": {"use_triton": False, "disable_exllama": True, "disable_exllamav2": True},
    "autogptq-triton": {"use_triton": True, "disable_exllama": True, "disable_exllamav2": True},
}
# The card's loader flags. Fused attention assumes as many KV heads as query heads, so it would
# break this model's grouped-query attention: always off (docs/model-facts.md).
CARD_FLAGS = {"inject_fused_attention": False, "inject_fused_mlp": False, "use_cuda_fp16": True}

# The module of the injected class -> the registry name of the kernel it runs.
QLINEAR_KERNELS = {
    "qlinear_exllama": "autogptq-exllama",
    "qlinear_exllamav2": "autogptq-exllamav2",
    "qlinear_cuda_old": "autogptq-cuda-old",
    "qlinear_cuda": "autogptq-cuda",
    "qlinear_triton": "autogptq-triton",
    "qlinear_marlin": "autogptq-marlin",  # never asked for (group size 64), named if it ever runs
    "qlinear_qigen": "autogptq-qigen",
}
# The compiled extensions each kernel needs (the wheel ships them built for torch 2.2.1 + CUDA 12.1).
EXTENSIONS = {
    "autogptq-exllama": ("exllama_kernels",),
    "autogptq-exllamav2": ("exllamav2_kernels",),
    "autogptq-cuda-old": ("autogptq_cuda_64", "autogptq_cuda_256"),
    "autogptq-cuda": ("autogptq_cuda_64", "autogptq_cuda_256"),
}
_OLD_CUDA_QLINEARS = ("qlinear_cuda_old", "qlinear_cuda")  # the only ones with a torch fallback


def installed() -> bool:
    return importlib.util.find_spec("auto_gptq") is not None


def environment_problem() -> str | None:
    """Why no AutoGPTQ kernel can run in this environment, or None."""
    return None if installed() else NEEDS_ENVIRONMENT


@functools.lru_cache(maxsize=None)
def extension_errors() -> dict[str, str | None]:
    """Each AutoGPTQ extension module -> None when it imports here, else the error AutoGPTQ swallows."""
    import torch  # noqa: F401  (the extensions link against libtorch, which must be loaded first)

    errors: dict[str, str | None] = {}
    for name in sorted({m for mods in EXTENSIONS.values() for m in mods}):
        try:
            importlib.import_module(name)
            errors[name] = None
        except Exception as e:  # ImportError for a missing libcudart, OSError or undefined symbols
            errors[name] = f"{type(e).__name__}: {e}"
    return errors


def _extension_error(kernel: str) -> str | None:
    errors = extension_errors()
    return next((f"{m}: {errors[m]}" for m in EXTENSIONS.get(kernel, ()) if errors[m]), None)


def device_problem(spec, device: str) -> str | None:
    """Why `spec` cannot run on `device` beyond what the registry's generic checks find, or None.

    exllama and exllamav2 have no fallback of their own: without their extension AutoGPTQ
    would quietly run cuda-old instead, so they are refused up front with the import error."""
    if device.partition(":")[0] != "cuda" or spec.name not in ("autogptq-exllama", "autogptq-exllamav2"):
        return None
    error = _extension_error(spec.name)
    if error:
        return f"AutoGPTQ's extension does not load here ({error}), so AutoGPTQ would silently use cuda-old instead"
    return None


def expectation(spec, device: str) -> str:
    """What to expect from an AutoGPTQ kernel that can run on `device`."""
    if spec.name not in ("autogptq-cuda-old", "autogptq-cuda"):
        return "ok"
    if device.partition(":")[0] == "cpu":
        return "AutoGPTQ's torch fallback (dequantize, then matmul): its CUDA extension never runs on cpu"
    error = _extension_error(spec.name)
    if error:
        return (f"its extension does not load here ({error}): AutoGPTQ will run its torch fallback, "
                "and the record says so")
    return "ok; inputs of 128 rows or more (a long prefill) take AutoGPTQ's torch path by design"


# --- what ran ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelInUse:
    """What AutoGPTQ's quantized layers really do, read off the layers themselves."""

    kernel: str  # what to record: the registry name, with "(torch fallback: why)" when it applies
    base: str  # the registry name of the injected class
    qlinear: str  # its module and class, e.g. auto_gptq.nn_modules.qlinear.qlinear_cuda_old.QuantLinear
    quant_type: str  # AutoGPTQ's own name for it (QuantLinear.QUANT_TYPE)
    layers: int
    fallback_layers: int  # layers that compute in PyTorch instead of the extension
    fallback: str | None  # why, or None when the extension does all the work
    use_cuda_fp16: bool | None  # cuda-old: the extension's fp16 path (AutoGPTQ turns it off unless float16)


def kernel_in_use(model) -> KernelInUse:
    """Name the kernel that `model`'s AutoGPTQ layers run, torch fallback included."""
    layers = [m for m in model.modules() if type(m).__module__.startswith("auto_gptq.nn_modules.qlinear.")]
    if not layers:
        raise KernelUnavailable("the loaded model has no AutoGPTQ quantized layers; "
                                "the checkpoint was not loaded as GPTQ")
    classes = sorted({f"{type(m).__module__}.{type(m).__name__}" for m in layers})
    if len(classes) > 1:
        raise KernelUnavailable(f"the loaded model mixes AutoGPTQ kernels ({', '.join(classes)}); expected one")
    module = type(layers[0]).__module__.rsplit(".", 1)[-1]
    base = QLINEAR_KERNELS.get(module, f"autogptq-{module.removeprefix('qlinear_')}")
    fallback, fallback_layers, fp16 = None, 0, None
    if module in _OLD_CUDA_QLINEARS:
        # The layer's own flag is False when the extension failed to import or its features are not
        # multiples of 64; forward() then dequantizes in PyTorch, as it does for any CPU input.
        no_extension = [m for m in layers if not m.autogptq_cuda_available]
        on_cpu = [m for m in layers if m.qweight.device.type != "cuda"]
        fp16 = getattr(layers[0], "use_cuda_fp16", None)  # cuda-old only
        if any(m.autogptq_cuda is None for m in layers):
            fallback, fallback_layers = "extension not loaded", len(layers)
        elif on_cpu:
            fallback, fallback_layers = "on cpu" if len(on_cpu) == len(layers) else \
                f"{len(on_cpu)} of {len(layers)} layers on cpu", len(on_cpu)
        elif no_extension:
            fallback = f"{len(no_extension)} of {len(layers)} layers: in/out features not multiples of 64"
            fallback_layers = len(no_extension)
    kernel = base if fallback is None else f"{base} (torch fallback: {fallback})"
    return KernelInUse(kernel=kernel, base=base, qlinear=classes[0],
                       quant_type=getattr(layers[0], "QUANT_TYPE", module),
                       layers=len(layers), fallback_layers=fallback_layers, fallback=fallback, use_cuda_fp16=fp16)


# --- loading ------------------------------------------------------------------------------------------

class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage().strip())


@contextlib.contextmanager
def _autogptq_logs():
    """Collect AutoGPTQ's warnings (the only place it admits a fallback) instead of printing them."""
    collect = _Collect()
    names = ["auto_gptq"] + [n for n in logging.root.manager.loggerDict if n.startswith("auto_gptq.")]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = []
    loggers[0].addHandler(collect)
    loggers[0].propagate = False
    try:
        yield collect.lines
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


def _from_quantized_kwargs(path: Path, device: str, torch_dtype) -> dict:

    files = weight_files(path)
    if len(files) != 1:
        names = ", ".join(f.name for f in files)
        raise KernelUnavailable(f"{path}: AutoGPTQ loads one weights file here; found {names}")
    placement = {"device_map": "auto"} if device == "cuda" else {"device": device}
    return {**placement, "torch_dtype": torch_dtype, "use_safetensors": files[0].suffix == ".safetensors",
            "model_basename": files[0].stem}


def load_autogptq(path, spec, kernel_requested: str, device: str, torch_dtype, verify: bool = True, *,
                  trust_remote_code: bool = False, trust_cache: bool = False):
    """Load `path` with AutoGPTQ's `from_quantized` and the flags of `spec`; record what ran.

    Called by `kernels.load_model`, which has already checked the kernel against this machine and
    the checkpoint. Returns the same LoadedModel and LoadRecord as every other engine. As there,
    a folder that asks for its own code to run is refused unless `trust_remote_code`, the
    checkpoint's tensors must match the model of its config.json, and `verify` re-hashes every
    file unless `trust_cache`.
    """

    hooks = refuse_remote_code(Path(path).expanduser(), trust_remote_code)  # before AutoGPTQ reads the folder
    if environment_problem():
        raise KernelUnavailable(f"kernel {spec.name!r} {NEEDS_ENVIRONMENT}; {sys.executable} has no auto_gptq")
    path = Path(path).expanduser()
    settings = read_gptq_settings(path)
    if settings.checkpoint_format != "gptq":
        raise KernelUnavailable(f"{path.name}: checkpoint_format={settings.checkpoint_format!r}; AutoGPTQ 0.7.1 "
                                "reads only its original ('gptq', v1) packing")
    detect_layout(path)  # a folder that is no GPTQ checkpoint fails here, not after loading
    verified = verify_checkpoint(path, trust_cache=trust_cache) if verify else None
    check_checkpoint_tensors(path, settings)
    flags = {**AUTOGPTQ_FLAGS[spec.name], **CARD_FLAGS}
    kwargs = {**_from_quantized_kwargs(path, device, torch_dtype), **flags, "trust_remote_code": trust_remote_code}

    with _autogptq_logs() as log:
        from auto_gptq import AutoGPTQForCausalLM, exllama_set_max_input_length
    with _autogptq_logs() as load_log:  # again: importing it added a handler that prints to stderr
        try:
            handle, load_s = timed_s(lambda: AutoGPTQForCausalLM.from_quantized(str(path), **kwargs), device)
        except (ValueError, TypeError, NotImplementedError, ImportError, RuntimeError) as e:
            raise KernelUnavailable(f"AutoGPTQ could not load {path.name} with kernel {spec.name!r} on {device}: "
                                    f"{type(e).__name__}: {e}") from e
    model = handle.model
    model.eval()
    ran = kernel_in_use(model)
    if ran.base == "autogptq-exllama" and settings.desc_act:
        # exllama v1 with act-order keeps a scratch buffer sized for 2048 tokens; the card's input is 4K.
        exllama_set_max_input_length(model, DEFAULT_CONTEXT_TOKENS)
    autogptq = {
        "from_quantized": {k: v for k, v in kwargs.items() if k != "torch_dtype"},
        "qlinear": ran.qlinear, "quant_type": ran.quant_type, "layers": ran.layers,
        "fallback": ran.fallback, "fallback_layers": ran.fallback_layers, "use_cuda_fp16": ran.use_cuda_fp16,
        "extensions": extension_errors(), "log": log + load_log,
    }
    record = record_load(model, path, kernel=ran.kernel, kernel_requested=kernel_requested, backend=ran.quant_type,
                         device=device, torch_dtype=torch_dtype, loaded_from=path, verified=verified, convert_s=None,
                         load_s=load_s, attention=attention_in_use(model), env={"autogptq": autogptq},
                         trust_remote_code=trust_remote_code, code_hooks=hooks)
    return LoadedModel(model=model, tokenizer=load_tokenizer(path), kernel=ran.kernel,
                       kernel_requested=kernel_requested,
                       device=device, dtype=torch_dtype, path=path, load_record=record, engine_handle=handle,
                       attention=record.attention)

