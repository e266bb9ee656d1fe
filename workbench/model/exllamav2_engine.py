"""ExLlamaV2's own engine (the `exllamav2` package, 0.3.2): exllama as its users run it.

The registry's `exllamav2` kernel is ExLlamaV2's GEMM inside transformers; users who pick
"exllama" today run ExLlamaV2's whole engine instead: its own model classes, its own KV cache
and its own forward loop. This module makes that engine one more entry of the kernel registry
(`exllamav2-engine`), an optional extra (`pip install 'codefuse-workbench[exllamav2]'`).

It takes what every engine takes and gives what every engine gives: a GPTQ checkpoint (the
card's `.bin` converted once to safetensors by `checkpoint.prepare_checkpoint`, which never
unpickles anything but tensors), the workbench's token ids, and a `GenerationRecord` built by
the same code as every other record (generation/generate.py), with per-token times from the workbench's
clock (measure.py), the stop reason, log-probabilities and what ran. The decoding itself is the
loop in generation/static.py around `ExLlamaV2Decoder`, whose `prefill` and `step` call ExLlamaV2's
`model.forward` with its `ExLlamaV2Cache`; transformers does not run at all.

What it refuses, with a reason, instead of running something else: a machine without CUDA; no
exllamav2 package; an extension not built yet on a machine without nvcc, ninja or a C++
compiler (the wheel compiles it on first import, about 100 s on a 16-core host); bits other than
4 (ExLlamaV2 reads GPTQ tensors as 4-bit whatever the config says); group sizes that are not
powers of two (it derives the group size as the next power of two); act-order `g_idx` whose
groups are not all `group_size` rows (it sorts rows by group and then assumes equal groups);
a folder without safetensors (a `.bin` not yet converted); prompts of different lengths in one
batch (it has no left padding here). nothing here imports exllamav2 until a model is loaded,
because importing it builds its extension.

One correction, applied and recorded (`restore_causal_prefill`): exllamav2 0.3.2 attends to a prompt
of several tokens through PyTorch's SDPA, when neither flash-attn nor xformers is installed, with no
mask at all: its branch for "causal" asks for the block-diagonal mask of packed sequences, which is
None for ordinary batches (upstream commit 2e630ae, February 2025, in every release since 0.2.9). Every
prompt token then sees the tokens after it, so the cache a prefill leaves, and every answer after
it, are not the model's. Found on the H200 on 2026-11-30 (benchmarks/engine_layers.py): layer 0's
seven weights as ExLlamaV2 holds them equal the checkpoint dequantized (relative error 2e-4), its
GEMMs agree (8e-4), yet the residual stream after the first layer was 0.7-0.9 apart. The workbench
gives that branch the lower-right causal mask the code before that commit passed (the mask flash-attn
applies on its own); decode steps of one token, which need no mask, run ExLlamaV2's code untouched.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

from ..errors import ConfigError, KernelUnavailable
from ..measure import timed_s
from ..prompts.tokenizer import load_tokenizer
from .attention import apply_attention, attention_applied, attention_in_use
from .checkpoint import GPTQSettings, read_gptq_settings, weight_files
from .loaded import LoadedModel, record_load

ENGINE = "exllamav2"
KERNEL = "exllamav2-engine"
PACKAGE_VERSION = "0.3.2"
INSTALL = f"pip install 'codefuse-workbench[exllamav2]' (exllamav2=={PACKAGE_VERSION})"
DECODE_MODE = "exllamav2"  # what a record says ran: ExLlamaV2's forward loop, not one of decode.DECODE_MODES
NOTE = ("ExLlamaV2's own model, cache and forward loop (exllamav2 {version}); the workbench chose the tokens "
        "and kept the time; transformers did not run")
CAUSAL_NOTE = ("its SDPA attention over prompts given the causal mask exllamav2 0.3.2 leaves out "
               "(restore_causal_prefill)")
PROMPT_CHUNK_TOKENS = 2048  # ExLlamaV2's max_input_len: longer prompts are prefilled in chunks of this


def installed() -> bool:
    return importlib.util.find_spec("exllamav2") is not None


def environment_problem() -> str | None:
    """Why this environment cannot run ExLlamaV2's engine at all, or None."""
    return None if installed() else f"needs the exllamav2 package, an optional extra: {INSTALL}"


