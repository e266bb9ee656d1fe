"""Random GPTQ checkpoints of any Llama shape, written in the time it takes to write the bytes.

For work that needs the real model's shapes but not its knowledge (memory, speed, loading a
19 GB pickle), `write_synthetic_checkpoint` writes random 4-bit codes with realistic scales
straight into AutoGPTQ 0.4.2's layout (or safetensors, or the Hugging Face layout): no model is
built and nothing is quantized. Every tensor is generated on its own from (seed, name), so the
layouts hold the same weights and only one tensor is in memory at a time. The files say they are
synthetic: `"workbench_synthetic": true` in config.json, a note in the manifest, and a
`workbench_synthetic.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import mmap
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import atomic_write_json, building_dir
from ..errors import CheckpointError, ConfigError
from ..prompts.formats import write_chat_template
from .checkpoint import (
    SYNTHETIC_MARKER,
    Layout,
    TensorSpec,
    file_sha256,
    progress_bar,
    write_manifest,
    write_safetensors,
)

_MAPPED_WINDOW_BYTES = 512 << 20  # how much of the .bin is mapped while its tensors are filled in
SYNTHETIC_NOTE = ("synthetic checkpoint written by workbench.synthetic: random GPTQ codes with "
                  "realistic scales, not a trained model; its outputs mean nothing")


@dataclass(frozen=True)
class LlamaArch:
    """The shapes of a LlamaForCausalLM; defaults are CodeFuse-CodeLlama-34B's (docs/model-facts.md)."""

    vocab_size: int = 32000
    hidden_size: int = 8192
    num_layers: int = 48
    num_heads: int = 64
    num_kv_heads: int = 8  # grouped-query attention: 8 query heads share one KV head
    intermediate_size: int = 22016  # MLP width
    max_positions: int = 16384
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    def __post_init__(self):
        for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                      "intermediate_size", "max_positions"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"LlamaArch.{field}={getattr(self, field)} must be positive")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"LlamaArch.hidden_size={self.hidden_size} must be divisible by "
                              f"num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"LlamaArch.num_heads={self.num_heads} must be a multiple of "
                              f"num_kv_heads={self.num_kv_heads}")
        if self.vocab_size < 259 + 96:
            raise ConfigError(f"LlamaArch.vocab_size={self.vocab_size}: needs >= 355 (3 specials, 256 bytes, ASCII)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def quantized_linears(self) -> list[tuple[str, int, int]]:
        """(name within a layer, in_features, out_features) of each linear GPTQ quantizes."""
        h, kv, m = self.hidden_size, self.num_kv_heads * self.head_dim, self.intermediate_size
        return [("self_attn.q_proj", h, h), ("self_attn.k_proj", h, kv), ("self_attn.v_proj", h, kv),
                ("self_attn.o_proj", h, h), ("mlp.gate_proj", h, m), ("mlp.up_proj", h, m),
                ("mlp.down_proj", m, h)]

    def config_dict(self) -> dict:
        """config.json as transformers writes it for LlamaForCausalLM."""
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "max_position_embeddings": self.max_positions, "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu", "initializer_range": 0.02, "attention_bias": False,
            "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16",
            "use_cache": True,
        }


ARCHS = {
    "codefuse-34b": LlamaArch(),
    # Small enough for CPU tests, with the 34B model's 8:1 grouped-query attention.
    "tiny": LlamaArch(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=1,
                      intermediate_size=704, max_positions=4096),
}


@dataclass(frozen=True)
class SyntheticRecord:
    """What was written, and how long the weights took (generating, writing and hashing them)."""

    path: Path
    arch: LlamaArch
    layout: Layout
    weights_bytes: int
    seconds: float

    @property
    def write_gb_per_s(self) -> float:
        return self.weights_bytes / 1e9 / max(self.seconds, 1e-9)


def resolve_arch(arch: str | LlamaArch) -> LlamaArch:
    if isinstance(arch, LlamaArch):
        return arch
    if arch not in ARCHS:
        raise ConfigError(f"arch={arch!r} is not a known preset; known: {', '.join(ARCHS)} (or pass a LlamaArch)")
    return ARCHS[arch]


