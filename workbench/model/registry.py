"""Which GPTQ kernel multiplies the 4-bit weights: the registry, and what can run here.

`KERNELS` is the registry: every entry names the engine and backend that provide it, the devices it
runs on and its constraints. `available_kernels(device)` says which can run here and why the others
cannot; `choose_kernel` resolves `auto` from a fixed order. There is no silent fallback: a kernel
that cannot run raises KernelUnavailable with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, KernelUnavailable
from . import exllamav2_engine
from .autogptq_engine import device_problem, environment_problem, expectation
from .checkpoint import GPTQSettings, read_gptq_settings

AUTO = "auto"
_ALL_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class KernelSpec:
    """One way to run GPTQ matmuls, with everything that decides whether it can run."""

    name: str
    backend: str  # the engine's own name for it (gptqmodel's BACKEND value)
    qlinear: str  # the class the quantized layers get: how the kernel in use is recognised
    devices: tuple[str, ...]
    bits: tuple[int, ...]
    group_sizes: tuple[int, ...]
    desc_act: tuple[bool, ...] = (False, True)  # act-order checkpoints allowed?
    sym: tuple[bool, ...] = (True, False)
    dtypes: tuple[str, ...] = ("float16", "bfloat16")  # activation dtypes
    features_multiple: tuple[int, int] = (1, 1)  # (in, out) features of every linear must divide by these
    min_capability: tuple[int, int] | None = None  # CUDA compute capability
    max_capability: tuple[int, int] | None = None
    needs_toolchain: bool = False  # compiled on first use: nvcc >= 12.8, a C++ compiler and ninja
    needs_package: str | None = None
    needs_network: bool = False  # downloads sources on its first build
    cpu_ops: tuple[str, ...] = ()  # ATen operators this PyTorch build must provide
    exact: bool = True  # False: re-quantizes the weights on load, so logits move further
    engine: str = "gptqmodel"
    note: str = ""


KERNELS: dict[str, KernelSpec] = {s.name: s for s in (
    KernelSpec("torch", "gptq_torch", "TorchLinear", ("cpu", "cuda"), (2, 3, 4, 5, 6, 7, 8), _ALL_GROUP_SIZES,
               note="dequantizes in PyTorch (torch.compile'd on first use), then a dense matmul"),
    KernelSpec("torch_aten", "gptq_torch_aten", "TorchAtenLinear", ("cpu",), (4,), (16, 32, 64, 128),
               cpu_ops=("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"),
               note="ATen's int4 CPU matmul (weights repacked to int4pack on load)"),
    KernelSpec("torch_fused", "gptq_torch_fused", "TorchFusedLinear", ("cpu",), (4,), (-1, 16, 32, 64, 128),
               dtypes=("float32", "float16", "bfloat16"),
               cpu_ops=("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"),
               note="the same ATen int4pack op, gptqmodel's fused variant (also targets Intel XPU)"),
    KernelSpec("cpu_avx512", "gptq_torch_int8", "TorchInt8Linear", ("cpu",), (2, 4, 8), (-1, 16, 32, 64, 128),
               dtypes=("float32", "float16", "bfloat16"), cpu_ops=("_weight_int8pack_mm",), exact=False,
               note="gptqmodel 7.6.0 has no AVX-512-specific (or IPEX) GPTQ kernel; "
                    "this name maps to its optimized CPU int8 kernel, aten::_weight_int8pack_mm, which uses "
                    "AVX-512 where the CPU has it and AVX2 otherwise. It re-quantizes the 4-bit weights to "
                    "per-channel int8 on load: not bit-faithful to the checkpoint"),
    KernelSpec("triton", "gptq_triton", "TritonV2Linear", ("cuda",), (2, 4, 8), _ALL_GROUP_SIZES,
               features_multiple=(32, 32), min_capability=(8, 0), needs_package="triton",
               note="Triton dequant+matmul, JIT-compiled by Triton (Triton supports compute capability >= 8.0)"),
    KernelSpec("exllamav2", "gptq_exllama_v2", "ExllamaV2Linear", ("cuda",), (4,), (-1, 32, 64, 128),
               features_multiple=(32, 32), needs_toolchain=True,
               note="ExLlamaV2's GEMM; built on first use (~40 s on an H100 host)"),
    KernelSpec("marlin", "gptq_marlin", "MarlinLinear", ("cuda",), (4, 8), (-1, 32, 64, 128), sym=(True,),
               min_capability=(7, 5), needs_toolchain=True,
               note="Marlin (group 64 allowed in gptqmodel, unlike AutoGPTQ's); fp16 only on 7.5; "
                    "built on first use (~275 s on an H100 host)"),
    KernelSpec("machete", "gptq_machete", "MacheteLinear", ("cuda",), (4, 8), (-1, 64, 128),
               features_multiple=(64, 128), min_capability=(9, 0), max_capability=(9, 0), needs_toolchain=True,
               needs_network=True,
               note="CUTLASS kernel for Hopper (SM90) only; its first build downloads CUTLASS, so it cannot "
                    "run offline unless that cache exists"),
    KernelSpec("bitblas", "gptq_bitblas", "BitblasLinear", ("cuda",), (2, 4, 8), (-1, 32, 64, 128),
               desc_act=(False,), features_multiple=(16, 16), needs_package="bitblas",
               note="BitBLAS ahead-of-time tuned kernels (the bitblas package)"),
    # AutoGPTQ 0.7.1, the card's engine, in its own environment (make legacy-env; workbench.autogptq_engine).
    # backend: AutoGPTQ's QUANT_TYPE; qlinear: the module of the class it injects.
    KernelSpec("autogptq-exllama", "exllama", "qlinear_exllama", ("cuda",), (4,), _ALL_GROUP_SIZES,
               dtypes=("float16",), features_multiple=(32, 32), engine="autogptq",
               note="exllama (v1), the card's disable_exllama=False; with act-order its scratch buffer is "
                    "sized for 4096 tokens"),
    KernelSpec("autogptq-exllamav2", "exllamav2", "qlinear_exllamav2", ("cuda",), (4,), _ALL_GROUP_SIZES,
               dtypes=("float16",), features_multiple=(32, 32), engine="autogptq", note="exllamav2's kernel"),
    KernelSpec("autogptq-cuda-old", "cuda-old", "qlinear_cuda_old", ("cpu", "cuda"), (2, 3, 4, 8), _ALL_GROUP_SIZES,
               desc_act=(False,), dtypes=("float16", "bfloat16", "float32"), engine="autogptq",
               note="the old CUDA kernels (fp16 path with use_cuda_fp16, float16 only), which AutoGPTQ uses for "
                    "checkpoints without act-order; inputs of 128+ rows and layers whose features are not "
                    "multiples of 64 take its torch fallback, as does everything on cpu or without the extension"),
    KernelSpec("autogptq-cuda", "cuda", "qlinear_cuda", ("cpu", "cuda"), (2, 3, 4, 8), _ALL_GROUP_SIZES,
               desc_act=(True,), dtypes=("float16", "bfloat16", "float32"), engine="autogptq",
               note="the CUDA kernels AutoGPTQ uses for act-order checkpoints (same flags as cuda-old: the "
                    "checkpoint decides); the same torch fallback"),
    KernelSpec("autogptq-triton", "triton", "qlinear_triton", ("cuda",), (2, 4, 8), _ALL_GROUP_SIZES,
               dtypes=("float16",), features_multiple=(32, 32), needs_package="triton", engine="autogptq",
               note="AutoGPTQ's Triton kernels, written for triton 2.0.0 (not installed by make legacy-env)"),
    # ExLlamaV2's own engine (model/exllamav2_engine.py): its model, cache and forward loop, not transformers.
    KernelSpec("exllamav2-engine", "exllamav2", "", ("cuda",), (4,), _ALL_GROUP_SIZES, dtypes=("float16",),
               features_multiple=(32, 32), needs_package="exllamav2", engine="exllamav2",
               note="ExLlamaV2's own engine (exllamav2 0.3.2, an optional extra: pip install "
                    "'codefuse-workbench[exllamav2]'): its model classes, KV cache and forward loop decode the "
                    "workbench's token ids; transformers does not run. Its extension is compiled on first import "
                    "(3-4 minutes on a 16-core H200 host beside another build). First GPU only; a batch's prompts "
                    "must have one length; act-order only with equal groups; the decode modes static/graph/fast "
                    "do not apply"),
    KernelSpec(AUTO, AUTO, "", ("cpu", "cuda"), (2, 3, 4, 8), _ALL_GROUP_SIZES,
               dtypes=("float32", "float16", "bfloat16"),
               note="the first usable of: cpu: torch_fused, torch_aten, torch; "
                    "cuda: exllamav2, triton, torch. Marlin (minutes to build), machete (downloads) and "
                    "bitblas run only when asked for; cpu_avx512 (re-quantizes) too. In the AutoGPTQ "
                    "environment, where gptqmodel is absent: cuda: autogptq-exllama (the card's), "
                    "autogptq-exllamav2, then autogptq-cuda-old or autogptq-cuda (the checkpoint's act-order "
                    "decides); cpu: autogptq-cuda-old or autogptq-cuda, as the torch fallback"),
)}

# Each environment has one engine, so the other engine's kernels are never usable there and `auto`
# walks past them: gptqmodel's first, then AutoGPTQ's for the environment that has only AutoGPTQ.
AUTO_ORDER = {"cpu": ("torch_fused", "torch_aten", "torch", "autogptq-cuda-old", "autogptq-cuda"),
              "cuda": ("exllamav2", "triton", "torch", "autogptq-exllama", "autogptq-exllamav2", "autogptq-cuda-old",
                       "autogptq-cuda")}
_BY_QLINEAR = {s.qlinear: s.name for s in KERNELS.values() if s.qlinear}


@dataclass(frozen=True)
class KernelAvailability:
    kernel: str
    device: str
    available: bool
    reason: str  # why not, or what to expect (a build on first use) when it is available


# --- availability -----------------------------------------------------------------------------

def _spec(name: str) -> KernelSpec:
    if name not in KERNELS:
        raise KernelUnavailable(f"kernel={name!r} is not a known kernel; known: {', '.join(KERNELS)}")
    return KERNELS[name]


def resolve_device(device: str = AUTO) -> str:
    """'auto' is cuda when a GPU is visible, else cpu; 'cpu', 'cuda' and 'cuda:N' pass through."""
    import torch

    device = str(device)
    if device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    family, _, index = device.partition(":")
    if family not in ("cpu", "cuda") or (index and not index.isdigit()) or (family == "cpu" and index):
        raise ConfigError(f"device={device!r}: allowed values are 'auto', 'cpu', 'cuda' and 'cuda:N'")
    return device


def _cuda_indices(device: str) -> list[int]:
    import torch

    _, _, index = device.partition(":")
    return [int(index)] if index else list(range(torch.cuda.device_count()))


def _nvcc_version(nvcc: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in out.replace(",", " ").split():
        if word.startswith("V") and word[1:2].isdigit():
            major, minor = word[1:].split(".")[:2]
            return int(major), int(minor)
    return None


def _toolchain_problem() -> str | None:
    """What is missing to compile a torch.ops CUDA extension, as gptqmodel does on first use."""
    import os

    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    nvcc = shutil.which("nvcc") or (str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else None)
    if not nvcc or not os.path.exists(nvcc):
        return "it is compiled on first use and no nvcc was found (set CUDA_HOME or put nvcc on PATH)"
    version = _nvcc_version(nvcc)
    if version is None or version < (12, 8):
        return f"it is compiled on first use and gptqmodel needs nvcc >= 12.8; {nvcc} is {version}"
    if not (shutil.which("c++") or shutil.which("g++")):
        return "it is compiled on first use and no C++ compiler (c++/g++) is on PATH"
    if not is_ninja_available():
        return "it is compiled on first use and ninja is not installed"
    return None


def _device_problem(spec: KernelSpec, device: str) -> str | None:
    """Why `spec` cannot run on `device` of this machine, or None."""
    import torch

    if (problem := _engine_problem(spec)) is not None:
        return problem
    family = device.partition(":")[0]
    if family not in spec.devices:
        return f"runs on {' and '.join(spec.devices)} only, not {family}"
    if spec.name == AUTO:
        return None
    if family == "cpu":
        missing = [op for op in spec.cpu_ops if not hasattr(torch.ops.aten, op)]
        return f"this PyTorch build ({torch.__version__}) lacks aten::{missing[0]}" if missing else None
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        return f"no CUDA device is visible (torch {torch.__version__}, {build})"
    for i in _cuda_indices(device):
        if i >= torch.cuda.device_count():
            return f"cuda:{i} does not exist; {torch.cuda.device_count()} GPU(s) visible"
        cc = torch.cuda.get_device_capability(i)
        name = torch.cuda.get_device_name(i)
        if spec.min_capability and cc < spec.min_capability:
            need = ".".join(map(str, spec.min_capability))
            return f"needs compute capability >= {need}; cuda:{i} ({name}) is {cc[0]}.{cc[1]}"
        if spec.max_capability and cc > spec.max_capability:
            need = ".".join(map(str, spec.max_capability))
            return f"needs compute capability <= {need}; cuda:{i} ({name}) is {cc[0]}.{cc[1]}"
    if spec.needs_package and importlib.util.find_spec(spec.needs_package) is None:
        return f"needs the {spec.needs_package} package, which is not installed"
    if spec.needs_toolchain:
        return _toolchain_problem()
    if spec.engine == "autogptq":
        return device_problem(spec, device)
    if spec.engine == "exllamav2":
        return exllamav2_engine.device_problem(spec, device)
    return None


def _engine_problem(spec: KernelSpec) -> str | None:
    """Why this environment lacks the engine of `spec`: each engine lives in its own environment."""
    if spec.name == AUTO:  # it picks from every engine's kernels (AUTO_ORDER)
        return None
    if spec.engine == "autogptq":
        return environment_problem()
    if spec.engine == "exllamav2":
        return exllamav2_engine.environment_problem()
    if importlib.util.find_spec("gptqmodel") is None:
        return "needs the main environment's gptqmodel (make setup); this is another environment"
    return None


def _expectation(spec: KernelSpec) -> str:
    """What to expect from a kernel that can run."""
    notes = []
    if spec.needs_toolchain:
        notes.append("built on first use")
    if spec.needs_network:
        notes.append("its first build downloads CUTLASS")
    if not spec.exact:
        notes.append("re-quantizes weights to int8")
    if spec.name == "cpu_avx512":
        notes.append("this CPU has AVX-512" if _cpu_has("avx512f") else "this CPU has no AVX-512: AVX2 path")
    return "; ".join(notes) or "ok"


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def _engine_expectation(spec: KernelSpec, device: str) -> str:
    if spec.engine == "exllamav2":
        return exllamav2_engine.expectation(spec, device)
    return expectation(spec, device)


def available_kernels(device: str = AUTO) -> list[KernelAvailability]:
    """Every registered kernel with whether it can run on `device` here and, if not, why."""
    device = resolve_device(device)
    out = []
    for spec in KERNELS.values():
        problem = _device_problem(spec, device)
        if spec.name == AUTO and problem is None:
            usable = [k for k in AUTO_ORDER[device.partition(':')[0]] if _device_problem(KERNELS[k], device) is None]
            problem = None if usable else "none of its candidates can run here"
            reason = f"would pick {usable[0]} (for a checkpoint all allow)" if usable else problem
        else:
            reason = problem or (_engine_expectation(spec, device) if spec.engine != "gptqmodel"
                                 else _expectation(spec))
        out.append(KernelAvailability(spec.name, device, problem is None, reason))
    return out


# --- constraints of a checkpoint --------------------------------------------------------------

def linear_shapes(path) -> list[tuple[int, int]]:
    """(in_features, out_features) of the quantized linears of a Llama checkpoint, from config.json."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    h, m, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    q, kv = heads * hd, cfg.get("num_key_value_heads", heads) * hd
    return [(h, q), (h, kv), (q, h), (h, m), (m, h)]  # q; k and v; o; gate and up; down


