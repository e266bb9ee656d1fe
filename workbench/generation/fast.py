"""The workbench's own decode step for Llama checkpoints: `decode_mode="fast"`.

The "graph" mode replays transformers' forward; its step on the 34B shapes is 9.7 ms of
quantized GEMMs, 1.7 ms of attention, 1.9 ms of about 1,800 small kernels and 1.0 ms of host
time (results/README.md). This step is written for the decode instead, gpt-fast style, on the
loaded model's own weights and kernels, with each change a switch of `FastConfig` so that each
can be proven (`prove_equal(loaded, "fast")`) and measured beside the one before:

- `fuse`: q/k/v and gate/up are one quantized GEMM each, their checkpoint tensors
  concatenated along the output dimension at load (the loaded kernel's own class, built again);
- `compile`: the non-GEMM part of a layer (norms, rotary, residual adds, SwiGLU) as a few
  torch.compile'd kernels inside the captured step, and in the prefill (compiled there for any
  prompt length: ExLlamaV2's prefill led ours by its fused norm and SwiGLU kernels);
- `attention="filled"`: a Triton kernel that reads only the filled part of the cache, its
  length taken from a device buffer (model/triton_kernels.py), instead of SDPA over the whole cache;
- `gemm="triton"`: the workbench's batch-1 4-bit GEMV (model/triton_kernels.py) on the fused weights
  for one-row inputs; inputs of several rows (prefill, batches) go through the loaded kernel's
  own layers, unfused, or the dense path below;
- `dense_prefill_rows`: prefills of at least this many rows dequantize each weight once and
  run a dense fp16 GEMM, ExLlamaV2's own switch;
- `dense_keep`: with it, the weights are dequantized once when the step's weights are built and
  the fp16 copy is kept for every later prefill (the 4-bit copy the dequantization read is then
  dropped unless the Triton GEMV needs it). It costs the fp16 weights' memory (66 GB for the 34B,
  checked against the free memory first) and saves the dequantization each prefill pass pays: on
  the H200 with the 34B the 22 prefill passes of the 164-prompt workload at batch 48 took 4.08 s
  instead of 4.61 (4.34 instead of 4.74 in a second run; results/README.md, fourth session);
- `store_in_rotary`: the new token's keys and values are written to the cache inside the
  compiled rotary kernel rather than by two copies of their own per layer;
- `narrow_to` (the workload runner's slot step, fast_slots.py): once no prompt waits, the rows
  still decoding move to the front and each step runs over the narrowest prepared width that holds
  them (powers of two from `narrow_to`, each its own graph, captured before the workload starts):
  with narrow_to=16 and dense_keep the 164-prompt workload on the H200 (34B shapes, batch 48) ran at
  1140-1167 useful tokens/s, with dense_keep alone 1103-1127 (workload.py has the table);
- `combo_kernels`: inductor's combo kernels for the decode step's compiled pieces, so that
  kernels of one piece that do not depend on each other (q's rotation, k's rotation and store,
  v's store) are one launch: on the H200 with the 34B shapes the step went from 649 launches to
  505, and from 8.11 to 7.89 ms beside the step without them in the same run (7.57 ms in a run on
  another machine; results/README.md). Not for the workload runner's batches: with the cache
  writes in the rotary kernel they made its batch-48 step 26.8 ms instead of 18.7 (fourth session).

The step lives in `FastDecoder`, which static.py's loop drives like its own decoders: static
buffers, its own KV cache (a [B, KV heads, length, head dim] tensor per layer) and, on CUDA, the step
captured in a graph and checked against the same step run eagerly (graphstep.py). Prompts of
one batch must have one length (no padding).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..model import triton_kernels
from ..model.attention import attention_applied
from ..model.checkpoint import GPTQSettings, read_gptq_settings, weight_files
from .graphstep import CapturedStep

FAST_ATTENTIONS = ("sdpa", "filled")
FAST_GEMMS = ("kernel", "triton")
FUSABLE_KERNELS = ("torch", "triton", "marlin")  # gptqmodel classes rebuilt here from concatenated tensors


@dataclass(frozen=True)
class FastConfig:
    """What `decode_mode="fast"` runs (see the module's docstring for each switch)."""

    fuse: bool = True  # q/k/v and gate/up as one quantized GEMM each
    compile: bool = False  # the non-GEMM part of each layer under torch.compile (CUDA only)
    attention: str = "sdpa"  # "sdpa": the whole static cache under a mask; "filled": only the filled part (CUDA)
    gemm: str = "kernel"  # "kernel": the loaded kernel's GEMM; "triton": the workbench's 4-bit GEMV for one row (CUDA)
    dense_prefill_rows: int = 0  # prefills of at least this many rows: dequantize once + dense GEMM; 0 = never
    store_in_rotary: bool = False  # the new token's keys and values written to the cache by the compiled rotary
    combo_kernels: bool = False  # a compiled piece's independent kernels launched as one (inductor's combo kernels)
    dense_keep: bool = False  # dequantize once at build and keep the fp16 weights for every dense prefill
    narrow_to: int = 0  # the workload runner's tail steps over as few rows as hold the rest, down to this; 0 = never
    graph: bool = True  # capture the step in a CUDA graph (on CUDA)

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"FastConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        for name in ("fuse", "compile", "graph", "store_in_rotary", "combo_kernels", "dense_keep"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True or False")
        if self.attention not in FAST_ATTENTIONS:
            bad("attention", ", ".join(FAST_ATTENTIONS))
        if self.gemm not in FAST_GEMMS:
            bad("gemm", ", ".join(FAST_GEMMS))
        if self.gemm == "triton" and not self.fuse:
            bad("gemm", "'kernel' when fuse=False (the Triton GEMV runs the fused weights)")
        if not (isinstance(self.dense_prefill_rows, int) and self.dense_prefill_rows >= 0):
            bad("dense_prefill_rows", "an integer >= 0 (0 = never)")
        if self.store_in_rotary and not self.compile:
            bad("store_in_rotary", "False when compile=False (the store is fused into the compiled rotary kernel)")
        if self.combo_kernels and not self.compile:
            bad("combo_kernels", "False when compile=False (they are the compiled pieces' kernels)")
        if self.dense_keep and not self.dense_prefill_rows:
            bad("dense_keep", "False when dense_prefill_rows=0 (it keeps the dense prefill's weights)")
        if isinstance(self.narrow_to, bool) or not isinstance(self.narrow_to, int) or self.narrow_to < 0:
            bad("narrow_to", "an integer >= 0 (0 = never)")

    def describe(self) -> str:
        return (f"{'fused' if self.fuse else 'separate'} q/k/v and gate/up, GEMM {self.gemm}, "
                f"attention {self.attention}, "
                f"compile {'on' if self.compile else 'off'}"
                f"{' (cache write in the rotary kernel)' if self.store_in_rotary else ''}"
                f"{' (combo kernels)' if self.combo_kernels else ''}, dense prefill "
                f"{'from ' + str(self.dense_prefill_rows) + ' rows' if self.dense_prefill_rows else 'off'}"
                f"{' (fp16 weights kept)' if self.dense_keep else ''}"
                f"{f', tail narrowed down to {self.narrow_to} rows' if self.narrow_to else ''}")

    def needs_packed(self) -> bool:
        """Whether the workbench's own copy of the 4-bit tensors is needed (its GEMV, dense prefill)."""
        return self.gemm == "triton" or self.dense_prefill_rows > 0