def write_synthetic_checkpoint(path, arch: str | LlamaArch = "codefuse-34b", layout: Layout = Layout.AUTOGPTQ_BIN,
                               *, bits: int = 4, group_size: int = 64, desc_act: bool = False,
                               sym: bool = True, seed: int = 0, progress: bool = True) -> Path:
    """Write a random GPTQ checkpoint of `arch` into the new folder `path` and return it.

    layout: AUTOGPTQ_BIN (the real model's: one torch pickle + quantize_config.json),
    AUTOGPTQ_SAFETENSORS (the same with safetensors) or HF (quantization_config in config.json).
    desc_act=True gives each linear a random act-order g_idx (a permutation of the groups).
    """
    return write_synthetic(path, arch, Layout(layout), bits=bits, group_size=group_size,
                           desc_act=desc_act, sym=sym, seed=seed, progress=progress).path


def write_synthetic(path, arch: str | LlamaArch, layout: Layout, *, bits: int = 4, group_size: int = 64,
                    desc_act: bool = False, sym: bool = True, seed: int = 0, progress: bool = True) -> SyntheticRecord:
    """write_synthetic_checkpoint, returning the record with its size and write speed."""
    arch = resolve_arch(arch)
    _check_settings(arch, bits, group_size)
    final = Path(path).expanduser()
    if final.exists():
        if not final.is_dir() or any(final.iterdir()):
            raise CheckpointError(f"{final} already exists and is not an empty folder; choose a new path")
        final.rmdir()
    gen = _Generator(arch, bits, group_size, desc_act, sym, seed, with_bias=layout is not Layout.HF)
    started = time.perf_counter()
    weights_name = "model.safetensors" if layout is Layout.HF else f"gptq_model-{bits}bit-{group_size}g" + (
        ".bin" if layout is Layout.AUTOGPTQ_BIN else ".safetensors")
    with building_dir(final) as out:
        if layout is Layout.AUTOGPTQ_BIN:
            _write_torch_pickle(out / weights_name, gen, progress)
            sha = {weights_name: file_sha256(out / weights_name, progress)}
        else:
            sha = {weights_name: write_safetensors(out / weights_name, gen.specs, gen.produce,
                                                   {"format": "pt", "workbench_synthetic": "true"}, progress)}
        seconds = time.perf_counter() - started
        _write_side_files(out, arch, layout, bits, group_size, desc_act, sym, seed, seconds)
        write_manifest(out, note=SYNTHETIC_NOTE, known=sha)
    weights_bytes = sum(s.nbytes for s in gen.specs)
    return SyntheticRecord(final, arch, layout, weights_bytes, seconds)


def _check_settings(arch: LlamaArch, bits: int, group_size: int) -> None:
    if bits not in (2, 4, 8):
        raise ConfigError(f"bits={bits}: the synthetic writer packs 2, 4 or 8 bits (3-bit codes straddle int32 words)")
    per_word = 32 // bits
    for name, fin, fout in arch.quantized_linears():
        if group_size != -1 and (group_size <= 0 or fin % group_size):
            raise ConfigError(f"group_size={group_size} must be -1 or divide {name}'s in_features={fin}")
        if fin % per_word or fout % per_word:
            raise ConfigError(f"{name} is {fin}x{fout}: both must be multiples of {per_word} for {bits}-bit packing")