def extension_built() -> bool:
    """True when ExLlamaV2's compiled extension can be imported without a build: a prebuilt
    `exllamav2_ext` module, or torch's JIT cache holding the one its first import built."""
    if importlib.util.find_spec("exllamav2_ext") is not None:
        return True
    try:
        from torch.utils.cpp_extension import _get_build_directory

        build = Path(_get_build_directory("exllamav2_ext", False))
    except (ImportError, OSError, RuntimeError):
        return False
    return any(build.glob("exllamav2_ext*.so"))


def toolchain_problem() -> str | None:
    """What is missing to build ExLlamaV2's extension on first import (nvcc, ninja, a C++ compiler)."""
    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    nvcc = shutil.which("nvcc") or (str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else None)
    why = "its extension is compiled on first import (about 100 s on a 16-core host) and "
    if not nvcc or not os.path.exists(nvcc):
        return why + "no nvcc was found (set CUDA_HOME or put nvcc on PATH)"
    if not (shutil.which("c++") or shutil.which("g++")):
        return why + "no C++ compiler (c++/g++) is on PATH"
    if not is_ninja_available():
        return why + "ninja is not installed"
    return None


def device_problem(spec, device: str) -> str | None:
    """Why the engine cannot run on `device` beyond the registry's generic checks, or None."""
    if device.partition(":")[2] not in ("", "0"):
        return f"runs on the first GPU (cuda or cuda:0) here; {device} was asked for"
    return None if extension_built() else toolchain_problem()


def expectation(spec, device: str) -> str:
    if extension_built():
        return "ok (its extension is built)"
    return "its extension is built on first import (about 100 s on a 16-core host)"


# --- what it can read -------------------------------------------------------------------------

def settings_problem(settings: GPTQSettings) -> str | None:
    """Why ExLlamaV2 would misread a checkpoint with these settings, or None."""
    if settings.bits != 4:
        return (f"ExLlamaV2 reads GPTQ tensors as 4-bit only (8 codes per int32, whatever the config says); "
                f"this checkpoint has bits={settings.bits}")
    if settings.group_size != -1 and settings.group_size & (settings.group_size - 1):
        return (f"ExLlamaV2 takes a GPTQ group size to be the next power of two of rows / groups; "
                f"group_size={settings.group_size} is not a power of two")
    if settings.checkpoint_format not in ("gptq", "gptq_v2"):
        return f"checkpoint_format={settings.checkpoint_format!r}; ExLlamaV2 reads 'gptq' (v1) and 'gptq_v2' only"
    return None


def act_order_problem(name: str, g_idx, group_size: int, in_features: int) -> str | None:
    """Why ExLlamaV2 would misread this layer's `g_idx`, or None.

    With act-order ExLlamaV2 sorts the input rows by group and then takes row // group_size as a
    row's group, which holds only when every group has exactly `group_size` rows."""
    import torch

    if group_size == -1:
        return None
    groups = math.ceil(in_features / group_size)
    g = g_idx.to(torch.long)
    if g.numel() != in_features or int(g.min()) < 0 or int(g.max()) >= groups:
        return f"{name}.g_idx holds group numbers outside 0..{groups - 1} or has the wrong length"
    counts = torch.bincount(g, minlength=groups)
    expected = torch.full_like(counts, group_size)
    expected[-1] = in_features - group_size * (groups - 1)
    if not torch.equal(counts, expected):
        bad = int((counts != expected).nonzero()[0])
        return (f"{name}.g_idx gives group {bad} {int(counts[bad])} rows, not {int(expected[bad])}: an act-order "
                "layout ExLlamaV2 would misread (it assumes equal groups after sorting)")
    return None