def parse_fast_config(pairs: list[str]) -> FastConfig:
    """["fuse=1", "dense_prefill_rows=32", ...] (a command line's --fast-config) -> FastConfig; an
    unknown field or a value of the wrong kind is a ConfigError that names it."""
    import dataclasses

    fields = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in dataclasses.fields(FastConfig)}
    values = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in fields:
            raise ConfigError(f"--fast-config {pair!r}: give FIELD=VALUE with FIELD one of {', '.join(fields)}")
        if fields[name] == "bool":
            if text not in ("0", "1", "true", "false", "True", "False"):
                raise ConfigError(f"--fast-config {pair!r}: {name} takes 0/1 or true/false")
            values[name] = text in ("1", "true", "True")
        elif fields[name] == "int":
            try:
                values[name] = int(text)
            except ValueError:
                raise ConfigError(f"--fast-config {pair!r}: {name} takes an integer") from None
        else:
            values[name] = text
    return FastConfig(**values)


def set_fast_config(loaded, config: FastConfig) -> FastConfig:
    """Choose what `decode_mode="fast"` runs on `loaded` from now on (its decoder is made again)."""
    if not isinstance(config, FastConfig):
        raise ConfigError(f"config must be a FastConfig, got {type(config).__name__}")
    loaded.fast_config = config
    loaded.release_decoder()  # static.decoder_for makes the next one with this config
    return config


def fast_config(loaded) -> FastConfig:
    return loaded.fast_config or FastConfig()


# --- weights --------------------------------------------------------------------------------------