def _checkpoint_problem(spec: KernelSpec, settings: GPTQSettings, shapes, dtype_name: str) -> str | None:
    """Why `spec` cannot run this checkpoint, or None."""
    if settings.bits not in spec.bits:
        return f"supports bits {spec.bits}; this checkpoint has bits={settings.bits}"
    if spec.name == AUTO:
        return None
    if settings.group_size not in spec.group_sizes:
        return f"supports group sizes {spec.group_sizes}; this checkpoint has group_size={settings.group_size}"
    if settings.desc_act not in spec.desc_act:
        return ("does not support act-order (desc_act=True) checkpoints" if settings.desc_act
                else "runs act-order (desc_act=True) checkpoints only")
    if settings.sym not in spec.sym:
        return "supports symmetric quantization only; this checkpoint has sym=False"
    if dtype_name not in spec.dtypes:
        return f"computes in {', '.join(spec.dtypes)}; dtype={dtype_name} was asked for"
    m_in, m_out = spec.features_multiple
    for fin, fout in shapes:
        if fin % m_in or fout % m_out:
            return f"needs in/out features divisible by {m_in}/{m_out}; this model has a {fin}x{fout} linear"
    return None


def choose_kernel(path, kernel: str = AUTO, device: str = AUTO, dtype=None) -> KernelSpec:
    """The kernel load_model would use for this checkpoint here; KernelUnavailable says why none.

    A named kernel is checked against this machine and the checkpoint; 'auto' takes the first of
    AUTO_ORDER that passes both.
    """
    device = resolve_device(device)
    settings, shapes = read_gptq_settings(path), linear_shapes(path)
    spec = _spec(kernel)
    family = device.partition(":")[0]

    def dtype_name(candidate: KernelSpec) -> str:
        return str(resolve_dtype(dtype, candidate, device)).removeprefix("torch.")

    if kernel != AUTO:
        problem = _device_problem(spec, device) or _checkpoint_problem(spec, settings, shapes, dtype_name(spec))
        if problem:
            raise KernelUnavailable(f"kernel {kernel!r} cannot run on {device}: {problem}")
        return spec
    reasons = []
    for name in AUTO_ORDER[family]:
        candidate = KERNELS[name]
        problem = _device_problem(candidate, device) or _checkpoint_problem(candidate, settings, shapes,
                                                                             dtype_name(candidate))
        if problem is None:
            return candidate
        reasons.append(f"{name}: {problem}")
    raise KernelUnavailable(f"kernel 'auto' found nothing that runs on {device}: " + "; ".join(reasons))