def check_readable(folder) -> GPTQSettings:
    """Refuse a folder ExLlamaV2 would fail on or misread; returns its settings.

    Reads only safetensors headers and the (small) g_idx tensors of act-order checkpoints."""
    from safetensors import safe_open

    folder = Path(folder)
    files = weight_files(folder)
    if files[0].suffix != ".safetensors":
        raise KernelUnavailable(
            f"{folder}: the weights are {files[0].name}, a pickle, and ExLlamaV2 reads safetensors only. Load it "
            "with load_model(..., kernel='exllamav2-engine'), which converts it once (prepare_checkpoint), "
            "or convert it yourself with workbench.checkpoint.prepare_checkpoint")
    settings = read_gptq_settings(folder)
    if problem := settings_problem(settings):
        raise KernelUnavailable(f"kernel {KERNEL!r} cannot read {folder.name}: {problem}")
    if settings.desc_act:
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in (k for k in f.keys() if k.endswith(".g_idx")):
                    g_idx = f.get_tensor(key)
                    name = key.removesuffix(".g_idx")
                    if problem := act_order_problem(name, g_idx, settings.group_size, g_idx.numel()):
                        raise KernelUnavailable(f"kernel {KERNEL!r} cannot read {folder.name}: {problem}")
    return settings


# --- the loaded engine ------------------------------------------------------------------------

class _DeviceMarker:
    """What `input_device(model)` reads: `.weight.device`. ExLlamaV2 keeps its embedding table on
    the CPU (its default), but the model's work and its logits are on the GPU, and the workbench's
    clock must mark GPU time there."""

    def __init__(self, device):
        import torch

        self.weight = torch.empty(0, device=device)