@dataclass
class PackedGPTQ:
    """A 4-bit weight as the workbench's kernels read it: AutoGPTQ's packed codes, fp16 scales, and
    zero x scale per group (w = s*q - zs); groups in order (no act-order)."""

    qweight: object  # [K / 8, N] int32
    scales: object  # [K / group, N] fp16
    zs: object  # [K / group, N] fp16
    group_size: int

    @property
    def in_features(self) -> int:
        return self.qweight.shape[0] * 8

    @property
    def out_features(self) -> int:
        return self.qweight.shape[1]

    @classmethod
    def from_tensors(cls, t: dict, settings: GPTQSettings) -> "PackedGPTQ":
        import torch

        k = t["qweight"].shape[0] * 8
        group = settings.group_size if settings.group_size > 0 else k
        sequential = torch.arange(k, device=t["g_idx"].device, dtype=torch.int32) // group
        if not torch.equal(t["g_idx"].to(torch.int32), sequential):
            raise ConfigError("the workbench's 4-bit kernels read groups in order; this checkpoint uses act-order "
                              "(desc_act): use FastConfig(gemm='kernel', dense_prefill_rows=0)")
        if settings.bits != 4 or settings.checkpoint_format != "gptq":
            raise ConfigError(f"the workbench's 4-bit kernels read 4-bit GPTQ v1 ('gptq') tensors; this checkpoint has "
                              f"bits={settings.bits}, checkpoint_format={settings.checkpoint_format!r}")
        scales = t["scales"].to(torch.float16)
        return cls(qweight=t["qweight"].contiguous(), scales=scales.contiguous(),
                   zs=triton_kernels.zero_times_scale(t["qzeros"], scales), group_size=group)

    def dequantize(self):
        """The fp16 weight [K, N]: one Triton kernel on a GPU, the PyTorch definition elsewhere."""
        import torch

        if self.qweight.is_cuda:
            return triton_kernels.dequantize_gptq4(self.qweight, self.scales, self.zs, self.group_size)
        eye = torch.eye(self.in_features, dtype=torch.float32, device=self.qweight.device)
        return triton_kernels.gptq_reference(eye, self.qweight, self.scales, self.zs, self.group_size).half()

    def gemv(self, x):
        """x [1, K] -> [1, N] with the workbench's Triton GEMV."""
        return triton_kernels.gemv_gptq4(x, self.qweight, self.scales, self.zs, self.group_size)


class FastLinear:
    """One GEMM slot of a layer (q/k/v, o, gate/up or down): the loaded kernel's modules (one fused
    module, or several whose outputs are concatenated) and, when the config needs it, the packed
    4-bit copy for the Triton GEMV and the dense prefill."""

    def __init__(self, parts: list, packed: PackedGPTQ | None, gemm: str, dense_rows: int, dense=None):
        self.parts, self.packed, self.gemm, self.dense_rows = parts, packed, gemm, dense_rows
        self.dense = dense  # the fp16 weight [K, N] kept for prefills (FastConfig.dense_keep), or None

    def __call__(self, x, prefill: bool = False):
        """x [..., K] -> [..., N]. Only a prefill (`prefill=True`) of at least `dense_rows` rows takes the
        dense path: a decode step of as many rows (a batch of 48 in the workload runner) keeps the
        quantized GEMM, which reads a quarter of the bytes (dequantizing there made the runner's
        batch-48 step 48 ms on the H200; with the kernel it takes 18.7)."""
        import torch

        with torch.profiler.record_function("wb::qgemm"):  # studies/breakdown.py attributes GPU work by this
            rows = x.numel() // x.shape[-1]
            if prefill and self.dense_rows and rows >= self.dense_rows:
                return torch.matmul(x, self.dense if self.dense is not None else self.packed.dequantize())
            if self.gemm == "triton" and rows == 1:
                return self.packed.gemv(x.reshape(1, -1)).view(*x.shape[:-1], -1)
            outs = [part(x) for part in self.parts]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


@dataclass
class FastLayer:
    ln_in: object
    ln_post: object
    qkv: FastLinear
    o: FastLinear
    gate_up: FastLinear
    down: FastLinear


@dataclass
class FastWeights:
    """Everything the fast step reads, built once per (loaded model, fuse, needs packed)."""

    layers: list
    key: tuple
    note: str


def _gptq_modules(model):
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:
        return False
    return isinstance(model.model.layers[0].self_attn.q_proj, BaseQuantLinear)


class _CheckpointTensors:
    """The loaded checkpoint's own tensors, read one by one from its safetensors files."""

    def __init__(self, folder: Path, device):
        from safetensors import safe_open

        self.device = device
        files = [f for f in weight_files(folder) if f.suffix == ".safetensors"]
        if not files:
            raise ConfigError(f"{folder}: the fast path reads the converted safetensors copy; none is there")
        self.handles = [safe_open(str(f), framework="pt", device=str(device)) for f in files]
        self.where = {name: h for h in self.handles for name in h.keys()}

    def linear(self, prefix: str) -> dict:
        return {part: self.where[f"{prefix}.{part}"].get_tensor(f"{prefix}.{part}").to(self.device)
                for part in ("qweight", "qzeros", "scales", "g_idx")}