# --- loading ------------------------------------------------------------------------------------

def resolve_dtype(dtype, spec: KernelSpec | None = None, device: str = "cuda"):
    """dtype None means the kernel's natural one: float16 on a GPU (the checkpoint's scales are
    fp16 and the card runs in fp16); on the CPU float32 where the kernel computes in it, since
    CPUs without native half-precision arithmetic run fp16/bf16 several times slower."""
    import torch

    if dtype is None:
        if device.startswith("cpu") and spec is not None and "float32" in spec.dtypes:
            return torch.float32
        return torch.float16
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"dtype={dtype!r}: use float16, bfloat16 or float32")
        dtype = getattr(torch, dtype)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ConfigError(f"dtype={dtype}: use torch.float16, torch.bfloat16 or torch.float32")
    return dtype


def kernel_in_use(model) -> str:
    """The registry name of the kernel the model's quantized layers actually use."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    classes = sorted({type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear)})
    if not classes:
        raise KernelUnavailable("the loaded model has no quantized layers; the checkpoint was not loaded as GPTQ")
    if len(classes) > 1:
        raise KernelUnavailable(f"the loaded model mixes kernels ({', '.join(classes)}); expected one")
    return _BY_QLINEAR.get(classes[0], classes[0])


# --- command line ------------------------------------------------------------------------------

def format_registry(device: str = AUTO, checkpoint=None) -> str:
    """The registry as a table: constraints, and whether each kernel can run here (and on `checkpoint`)."""
    device = resolve_device(device)
    available = {a.kernel: a for a in available_kernels(device)}
    settings = read_gptq_settings(checkpoint) if checkpoint else None
    shapes = linear_shapes(checkpoint) if checkpoint else None
    rows = [("kernel", "runs on", "backend", "bits", "group sizes", "act-order", "sym-only", "min cc", "build",
             f"on {device}")]
    for spec in KERNELS.values():
        a = available[spec.name]
        verdict = ("yes" if a.available else "no") + f": {a.reason}"
        if a.available and settings is not None:
            problem = _checkpoint_problem(spec, settings, shapes, "float16")
            verdict = f"no: {problem}" if problem else verdict
        groups = "any" if spec.group_sizes == _ALL_GROUP_SIZES else ",".join(map(str, spec.group_sizes))
        rows.append((spec.name, "+".join(spec.devices), spec.backend, ",".join(map(str, spec.bits)), groups,
                     "yes" if True in spec.desc_act else "no", "yes" if spec.sym == (True,) else "no",
                     ".".join(map(str, spec.min_capability)) if spec.min_capability else "-",
                     "nvcc" if spec.needs_toolchain else (spec.needs_package or "-"), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str]) -> int:
    """`python -m workbench kernels [--device D] [--checkpoint PATH]`: the registry and what runs here."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench kernels",
                                     description="List the GPTQ kernels, their constraints and whether each can "
                                                 "run on this machine.")
    parser.add_argument("--device", default=AUTO, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--checkpoint", help="also check each kernel against this checkpoint's settings and shapes")
    args = parser.parse_args(argv)
    print(format_registry(args.device, args.checkpoint))
    for spec in KERNELS.values():
        if spec.note:
            print(f"\n{spec.name}: {spec.note}", end="")
    print()
    return 0