class ExLlamaV2Runner:
    """A loaded ExLlamaV2 model behind the calls the workbench makes of `LoadedModel.model`: a
    full forward (`runner(input_ids=...)`: logits of every position), the decoder that
    generation/static.py's loop drives, and what the floor needs to know (`config`, `decode_bytes_per_token`)."""

    dtype = None  # torch.float16, set in __init__ (torch is imported lazily)

    def __init__(self, exl_model, exl_config, config_json: dict, settings: GPTQSettings, device: str, attention: str):
        import torch

        self.exl_model, self.exl_config, self.settings = exl_model, exl_config, settings
        self.dtype = torch.float16
        self.device = torch.device(device)
        # kv_bytes_per_token and attention_in_use read these; transformers' names
        self.config = SimpleNamespace(**config_json, _attn_implementation=attention)
        self._marker = _DeviceMarker(self.device)
        self._decoder = None  # (batch, length) -> ExLlamaV2Decoder, one at a time

    def get_input_embeddings(self):
        return self._marker

    def eval(self):
        return self

    def set_attn_implementation(self, name: str) -> None:
        """ExLlamaV2 picks its own attention (see `exllamav2_attention`); SDPA's backend switches,
        which the workbench holds while this runner runs (`attention_applied`), apply where it uses SDPA."""

    def __call__(self, input_ids=None, **_):
        """Logits of every position ([B, T, V], float16 as ExLlamaV2 returns them), from an empty cache."""
        b, t = input_ids.shape
        cache = self._cache(b, t)
        with _own_stream(self.device), attention_applied(self):
            logits = self.exl_model.forward(input_ids.cpu(), cache=cache)  # [B, T, V]
        return SimpleNamespace(logits=logits.to(self.device) if logits.device != self.device else logits)

    def _cache(self, batch: int, length: int):
        """An ExLlamaV2Cache of at least this size, emptied: the decoder's when it fits, else a new one."""
        decoder = self.decoder(batch, length)
        decoder.cache.current_seq_len = 0
        return decoder.cache

    def decoder(self, batch: int, length: int) -> "ExLlamaV2Decoder":
        """The decoder for this batch and cache length, made on first use; a new shape frees the old cache."""
        if self._decoder is not None and self._decoder.batch == batch and self._decoder.length >= length:
            return self._decoder
        length = -(-length // 128) * 128  # nearby lengths share a cache
        if length > self.exl_config.max_seq_len:
            raise ConfigError(f"{length} tokens of cache: ExLlamaV2 was configured for {self.exl_config.max_seq_len} "
                              "(load_exllamav2's max_seq_len)")
        self._decoder = None
        _empty_cuda_cache()
        self._decoder = ExLlamaV2Decoder(self, batch, length)
        return self._decoder

    def decode_bytes_per_token(self) -> int:
        """Bytes a batch-1 step must read without the KV cache: the quantized linears (4-bit codes, fp16
        scales and 4-bit zeros per group), the fp16 lm_head and norms (the count of docs/model-facts.md)."""
        c, s = self.config, self.settings
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
        shapes = [(c.hidden_size, q), (c.hidden_size, kv), (c.hidden_size, kv), (q, c.hidden_size),
                  (c.hidden_size, c.intermediate_size), (c.hidden_size, c.intermediate_size),
                  (c.intermediate_size, c.hidden_size)]
        per_layer = 0
        for fin, fout in shapes:
            groups = math.ceil(fin / (s.group_size if s.group_size > 0 else fin))
            per_layer += fin * fout * s.bits // 8 + groups * fout * 2 + groups * fout * s.bits // 8
        norms = (2 * c.num_hidden_layers + 1) * c.hidden_size * 2
        return c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size * 2 + norms

    def unload(self) -> None:
        """Free ExLlamaV2's modules (their C++ matrices included) and its cache."""
        self._decoder = None
        if self.exl_model is not None:
            self.exl_model.unload()
            self.exl_model = None
        _empty_cuda_cache()


class ExLlamaV2Decoder:
    """generation/static.py's decoder protocol (`prefill`, `step`, `mode`, `note`, `graph`) over ExLlamaV2's
    `model.forward` and an `ExLlamaV2Cache` of `length` tokens for `batch` sequences."""

    graph = None  # ExLlamaV2's loop is never captured by the workbench
    mode = DECODE_MODE

    def __init__(self, runner: ExLlamaV2Runner, batch: int, length: int):
        from exllamav2 import ExLlamaV2Cache

        self.runner, self.batch, self.length = runner, batch, length
        self.cache = ExLlamaV2Cache(runner.exl_model, batch_size=batch, max_seq_len=length)
        self.note = NOTE.format(version=_exllamav2_version())
        if runner.config._attn_implementation == "exllamav2-sdpa":
            self.note += "; " + CAUSAL_NOTE

    def prefill(self, input_ids, attention_mask):
        """Fill the cache with the prompt batch ([B, T], no padding); returns [B, V] float32 logits."""
        b, t = input_ids.shape
        if not bool(attention_mask.bool().all()):
            raise ConfigError("kernel 'exllamav2-engine' takes batches of prompts of one length (no padding); "
                              "give prompts of equal length or one prompt per call")
        if b != self.batch or t >= self.length:
            raise ConfigError(f"a batch of {b} x {t} does not fit this decoder ({self.batch} x {self.length})")
        self.cache.current_seq_len = 0
        with _own_stream(self.runner.device), attention_applied(self.runner):
            logits = self.runner.exl_model.forward(input_ids.cpu(), cache=self.cache, last_id_only=True)  # [B, 1, V]
        return logits[:, -1].to(self.runner.device).float()

    def step(self, token_ids):
        """Feed one token per row ([B]); returns this step's [B, V] float32 logits."""
        import torch

        with torch.profiler.record_function("wb::step"), _own_stream(self.runner.device), \
                attention_applied(self.runner):
            logits = self.runner.exl_model.forward(token_ids.view(-1, 1).cpu(), cache=self.cache)  # [B, 1, V]
        return logits[:, -1].to(self.runner.device).float()


class _own_stream:
    """ExLlamaV2 switches the thread's current CUDA stream to its own on every forward and leaves
    it there. Its stream comes from PyTorch's pool, which creates streams non-blocking: work on the
    caller's stream is NOT ordered with it by itself. So, around each forward: ExLlamaV2's stream
    waits for what the caller queued before, the caller's stream waits for the forward's work (the
    logits), and the caller's stream is current again, so that the workbench's clock marks and
    token choices come after the work they time and read.

    (Measured without these waits on 2026-11-30: marks on the default stream ran ahead of
    ExLlamaV2's kernels; a profiled 2048-token prefill showed a first token at 114 ms beside 268 ms
    of its GPU work. results/h200/issue21/README.md says which numbers that affects.)"""

    _theirs = {}  # device -> ExLlamaV2's stream, seen after its first forward

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        self.before = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        if self.before is not None and self.device in self._theirs:
            self._theirs[self.device].wait_stream(self.before)

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            theirs = torch.cuda.current_stream(self.device)
            self._theirs[self.device] = theirs
            self.before.wait_stream(theirs)
            torch.cuda.set_stream(self.before)


def _empty_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _exllamav2_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("exllamav2")
    except metadata.PackageNotFoundError:
        return "unknown"


def exllamav2_attention() -> str:
    """Which attention ExLlamaV2 runs here, named as it decides (flash-attn, xformers, SDPA, matmul)."""
    from exllamav2 import attn

    if attn.has_flash_attn:
        return "exllamav2-flash-attn"
    if attn.has_xformers:
        return "exllamav2-xformers"
    return "exllamav2-sdpa" if attn.has_lower_right_sdpa else "exllamav2-matmul"


def import_exllamav2():
    """Import exllamav2, which builds its extension the first time; returns (module, seconds it took)."""
    if (problem := environment_problem()) is not None:
        raise KernelUnavailable(f"kernel {KERNEL!r} {problem}")
    started = time.perf_counter()
    try:
        import exllamav2
    except (ImportError, RuntimeError, OSError) as e:  # a failed JIT build surfaces as one of these
        raise KernelUnavailable(f"kernel {KERNEL!r}: importing exllamav2 (which builds its extension on first "
                                f"import) failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    from exllamav2 import attn

    restore_causal_prefill(attn)
    return exllamav2, time.perf_counter() - started


def restore_causal_prefill(attn) -> None:
    """Give exllamav2's SDPA attention the causal mask it leaves out (the module's docstring says why).

    `attn` is the `exllamav2.attn` module. Its `ExLlamaV2Attention._attn_torch` is wrapped once: a
    causal call on the SDPA branch for a plain batch (no packed sequences, no block-diagonal layer)
    of several query tokens, or with an input mask, runs SDPA with the mask that branch meant to pass
    (lower-right causal; with an input mask, ExLlamaV2's own causal-and-padding mask). Everything
    else (one query token without a mask, flash-attn and xformers, the matmul branch, packed
    sequences) runs ExLlamaV2's code as it is."""
    cls = attn.ExLlamaV2Attention
    original = cls._attn_torch
    if getattr(original, "workbench_causal", False):
        return

    def _attn_torch(self, batch_size, q_len, q_states, k_states, v_states, attn_params, cfg, causal=True):
        sdpa = attn.has_lower_right_sdpa and not cfg.no_sdpa and not cfg.attn_logit_softcapping
        plain = causal and sdpa and not getattr(attn_params, "paged", False) \
            and self.layer_idx not in attn_params.block_diag_layers and getattr(attn_params, "cu_seqlens", None) is None
        if not plain or (q_len == 1 and attn_params.is_causal()):
            return original(self, batch_size, q_len, q_states, k_states, v_states, attn_params, cfg, causal)
        return causal_sdpa(self, batch_size, q_len, q_states, k_states, v_states, attn_params)

    _attn_torch.workbench_causal = True
    _attn_torch.original = original  # exllamav2's own, for a comparison (benchmarks/engine_layers.py)
    cls._attn_torch = _attn_torch


def causal_sdpa(module, batch_size, q_len, q_states, k_states, v_states, attn_params):
    """ExLlamaV2's SDPA branch with its mask: q/k/v [B, T, heads, D] -> [B, T, heads * D]."""
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    heads, head_dim = q_states.shape[2], q_states.shape[3]
    q = q_states.transpose(1, 2)
    k = module.repeat_kv(k_states.transpose(1, 2), module.num_key_value_groups)
    v = module.repeat_kv(v_states.transpose(1, 2), module.num_key_value_groups)
    if module.sliding_window and k.shape[2] >= module.sliding_window:
        k, v = k[:, :, -module.sliding_window:], v[:, :, -module.sliding_window:]
    if attn_params.is_causal():
        mask = causal_lower_right(q_len, k.shape[2])
    else:
        mask = attn_params.get_attn_mask(q.device)
    out = F.scaled_dot_product_attention(q, k, v, mask, scale=module.scaling)
    return out.transpose(1, 2).reshape(batch_size, q_len, heads * head_dim)


def load_exllamav2(path: Path, prepared: Path, kernel_requested: str, device: str, verified, convert_s,
                   attention: str = "sdpa-no-cudnn", max_seq_len: int = 4096 + 2048, *,
                   trust_remote_code: bool = False, code_hooks: list[str] | None = None):
    """Load `prepared` (a safetensors GPTQ folder) with ExLlamaV2 and record what ran.

    Called by `load.load_model` after it has refused a folder's code hooks (unless trusted),
    checked the machine, verified `path`, matched its tensors with its config.json and converted
    it if needed; returns the same LoadedModel and LoadRecord as every engine.
    `attention` picks SDPA's backends while the runner runs (workbench.attention), which ExLlamaV2's
    own SDPA calls obey: with cuDNN on, every new cache length builds a cuDNN plan (results/README)."""
    import json

    import torch

    settings = check_readable(prepared)
    exllamav2, import_s = import_exllamav2()
    config = exllamav2.ExLlamaV2Config(str(prepared))
    config.max_seq_len = max_seq_len
    config.max_input_len = PROMPT_CHUNK_TOKENS
    config.max_attention_size = PROMPT_CHUNK_TOKENS ** 2
    # ExLlamaV2 looks for the v2 zero convention in config.json's quantization_config only; the
    # AutoGPTQ layout states it in quantize_config.json, so it is set from the settings read there.
    config.checkpoint_offset_qzeros = settings.checkpoint_format == "gptq_v2"
    config_json = json.loads((prepared / "config.json").read_text())
    rope_from = match_transformers_config(config, config_json)  # before the load computes its rotary tables
    model = exllamav2.ExLlamaV2(config)
    _, load_s = timed_s(lambda: model.load(), device)
    runner = ExLlamaV2Runner(model, config, config_json, settings, device, exllamav2_attention())
    apply_attention(runner, attention)
    first = torch.tensor([[config_json.get("bos_token_id", 1)]])
    _, first_forward_s = timed_s(lambda: runner(input_ids=first), device)
    exl = {"version": _exllamav2_version(), "import_s": round(import_s, 3),
           "attention": runner.config._attn_implementation, "max_seq_len": max_seq_len,
           "max_input_len": config.max_input_len, "no_graphs": bool(getattr(config, "no_graphs", False)),
           "checkpoint_offset_qzeros": config.checkpoint_offset_qzeros,
           "rotary_embedding_base": config.rotary_embedding_base, "rope_read_from": rope_from,
           "causal_prefill": ("restored by the workbench: " + CAUSAL_NOTE) if runner.config._attn_implementation
           == "exllamav2-sdpa" else "ExLlamaV2's own (flash-attn or xformers mask the prompt themselves)"}
    record = record_load(runner, path, kernel=KERNEL, kernel_requested=kernel_requested, backend=ENGINE, device=device,
                         torch_dtype=torch.float16, loaded_from=prepared, verified=verified, convert_s=convert_s,
                         load_s=load_s, attention=attention_in_use(runner), env={"exllamav2": exl},
                         first_forward_s=first_forward_s, settings=settings,
                         trust_remote_code=trust_remote_code, code_hooks=code_hooks)
    return LoadedModel(model=runner, tokenizer=load_tokenizer(path), kernel=KERNEL, kernel_requested=kernel_requested,
                       device=device, dtype=torch.float16, path=path, load_record=record, engine_handle=model,
                       attention=attention)


def match_transformers_config(exl_config, config_json: dict) -> str:
    """Make ExLlamaV2's reading of config.json agree with transformers', or refuse the checkpoint.

    ExLlamaV2 0.3.2 reads the rotary base from a top-level `rope_theta` and its scaling from
    `rope_scaling`, as transformers 4 wrote config.json. transformers 5 writes both under
    `rope_parameters`, where ExLlamaV2 does not look: it then runs with its default base, 10,000,
    instead of CodeLlama's 1,000,000, and its logits part from every other kernel's (seen on the
    H200 on 2026-11-30: the demo model's greedy answers all differed from the torch kernel's, max
    |dlogit| 7.4). So the base (and a linear scaling) is taken from `rope_parameters` where that is
    where it is; a scaling it cannot be given this way is refused by name. Then every setting the
    forward depends on is compared with config.json, and a difference is an error rather than a
    different model. Returns where the base was read from.
    This alone did not make the engine agree with gptqmodel's kernels: the rest was the causal mask
    its SDPA prefill leaves out (restore_causal_prefill; results/README.md, fourth session)."""
    params = config_json.get("rope_parameters") or {}
    source = "rope_theta"
    if "rope_theta" not in config_json and "rope_theta" in params:
        exl_config.rotary_embedding_base = float(params["rope_theta"])
        source = "rope_parameters"
    rope_type = params.get("rope_type", "default")
    if not config_json.get("rope_scaling") and rope_type not in ("default", None):
        if rope_type != "linear":
            raise ConfigError(f"config.json's rope_parameters has rope_type={rope_type!r}; ExLlamaV2 0.3.2 reads "
                              "rotary scaling from rope_scaling only, and the workbench maps only 'linear' for it")
        exl_config.scale_pos_emb = float(params["factor"])
    heads = config_json["num_attention_heads"]
    expected = {
        "rotary_embedding_base": float(config_json.get("rope_theta", params.get("rope_theta", 10000.0))),
        "norm_eps": float(config_json.get("rms_norm_eps", 1e-6)),
        "hidden_size": config_json["hidden_size"], "intermediate_size": config_json["intermediate_size"],
        "num_attention_heads": heads, "num_key_value_heads": config_json.get("num_key_value_heads", heads),
        "num_hidden_layers": config_json["num_hidden_layers"], "vocab_size": config_json["vocab_size"],
        "head_dim": config_json.get("head_dim") or config_json["hidden_size"] // heads,
    }
    differ = {k: (getattr(exl_config, k, None), v) for k, v in expected.items() if getattr(exl_config, k, None) != v}
    if differ:
        raise ConfigError("ExLlamaV2 read this config.json differently from transformers: "
                          + ", ".join(f"{k} {theirs!r} against {ours!r}" for k, (theirs, ours) in differ.items()))
    return source


def is_runner(model) -> bool:
    """True for a LoadedModel.model that is ExLlamaV2's engine (not a transformers model)."""
    return isinstance(model, ExLlamaV2Runner)