class _Generator:
    """Tensor specs in AutoGPTQ's state-dict order, and each tensor made on demand from (seed, name)."""

    def __init__(self, arch: LlamaArch, bits: int, group_size: int, desc_act: bool, sym: bool, seed: int,
                 with_bias: bool):
        import torch

        self.arch, self.bits, self.group_size = arch, bits, group_size
        self.desc_act, self.sym, self.seed = desc_act, sym, seed
        self.per_word = 32 // bits
        self.linear_shape: dict[str, tuple[int, int]] = {}
        a, f16, i32 = arch, torch.float16, torch.int32
        specs = [TensorSpec("model.embed_tokens.weight", f16, (a.vocab_size, a.hidden_size))]
        for i in range(a.num_layers):
            for name, fin, fout in a.quantized_linears():
                prefix = f"model.layers.{i}.{name}"
                self.linear_shape[prefix] = (fin, fout)
                groups = self._groups(fin)
                specs += [TensorSpec(f"{prefix}.qweight", i32, (fin // self.per_word, fout)),
                          TensorSpec(f"{prefix}.qzeros", i32, (groups, fout // self.per_word)),
                          TensorSpec(f"{prefix}.scales", f16, (groups, fout)),
                          TensorSpec(f"{prefix}.g_idx", i32, (fin,))]
                if with_bias:  # AutoGPTQ 0.4.2 saves an all-zero bias even for bias-free Llama linears
                    specs.append(TensorSpec(f"{prefix}.bias", f16, (fout,)))
            specs += [TensorSpec(f"model.layers.{i}.input_layernorm.weight", f16, (a.hidden_size,)),
                      TensorSpec(f"model.layers.{i}.post_attention_layernorm.weight", f16, (a.hidden_size,))]
        specs += [TensorSpec("model.norm.weight", f16, (a.hidden_size,))]
        if not a.tie_word_embeddings:
            specs.append(TensorSpec("lm_head.weight", f16, (a.vocab_size, a.hidden_size)))
        self.specs = specs
        self._spec = {s.name: s for s in specs}

    def _groups(self, fin: int) -> int:
        return 1 if self.group_size == -1 else fin // self.group_size

    def _seed(self, name: str) -> int:
        """Each tensor's own seed: tensors do not depend on the order they are made in."""
        return int.from_bytes(hashlib.sha256(f"{self.seed}:{name}".encode()).digest()[:8], "little") >> 1

    def _rng(self, name: str):
        import numpy as np

        return np.random.default_rng(self._seed(name))

    def produce(self, name: str):
        import numpy as np
        import torch

        rng, spec = self._rng(name), self._spec[name]
        prefix, _, kind = name.rpartition(".")
        if kind == "weight" and "norm" in name:  # RMSNorm gains scatter around 1, as in trained Llamas
            return _normal_fp16(self._seed(name), spec.shape, 1.0, 0.05)
        if kind == "weight":  # embedding and lm_head
            # lm_head's std gives logits of std ~2.5 for a unit-RMS hidden state, like a trained model
            std = 0.02 if "embed" in name else 2.5 / math.sqrt(self.arch.hidden_size)
            return _normal_fp16(self._seed(name), spec.shape, 0.0, std)
        fin, fout = self.linear_shape[prefix]
        if kind == "qweight":
            # Random words with the lowest bit of every code set: codes are the odd values 1, 3, ...,
            # 2^bits - 1, uniform and symmetric around the middle code, so weights have mean zero.
            # (Uniform codes 0..2^bits-1 average half a step below the middle: through 48 layers
            # that bias feeds on itself and the fp16 activations overflow.)
            odd = int.from_bytes(bytes([sum(1 << b for b in range(0, 8, self.bits))]) * 4, "little")
            words = rng.integers(0, 1 << 32, size=spec.shape, dtype=np.uint32)
            np.bitwise_or(words, np.uint32(odd), out=words)
            return torch.from_numpy(words.view(np.int32))
        if kind == "qzeros":
            top = (1 << self.bits) - 1
            if self.sym:  # symmetric GPTQ: zero is the middle code
                zeros = np.full((spec.shape[0], fout), 1 << (self.bits - 1), dtype=np.int64)
            else:  # near the middle; never 0, whose v1 encoding (zero - 1) would wrap
                mid = 1 << (self.bits - 1)
                drawn = rng.normal(mid, max(1.0, mid / 5), size=(spec.shape[0], fout))
                zeros = np.clip(np.rint(drawn), 1, top).astype(np.int64)
            return torch.from_numpy(_pack_last_dim(zeros - 1, self.bits))  # v1 stores zero - 1
        if kind == "scales":
            # A weight's std is scale * code std; scale it so each linear keeps unit-RMS inputs at
            # unit RMS (1/sqrt(fan-in)), with a log-normal spread per group and column. For the
            # 34B shapes this gives scales of ~0.0015-0.0025, for the tiny preset ~0.01.
            levels = 1 << self.bits
            code_std = math.sqrt((levels * levels - 4) / 12)  # odd codes around the middle: 1, 3, ...
            s0 = 1.0 / (code_std * math.sqrt(fin))
            s = s0 * np.exp(0.25 * rng.standard_normal(spec.shape, dtype=np.float32))
            return torch.from_numpy(s.astype(np.float16))
        if kind == "g_idx":
            if self.group_size == -1:
                return torch.zeros(fin, dtype=torch.int32)
            order = rng.permutation(fin) if self.desc_act else np.arange(fin)
            g_idx = np.empty(fin, dtype=np.int32)
            g_idx[order] = np.arange(fin, dtype=np.int32) // self.group_size  # act-order: rows visited in `order`
            return torch.from_numpy(g_idx)
        if kind == "bias":
            return torch.zeros(spec.shape, dtype=torch.float16)
        raise KeyError(name)


def _normal_fp16(seed: int, shape: tuple[int, ...], mean: float, std: float):
    """float16 samples of N(mean, std), drawn straight into the tensor (torch's sampler is ~3x
    numpy's here and needs no float32 temporary)."""
    import torch

    return torch.empty(shape, dtype=torch.float16).normal_(mean, std, generator=torch.Generator().manual_seed(seed))


def _pack_last_dim(values, bits: int):
    """Pack non-negative codes along the last dim, 32/bits per int32, lowest bits first."""
    import numpy as np

    per_word = 32 // bits
    v = (values.astype(np.uint64) & ((1 << bits) - 1)).reshape(*values.shape[:-1], -1, per_word)
    shifts = np.arange(0, 32, bits, dtype=np.uint64)
    return (v << shifts).sum(axis=-1).astype(np.uint32).view(np.int32)


def _write_torch_pickle(file: Path, gen: _Generator, progress: bool) -> None:
    """A torch.save zip of the whole state dict without ever holding it in memory.

    torch.save needs every tensor at once. So the file is first written with no data
    (skip_data, from shape-only fake tensors: space is reserved, nothing allocated), then opened
    memory-mapped and shared, and each tensor is generated and copied into its place. The page
    cache, not the process, holds the bytes on their way to disk. CRC32s are left out (they would
    be of the empty file); torch.load does not need them.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        skeleton = {s.name: torch.empty(s.shape, dtype=s.dtype) for s in gen.specs}
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save(skeleton, file)
    finally:
        torch.serialization.set_crc32_options(crc)
    del skeleton
    total = sum(s.nbytes for s in gen.specs)
    with progress_bar(total, f"writing {file.name}", progress) as bar:
        for window in _windows(gen.specs, _MAPPED_WINDOW_BYTES):
            # Mapped pages count in the process's RSS until unmapped: map the file afresh for each
            # window and drop the mapping after it, so at most a window is resident at a time.
            with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
                mapped = torch.load(file, mmap=True, weights_only=True)
            for s in window:
                mapped[s.name].copy_(gen.produce(s.name))
                bar.update(s.nbytes)
            del mapped  # unmapping hands the dirty pages to the kernel to write back


def _windows(specs: list[TensorSpec], max_bytes: int):
    """Consecutive runs of specs of at most max_bytes each (a larger tensor gets a run of its own)."""
    run, size = [], 0
    for s in specs:
        if run and size + s.nbytes > max_bytes:
            yield run
            run, size = [], 0
        run.append(s)
        size += s.nbytes
    if run:
        yield run


# --- the small files ---------------------------------------------------------------------------

def _write_side_files(out: Path, arch: LlamaArch, layout: Layout, bits: int, group_size: int, desc_act: bool,
                      sym: bool, seed: int, seconds: float) -> None:
    base = f"gptq_model-{bits}bit-{group_size}g"
    config = arch.config_dict() | {SYNTHETIC_MARKER: True, "workbench_note": SYNTHETIC_NOTE}
    qcfg = {"bits": bits, "group_size": group_size, "damp_percent": 0.01, "desc_act": desc_act,
            "static_groups": False, "sym": sym, "true_sequential": True, "model_name_or_path": None,
            "model_file_base_name": base}
    if layout is Layout.HF:
        config["quantization_config"] = {"quant_method": "gptq", "checkpoint_format": "gptq", "bits": bits,
                                         "group_size": group_size, "desc_act": desc_act, "sym": sym}
    else:
        atomic_write_json(out / "quantize_config.json", qcfg)
    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    (out / "tokenizer.model").write_bytes(synthetic_tokenizer_model(arch.vocab_size))
    atomic_write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": False, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "padding_side": "left", "model_max_length": arch.max_positions, "clean_up_tokenization_spaces": False,
    })
    atomic_write_json(out / "special_tokens_map.json",
                      {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    write_chat_template(out, "codefuse")
    atomic_write_json(out / "workbench_synthetic.json", {
        "note": SYNTHETIC_NOTE, "arch": dataclasses.asdict(arch), "layout": layout.value, "bits": bits,
        "group_size": group_size, "desc_act": desc_act, "sym": sym, "seed": seed,
        "weights_write_seconds": round(seconds, 3),
    })


def synthetic_tokenizer_model(vocab_size: int) -> bytes:
    """A SentencePiece BPE model with Llama's conventions, built without training.

    <unk>/<s>/</s> = 0/1/2, the 256 byte-fallback pieces, '▁' and printable ASCII, then character
    n-grams until `vocab_size` pieces: any text encodes (through bytes if need be) and decodes back.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    t = m.trainer_spec
    t.model_type, t.vocab_size, t.byte_fallback = pb.TrainerSpec.BPE, vocab_size, True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    n = m.normalizer_spec
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", True, False, True
    Piece = pb.ModelProto.SentencePiece
    for text, kind in (("<unk>", Piece.UNKNOWN), ("<s>", Piece.CONTROL), ("</s>", Piece.CONTROL)):
        m.pieces.add(piece=text, score=0.0, type=kind)
    for b in range(256):
        m.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=Piece.BYTE)
    chars = ["▁"] + [chr(c) for c in range(33, 127)]
    common = "▁etaoinsrhldcumfpgwybvkxjqz_()=:.,'\"0123456789"
    ngrams = itertools.chain(
        chars,
        ("".join(p) for p in itertools.product(chars, repeat=2)),
        ("".join(p) for k in itertools.count(3) for p in itertools.product(common, repeat=k)),
    )
    for rank, piece in enumerate(itertools.islice(ngrams, vocab_size - len(m.pieces))):
        m.pieces.add(piece=piece, score=-float(rank), type=Piece.NORMAL)
    return m.SerializeToString()


# --- command line ------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """`python -m workbench synthetic PATH [--arch codefuse-34b] [--layout autogptq_bin] ...`"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench synthetic",
                                     description="Write a random GPTQ checkpoint (not a trained model) of a Llama "
                                                 "architecture, at the speed of the disk.")
    parser.add_argument("path", help="a new folder")
    parser.add_argument("--arch", default="codefuse-34b", choices=sorted(ARCHS))
    parser.add_argument("--layout", default=Layout.AUTOGPTQ_BIN.value, choices=[x.value for x in Layout])
    parser.add_argument("--bits", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--desc-act", action="store_true", help="act-order: permuted g_idx")
    parser.add_argument("--asym", action="store_true", help="asymmetric zeros (default: symmetric, zero = 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rec = write_synthetic(args.path, args.arch, Layout(args.layout), bits=args.bits, group_size=args.group_size,
                          desc_act=args.desc_act, sym=not args.asym, seed=args.seed)
    print(f"{rec.path}: {rec.weights_bytes / 1e9:.2f} GB of weights in {rec.seconds:.1f} s "
          f"({rec.write_gb_per_s:.2f} GB/s), layout {rec.layout.value}")
    return 0