def concat_linears(tensors: list[dict]) -> dict:
    """Several GPTQ linears with one input as one wider linear: codes, zeros and scales concatenated
    along the output dimension. Their g_idx must agree (it is per input row)."""
    import torch

    g_idx = tensors[0]["g_idx"]
    if not all(torch.equal(t["g_idx"], g_idx) for t in tensors[1:]):
        raise ConfigError("q/k/v (or gate/up) have different act-order g_idx, so they cannot share one GEMM; "
                          "use FastConfig(fuse=False)")
    return {"qweight": torch.cat([t["qweight"] for t in tensors], dim=1),
            "qzeros": torch.cat([t["qzeros"] for t in tensors], dim=1),
            "scales": torch.cat([t["scales"] for t in tensors], dim=1), "g_idx": g_idx}


def kernel_module(like, t: dict, settings: GPTQSettings, dtype, name: str):
    """A new quantized linear of `like`'s gptqmodel class holding the tensors `t` (v1 packing), made
    ready the way gptqmodel's loader makes its own: v1 zeros converted where the class wants v2,
    then its `post_init` (marlin repacks there)."""
    import torch
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module

    cls = type(like)
    fin, fout = t["qweight"].shape[0] * 32 // settings.bits, t["qweight"].shape[1]
    kwargs = dict(bits=settings.bits, group_size=settings.group_size, desc_act=settings.desc_act, sym=settings.sym,
                  in_features=fin, out_features=fout, bias=False, pack_dtype=torch.int32, dtype=dtype,
                  backend=like.backend, adapter=None, register_buffers=True, name=name, lm_head_name="lm_head")
    if getattr(like, "format", None) is not None:
        kwargs["format"] = like.format
    module = cls(**kwargs)
    device = t["qweight"].device
    for key in ("qweight", "qzeros", "scales", "g_idx"):
        current = getattr(module, key)
        if tuple(current.shape) != tuple(t[key].shape):
            raise ConfigError(f"{name}.{key}: {cls.__name__} expects {tuple(current.shape)}, the checkpoint gives "
                              f"{tuple(t[key].shape)}")
        current.data = t[key].to(dtype=current.dtype).clone()
    module = module.to(device)
    if getattr(cls, "REQUIRES_FORMAT_V2", False) and settings.checkpoint_format == "gptq":
        convert_gptq_v1_to_v2_format_module(module, bits=settings.bits, pack_dtype=torch.int32)
    module.post_init()
    return module.eval().requires_grad_(False)


def fast_weights(loaded, config: FastConfig) -> FastWeights:
    """The fast step's weights for `config`, built on first use and kept on `loaded`."""
    key = (config.fuse, config.needs_packed(), config.gemm, config.dense_prefill_rows, config.dense_keep)
    current = loaded.fast_weights
    if current is not None and current.key == key:
        return current
    loaded.fast_weights = None  # before the new copies are made
    loaded.fast_weights = _build_weights(loaded, config, key)
    return loaded.fast_weights


def _build_weights(loaded, config: FastConfig, key: tuple) -> FastWeights:
    import torch

    model = loaded.model
    if config.fuse and config.gemm == "kernel" and not _gptq_modules(model):
        raise ConfigError("FastConfig(fuse=True) rebuilds gptqmodel's quantized layers; this model's are not "
                          "gptqmodel's (use fuse=False)")
    if config.fuse and config.gemm == "kernel" and loaded.kernel not in FUSABLE_KERNELS:
        raise ConfigError(f"FastConfig(fuse=True) rebuilds the layers of kernels {', '.join(FUSABLE_KERNELS)}; "
                          f"this model runs {loaded.kernel!r} (use fuse=False)")
    settings = read_gptq_settings(loaded.load_record.loaded_from)
    device = model.get_input_embeddings().weight.device
    source = _CheckpointTensors(Path(loaded.load_record.loaded_from), device) if config.fuse or config.needs_packed() \
        else None
    dense_rows = config.dense_prefill_rows
    if config.dense_keep:
        _check_room_for_dense(model, device)
    layers = []
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            slots = _layer_slots(layer)
            names = {"qkv": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "o": ["self_attn.o_proj"],
                     "gate_up": ["mlp.gate_proj", "mlp.up_proj"], "down": ["mlp.down_proj"]}
            built = {}
            for slot, modules in slots.items():
                # with the Triton GEMV the kernel's modules serve only inputs of several rows: its own, unfused
                fused = len(modules) > 1 and config.fuse and config.gemm == "kernel"
                tensors = None
                if fused or config.needs_packed():
                    tensors = concat_linears([source.linear(f"model.layers.{i}.{n}") for n in names[slot]])
                parts = [kernel_module(modules[0], tensors, settings, loaded.dtype, f"model.layers.{i}.{slot}")] \
                    if fused else modules
                packed = PackedGPTQ.from_tensors(tensors, settings) if config.needs_packed() else None
                dense = packed.dequantize() if config.dense_keep else None
                if dense is not None and config.gemm != "triton":
                    packed = None  # the kept fp16 weight serves every prefill; nothing else reads the 4-bit copy
                built[slot] = FastLinear(parts, packed, config.gemm, dense_rows, dense)
                del tensors
            layers.append(FastLayer(ln_in=layer.input_layernorm.weight, ln_post=layer.post_attention_layernorm.weight,
                                    **built))
    note = ("the loaded layers" if not config.fuse else "fused q/k/v and gate/up rebuilt from the checkpoint's "
            "tensors" + (" (Triton GEMV; the loaded layers for several rows)" if config.gemm == "triton" else ""))
    return FastWeights(layers=layers, key=key, note=note)


def _layer_slots(layer) -> dict:
    """A Llama layer's linears by the fast step's GEMM slot."""
    attn, mlp = layer.self_attn, layer.mlp
    return {"qkv": [attn.q_proj, attn.k_proj, attn.v_proj], "o": [attn.o_proj],
            "gate_up": [mlp.gate_proj, mlp.up_proj], "down": [mlp.down_proj]}


def dense_weight_bytes(model) -> int:
    """Bytes of the fp16 weights of the model's quantized linears (what FastConfig.dense_keep keeps)."""
    return sum(m.in_features * m.out_features * 2 for layer in model.model.layers
               for modules in _layer_slots(layer).values() for m in modules)


def _check_room_for_dense(model, device) -> None:
    """FastConfig.dense_keep's fp16 weights must fit beside what is loaded, with room to spare for the
    cache and a prefill pass (a tenth of the device, at least 4 GB): else an error that names the switch."""
    import torch

    need = dense_weight_bytes(model)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # memory PyTorch holds in its cache (a previous step's weights just released) is free to it too
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        import psutil

        free, total = psutil.virtual_memory().available, psutil.virtual_memory().total
    spare = max(4 << 30, total // 10)
    if need + spare > free:
        raise ConfigError(f"FastConfig.dense_keep=True keeps the fp16 weights: {need / 1e9:.1f} GB, and "
                          f"{free / 1e9:.1f} GB are free on {device} (with {spare / 1e9:.1f} GB to spare for the cache "
                          "and prefill); use dense_keep=False, which dequantizes each prefill pass instead")


class DensePrefill:
    """The workload runner's prefill through transformers' forward with ExLlamaV2's switch: while
    `applied(rows)` holds and a pass has at least `min_rows` rows (prompts x padded length), every
    quantized linear of the model dequantizes its weight once (the workbench's Triton kernel) and
    runs one dense fp16 GEMM (cuBLAS) instead of the loaded kernel's GEMM. The decode steps keep the
    loaded kernel: the switch is on only around a prefill pass.

    It reads the checkpoint's own tensors into a packed copy per linear (the loaded kernel's
    layout, marlin's for one, cannot be dequantized by the workbench), which costs about as much
    GPU memory as the quantized weights themselves: 18 GB more for the 34B."""

    def __init__(self, loaded, min_rows: int):
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear

        if not (isinstance(min_rows, int) and not isinstance(min_rows, bool) and min_rows >= 1):
            raise ConfigError(f"dense_prefill_rows={min_rows!r} is invalid: allowed an integer >= 1 (0 = off)")
        model = loaded.model
        settings = read_gptq_settings(loaded.load_record.loaded_from)
        device = model.get_input_embeddings().weight.device
        source = _CheckpointTensors(Path(loaded.load_record.loaded_from), device)
        self.min_rows = min_rows
        try:
            self.modules = [(module, PackedGPTQ.from_tensors(source.linear(name), settings))
                            for name, module in model.named_modules() if isinstance(module, BaseQuantLinear)]
        except ConfigError as e:  # act-order, bits: say which switch to turn off here
            raise ConfigError(f"dense prefill cannot read this checkpoint ({e}); run with dense_prefill_rows=0") \
                from None
        if not self.modules:
            raise ConfigError("dense prefill replaces gptqmodel's quantized linears; this model has none")

    @contextmanager
    def applied(self, rows: int):
        """Inside: passes of at least `min_rows` rows run dense (yields whether this one does)."""
        if rows < self.min_rows:
            yield False
            return
        for module, packed in self.modules:
            module.forward = functools.partial(_dense_forward, packed, module.bias)  # an instance attribute
        try:
            yield True
        finally:
            for module, _ in self.modules:
                del module.forward  # the class's forward again


def _dense_forward(packed: PackedGPTQ, bias, x):
    import torch

    with torch.profiler.record_function("wb::qgemm"):
        out = torch.matmul(x, packed.dequantize().to(x.dtype))
    return out + bias if bias is not None else out


def dense_prefill_for(loaded, min_rows: int) -> DensePrefill:
    """The loaded model's DensePrefill, built on first use and kept on `loaded` (one at a time)."""
    current = loaded.dense_prefill
    if current is not None and current.min_rows == min_rows:
        return current
    loaded.dense_prefill = None  # before the new copies are made
    loaded.dense_prefill = DensePrefill(loaded, min_rows)
    return loaded.dense_prefill


# --- the step's pieces (plain PyTorch; torch.compile'd when asked) ---------------------------------

def rms_norm(x, weight, eps: float):
    """transformers' LlamaRMSNorm: in float32, the weight applied after the cast back."""
    import torch

    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def add_norm(x, delta, weight, eps: float):
    """The residual add and the next norm: returns (x + delta, its norm)."""
    x = x + delta
    return x, rms_norm(x, weight, eps)


def rotate(t, cos, sin):
    """transformers' apply_rotary_pos_emb for one tensor: t [B, h, T, D], cos/sin [B, 1, T, D]."""
    import torch

    half = t.shape[-1] // 2
    return t * cos + torch.cat((-t[..., half:], t[..., :half]), dim=-1) * sin


def split_rotate(qkv, cos, sin, heads: int, kv_heads: int, head_dim: int):
    """[B, T, (H + 2 KV) D] -> q [B, H, T, D] and k [B, KV, T, D] rotated, v [B, KV, T, D]."""
    b, t, _ = qkv.shape
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q = q.view(b, t, heads, head_dim).transpose(1, 2)
    k = k.view(b, t, kv_heads, head_dim).transpose(1, 2)
    v = v.view(b, t, kv_heads, head_dim).transpose(1, 2)
    return rotate(q, cos, sin).contiguous(), rotate(k, cos, sin), v


def rotate_store(qkv, cos, sin, pos, k_cache, v_cache, heads: int, kv_heads: int, head_dim: int):
    """split_rotate for one new token, its keys and values written at `pos` of this layer's cache
    ([B, KV, L, D]); returns q. Compiled, the writes ride in the rotary kernel instead of two
    index_copy_ launches per layer (0.22 ms of GPU time and 96 launches a step on the 34B shapes)."""
    q, k, v = split_rotate(qkv, cos, sin, heads, kv_heads, head_dim)
    k_cache.index_copy_(2, pos, k)
    v_cache.index_copy_(2, pos, v)
    return q


def rotate_store_rows(qkv, cos, sin, slot, k_cache, v_cache, heads: int, kv_heads: int, head_dim: int):
    """rotate_store with a slot per row (fast_slots.py): `slot` [B, KV, 1, D] holds each row's index."""
    q, k, v = split_rotate(qkv, cos, sin, heads, kv_heads, head_dim)
    k_cache.scatter_(2, slot, k)
    v_cache.scatter_(2, slot, v)
    return q


def swiglu(gate_up, intermediate: int):
    """LlamaMLP's act_fn(gate) * up, from the fused [B, T, 2 I] output."""
    import torch.nn.functional as F

    gate, up = gate_up.split(intermediate, dim=-1)
    return F.silu(gate) * up


@functools.cache
def _compiled(name: str, dynamic: bool, combo: bool = False):
    """One torch.compile'd copy of each piece per process and use: every layer shares its compiled
    code. The decode step's copy has fixed shapes (it is captured in the graph); the prefill's is
    compiled for any prompt length (`dynamic=True`), so a new length neither recompiles it nor
    runs into the recompile limit, past which torch.compile would quietly run the piece uncompiled.
    `combo`: with inductor's combo kernels (FastConfig.combo_kernels)."""
    import torch

    fn = {"add_norm": add_norm, "rms_norm": rms_norm, "split_rotate": split_rotate, "swiglu": swiglu,
          "rotate_store": rotate_store, "rotate_store_rows": rotate_store_rows}[name]
    return torch.compile(fn, dynamic=dynamic, fullgraph=True, options={"combo_kernels": True} if combo else None)


def _pieces(compiled: bool, dynamic: bool = False, combo: bool = False) -> dict:
    names = ("add_norm", "rms_norm", "split_rotate", "swiglu", "rotate_store", "rotate_store_rows")
    return {n: _compiled(n, dynamic, combo) for n in names} if compiled else {n: globals()[n] for n in names}


# --- the decoder ----------------------------------------------------------------------------------

class FastDecoder(CapturedStep):
    """The fast step's cache and buffers for one (batch, cache length); see the module docstring."""

    NO_GRAPH = "ran without a graph"
    mode = "fast"

    def __init__(self, loaded, weights: FastWeights, config: FastConfig, batch: int, length: int):
        import torch

        model = loaded.model
        c = model.config
        self.config, self.w, self.batch, self.length = config, weights, batch, length
        self.device = model.get_input_embeddings().weight.device
        self.dtype = loaded.dtype
        self.heads, self.kv = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.inter, self.eps = c.intermediate_size, c.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        cuda = self.device.type == "cuda"
        if not cuda and (config.compile or config.attention == "filled" or config.gemm == "triton"
                         or config.dense_prefill_rows):
            raise ConfigError(f"FastConfig({config.describe()}) compiles or runs Triton kernels: it needs a CUDA "
                              f"device, the model is on {self.device}")
        self.model = model  # for its attention choice, which SDPA's switches follow here too (_step_context)
        self.embed, self.lm_head, self.final_norm = model.model.embed_tokens, model.lm_head, model.model.norm.weight
        # one tensor per layer (not views of one): a compiled piece that writes a layer's cache then sees
        # tensors alike in everything its guards check, and compiles once for all layers
        shape = (batch, self.kv, length, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in weights.layers]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in weights.layers]
        positions = torch.arange(length, device=self.device)[None]  # [1, L]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = model.model.rotary_emb(probe, positions)  # [1, L, D] in the model's dtype, as transformers has them
        self.cos_table, self.sin_table = cos[0], sin[0]  # [L, D]
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=self.device)  # [B, 1] this step's token
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)  # [1] its position = its cache slot
        self.min = torch.finfo(self.dtype).min
        self.mask = torch.full((batch, 1, 1, length), self.min, dtype=self.dtype, device=self.device)  # sdpa only
        self.attn_out = torch.empty((batch, self.heads, self.head_dim), dtype=self.dtype, device=self.device)
        self.attention = triton_kernels.DecodeAttention(batch, self.heads, self.kv, self.head_dim, self.device) \
            if config.attention == "filled" else None
        self.fn = _pieces(config.compile, combo=config.combo_kernels)
        self.prefill_fn = _pieces(config.compile, dynamic=True)  # the prefill's norms, rotary, SwiGLU: any length
        self.graph_wanted = config.graph and cuda  # no CUDA graphs elsewhere: the note says so
        self.graph, self.graph_note = None, ""
        # [B, V] float32: each step's logits, a buffer of fixed address for the graph (and the narrower steps' views)
        self.logits = torch.empty((batch, self.lm_head.weight.shape[0]), dtype=torch.float32, device=self.device)

    @property
    def note(self) -> str:
        why = "FastConfig.graph=False" if self.device.type == "cuda" else f"no CUDA graph on {self.device}"
        return f"fast step: {self.config.describe()}; {self.graph_note or why}"

    # --- prefill: the prompt through the same layers, attention by SDPA (causal) ---------------------

    def prefill(self, input_ids, attention_mask):
        """Fill the cache with a batch of one-length prompts ([B, T]); returns [B, V] float32 logits."""
        b, t = input_ids.shape
        if not bool(attention_mask.bool().all()):
            raise ConfigError("decode_mode='fast' takes batches of prompts of one length (no padding); give prompts "
                              "of equal length or one prompt per call")
        if b != self.batch or t >= self.length:
            raise ConfigError(f"a batch of {b} x {t} does not fit this decoder ({self.batch} x {self.length})")

        def store(i, k, v):
            self.k_cache[i][:, :, :t] = k
            self.v_cache[i][:, :, :t] = v

        cos, sin = self.cos_table[:t][None, None], self.sin_table[:t][None, None]  # [1, 1, T, D]
        logits = self._prefill_layers(input_ids, cos, sin, store, None)  # [B, V]
        self.mask.fill_(self.min)[..., :t] = 0.0
        self.pos.fill_(t)
        return logits

    def _prefill_layers(self, input_ids, cos, sin, store, attn_mask):
        """The prompt through every layer: `store(i, k, v)` puts layer i's keys and values in the cache;
        attention is causal SDPA, under `attn_mask` ([B, 1, T, T]) when one is given. Returns the
        [B, V] float32 logits of the last position."""
        import torch
        import torch.nn.functional as F

        b, t = input_ids.shape
        fn = self.prefill_fn
        with torch.inference_mode(), attention_applied(self.model):
            x = self.embed(input_ids)  # [B, T, H]
            h = fn["rms_norm"](x, self.w.layers[0].ln_in, self.eps)
            for i, layer in enumerate(self.w.layers):
                q, k, v = fn["split_rotate"](layer.qkv(h, prefill=True), cos, sin, self.heads, self.kv,
                                             self.head_dim)
                store(i, k, v)
                if attn_mask is None:  # flash attention takes the grouped heads as they are
                    a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=True)
                else:  # enable_gqa under a mask falls back to the math kernel, which materialises every score:
                    g = self.heads // self.kv  # every head's keys instead, as transformers gives them there
                    a = F.scaled_dot_product_attention(q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1),
                                                       attn_mask=attn_mask, scale=self.scale)  # [B, H, T, D]
                x, h = fn["add_norm"](x, layer.o(a.transpose(1, 2).reshape(b, t, -1), prefill=True), layer.ln_post,
                                      self.eps)
                nxt = self.w.layers[i + 1].ln_in if i + 1 < len(self.w.layers) else self.final_norm
                mlp = fn["swiglu"](layer.gate_up(h, prefill=True), self.inter)
                x, h = fn["add_norm"](x, layer.down(mlp, prefill=True), nxt, self.eps)
            return self.lm_head(h[:, -1:])[:, -1].float()  # [B, V]

    # --- one step: what the graph holds -----------------------------------------------------------------

    def _step_body(self):
        import torch

        fn = self.fn
        x = self.embed(self.ids)  # [B, 1, H]
        cos, sin = self._step_rotary()
        self._step_mask()
        h = fn["rms_norm"](x, self.w.layers[0].ln_in, self.eps)
        for i, layer in enumerate(self.w.layers):
            q = self._rotate_store(i, layer.qkv(h), cos, sin)
            with torch.profiler.record_function("wb::attention"):
                a = self._attend(i, q)  # [B, 1, H * D]
            x, h = fn["add_norm"](x, layer.o(a), layer.ln_post, self.eps)
            nxt = self.w.layers[i + 1].ln_in if i + 1 < len(self.w.layers) else self.final_norm
            x, h = fn["add_norm"](x, layer.down(fn["swiglu"](layer.gate_up(h), self.inter)), nxt, self.eps)
        self.logits.copy_(self.lm_head(h)[:, -1].float())
        self._advance()

    def _step_context(self):
        """SDPA's switches as the loaded model's attention choice says (the record's `attention`): the
        step runs outside the model's forward, whose hooks set them there (model/attention.py)."""
        return attention_applied(self.model)

    # what a step does per batch (one position for all rows); fast_slots.py does them per row

    def _step_rotary(self):
        return self.cos_table[self.pos][None, None], self.sin_table[self.pos][None, None]  # [1, 1, 1, D] each

    def _step_mask(self):
        if self.attention is None:
            self.mask.index_fill_(-1, self.pos, 0.0)  # the new token sees itself

    def _rotate_store(self, i: int, qkv, cos, sin):
        """Rotate q and k of the new token, write its key and value to layer i's cache; returns q."""
        fn = self.fn
        if self.config.store_in_rotary:
            return fn["rotate_store"](qkv, cos, sin, self.pos, self.k_cache[i], self.v_cache[i], self.heads, self.kv,
                                      self.head_dim)
        q, k, v = fn["split_rotate"](qkv, cos, sin, self.heads, self.kv, self.head_dim)
        self.k_cache[i].index_copy_(2, self.pos, k)
        self.v_cache[i].index_copy_(2, self.pos, v)
        return q

    def _advance(self):
        self.pos.add_(1)

    def _attend(self, i: int, q):
        """q [B, H, 1, D] against layer i's cache -> [B, 1, H * D]."""
        import torch.nn.functional as F

        b = q.shape[0]
        if self.attention is not None:
            self.attention(q.view(b, self.heads, self.head_dim), self.k_cache[i], self.v_cache[i], self.pos,
                           self.scale, self.attn_out)
            return self.attn_out.view(b, 1, -1)
        g = q.view(b, self.kv, self.heads // self.kv, self.head_dim)  # [B, KV, G, D]: grouped heads as rows
        out = F.scaled_dot_product_attention(g, self.k_cache[i], self.v_cache[i], attn_mask=self.mask, scale=self.scale)
        return out.reshape(b, 1, -1)

    def _state(self):
        return [self.pos, self.mask]


def fast_decoder(loaded, batch: int, length: int) -> FastDecoder:
    """The fast decoder for `loaded` with its FastConfig (static.decoder_for keeps it)."""
    config = fast_config(loaded)
    return FastDecoder(loaded, fast_weights(loaded, config), config, batch, length)
