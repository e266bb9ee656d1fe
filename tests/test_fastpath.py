"""The fast decode path: its config, its weights, its kernels' definitions, and its proof on the demo.

On this CPU machine the fast step runs without CUDA graph, compile or Triton; it must still equal
transformers' generate (`prove_equal`), fused and not. The Triton kernels are checked against
their PyTorch definitions in Triton's interpreter when triton is importable (a GPU machine, or
triton installed beside the CPU build of torch); the benchmark checks them again on the GPU.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from workbench.errors import ConfigError
from workbench.generation import DecodeConfig, generate_ids
from workbench.generation.fast import FastConfig, FastLinear, PackedGPTQ, concat_linears, set_fast_config
from workbench.model import triton_kernels as tk
from workbench.model.checkpoint import GPTQSettings, dequantize_gptq_v1
from workbench.model.load import load_model
from workbench.studies.proofs import eager_reference, prove_equal


def _linear(k: int, n: int, group: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"qweight": torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=g),
            "qzeros": torch.randint(-2**31, 2**31 - 1, (k // group, n // 8), dtype=torch.int32, generator=g),
            "scales": (torch.rand(k // group, n, generator=g) * 0.01 + 1e-3).half(),
            "g_idx": torch.arange(k, dtype=torch.int32) // group}


SETTINGS = GPTQSettings(bits=4, group_size=64, desc_act=False, sym=False)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="FastConfig.attention='flash'"):
        FastConfig(attention="flash")
    with pytest.raises(ConfigError, match="FastConfig.gemm='triton'.*fuse=False"):
        FastConfig(fuse=False, gemm="triton")
    with pytest.raises(ConfigError, match="dense_prefill_rows"):
        FastConfig(dense_prefill_rows=-1)
    assert FastConfig(dense_prefill_rows=32).needs_packed() and not FastConfig().needs_packed()
    with pytest.raises(ConfigError, match="FastConfig.store_in_rotary=True.*compile=False"):
        FastConfig(store_in_rotary=True)
    assert "cache write in the rotary kernel" in FastConfig(compile=True, store_in_rotary=True).describe()
    with pytest.raises(ConfigError, match="FastConfig.combo_kernels=True.*compile=False"):
        FastConfig(combo_kernels=True)
    assert "combo kernels" in FastConfig(compile=True, combo_kernels=True).describe()
    with pytest.raises(ConfigError, match="FastConfig.dense_keep=True.*dense_prefill_rows=0"):
        FastConfig(dense_keep=True)
    assert "fp16 weights kept" in FastConfig(dense_prefill_rows=8, dense_keep=True).describe()


def test_fast_config_from_a_command_line():
    from workbench.generation.fast import parse_fast_config

    assert parse_fast_config(["fuse=0", "compile=true", "attention=filled", "dense_prefill_rows=32"]) == \
        FastConfig(fuse=False, compile=True, attention="filled", dense_prefill_rows=32)
    for pairs, match in ((["fast=1"], "FIELD one of fuse"), (["fuse"], "give FIELD=VALUE"),
                         (["dense_prefill_rows=many"], "takes an integer"), (["graph=2"], "0/1 or true/false"),
                         (["attention=flash"], "FastConfig.attention='flash'")):
        with pytest.raises(ConfigError, match=match):
            parse_fast_config(pairs)


def test_dense_path_serves_prefills_only():
    """A prefill of at least dense_rows rows dequantizes and runs a dense GEMM; a decode step of as
    many rows (a batch of the workload runner) keeps the quantized kernel."""
    packed = PackedGPTQ.from_tensors(_linear(128, 64, 64, 5), SETTINGS)
    calls = []

    def kernel(x):
        calls.append(x.shape[0])
        return torch.zeros(*x.shape[:-1], 64, dtype=x.dtype)

    linear = FastLinear([kernel], packed, "kernel", dense_rows=4)
    x = torch.randn(6, 128).half()
    linear(x)
    assert calls == [6]  # a step of 6 rows: the kernel
    out = linear(x, prefill=True)
    assert calls == [6] and torch.allclose(out.float(), x.float() @ packed.dequantize().float(), atol=1e-2)
    linear(x[:3], prefill=True)
    assert calls == [6, 3]  # a prefill below the threshold: the kernel


def test_kept_dense_weight_serves_prefills():
    """With FastConfig.dense_keep the prefill multiplies by the fp16 weight dequantized at build (no
    dequantization per pass); the decode step still runs the kernel."""
    packed = PackedGPTQ.from_tensors(_linear(128, 64, 64, 6), SETTINGS)
    dense = packed.dequantize()
    calls = []

    def kernel(x):
        calls.append(x.shape[0])
        return torch.zeros(*x.shape[:-1], 64, dtype=x.dtype)

    linear = FastLinear([kernel], None, "kernel", dense_rows=4, dense=dense)
    x = torch.randn(6, 128).half()
    assert torch.equal(linear(x, prefill=True), torch.matmul(x, dense)) and calls == []
    linear(x)
    assert calls == [6]


def test_packed_weight_is_the_checkpoint_weight():
    """w = s*q - zs (zero x scale precomputed) is AutoGPTQ's s * (q - zero), within fp16 rounding of zs."""
    t = _linear(256, 96, 64, 0)
    packed = PackedGPTQ.from_tensors(t, SETTINGS)
    mine = packed.dequantize().float()
    theirs = dequantize_gptq_v1(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], 4)
    assert float((mine - theirs).abs().max()) <= 2e-3 * float(theirs.abs().max())


def test_concatenated_linears_compute_the_parts_side_by_side():
    parts = [_linear(128, n, 64, seed) for seed, n in enumerate((64, 32, 32))]
    whole = PackedGPTQ.from_tensors(concat_linears(parts), SETTINGS).dequantize()
    alone = torch.cat([PackedGPTQ.from_tensors(p, SETTINGS).dequantize() for p in parts], dim=1)
    assert torch.equal(whole, alone)
    act = dict(parts[1], g_idx=parts[1]["g_idx"].flip(0))
    with pytest.raises(ConfigError, match="different act-order g_idx"):
        concat_linears([parts[0], act])
    with pytest.raises(ConfigError, match="read groups in order"):
        PackedGPTQ.from_tensors(act, SETTINGS)


triton_here = importlib.util.find_spec("triton") is not None


def check_triton_kernels(device: str) -> None:
    """Every Triton kernel against its PyTorch definition, on fresh random inputs."""
    t = {k: v.to(device) for k, v in _linear(256, 96, 64, 3).items()}
    packed = PackedGPTQ.from_tensors(t, SETTINGS)
    x = torch.randn(1, 256, device=device).half()
    ref = tk.gptq_reference(x, packed.qweight, packed.scales, packed.zs, 64).float()
    for cfg in tk.GEMV_CONFIGS:
        got = tk.gemv_gptq4(x, packed.qweight, packed.scales, packed.zs, 64, config=cfg).float()
        assert float((got - ref).abs().max()) <= 1e-3 * float(ref.abs().max()), cfg
    w = tk.dequantize_gptq4(packed.qweight, packed.scales, packed.zs, 64).float()
    eye = torch.eye(256, device=device)
    assert float((w - tk.gptq_reference(eye, packed.qweight, packed.scales, packed.zs, 64)).abs().max()) < 1e-3
    b, heads, kv, d, s = 2, 8, 2, 32, 96
    q = torch.randn(b, heads, d, device=device).half()
    kc, vc = torch.randn(b, kv, s, d, device=device).half(), torch.randn(b, kv, s, d, device=device).half()
    out = torch.empty(b, heads, d, device=device).half()
    attention = tk.DecodeAttention(b, heads, kv, d, device)
    for length in (1, 17, 96):
        attention(q, kc, vc, torch.tensor([length - 1], device=device), d ** -0.5, out)
        assert float((out.float() - tk.attention_reference(q, kc, vc, length, d ** -0.5).float()).abs().max()) < 2e-3
    lengths = (17, 96)  # one position per row, as the workload runner's slots have them
    attention(q, kc, vc, torch.tensor([n - 1 for n in lengths], device=device), d ** -0.5, out)
    for row, length in enumerate(lengths):
        ref = tk.attention_reference(q[row:row + 1], kc[row:row + 1], vc[row:row + 1], length, d ** -0.5)
        assert float((out[row:row + 1].float() - ref.float()).abs().max()) < 2e-3, row


@pytest.mark.skipif(not triton_here, reason="triton is not installed (the GPU benchmark checks the kernels there)")
def test_triton_kernels_match_their_definitions():
    """On a GPU directly; on the CPU in Triton's interpreter, in a process that has it on from the
    start (the interpreter is chosen when triton is first imported)."""
    if torch.cuda.is_available():
        check_triton_kernels("cuda")
        return
    import subprocess
    import sys

    code = "import tests.test_fastpath as t; t.check_triton_kernels('cpu')"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def demo_torch(demo_model_path):
    return load_model(demo_model_path, kernel="torch", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [False, True])
def test_fast_step_equals_transformers(demo_torch, fuse):
    set_fast_config(demo_torch, FastConfig(fuse=fuse))
    proof = prove_equal(demo_torch, "fast", context_tokens=40, steps=12)
    assert proof.passed and proof.tokens_identical and proof.decode_mode == "fast", proof
    assert ("fused" if fuse else "separate") in proof.note and "no CUDA graph on cpu" in proof.note


@pytest.mark.slow
def test_kept_dense_weights_are_the_dequantized_weights(demo_torch, monkeypatch):
    """dense_keep changes when the weights are dequantized, not what a prefill multiplies by: every
    slot keeps exactly what dequantizing in each pass gives, and the 4-bit copy is dropped. Too
    little free memory is an error that names the switch."""
    from workbench.generation import fast

    per_pass = fast.fast_weights(demo_torch, FastConfig(dense_prefill_rows=4))
    per_pass = [{k: getattr(layer, k).packed.dequantize() for k in ("qkv", "o", "gate_up", "down")}
                for layer in per_pass.layers]
    kept = fast.fast_weights(demo_torch, FastConfig(dense_prefill_rows=4, dense_keep=True))
    for layer, ref in zip(kept.layers, per_pass):
        for slot, weight in ref.items():
            linear = getattr(layer, slot)
            assert linear.packed is None and torch.equal(linear.dense, weight), slot
    demo_torch.fast_weights = None
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("M", (), {"available": 1 << 20, "total": 1 << 30})())
    with pytest.raises(ConfigError, match="dense_keep=True keeps the fp16 weights.*use dense_keep=False"):
        fast.fast_weights(demo_torch, FastConfig(dense_prefill_rows=4, dense_keep=True))


@pytest.mark.slow
def test_fast_step_refusals_on_cpu(demo_torch):
    for config in (FastConfig(compile=True), FastConfig(attention="filled"), FastConfig(gemm="triton")):
        set_fast_config(demo_torch, config)
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            generate_ids(demo_torch, [[5, 6, 7]], DecodeConfig.greedy(max_new_tokens=2), decode_mode="fast")
    set_fast_config(demo_torch, FastConfig())
    with pytest.raises(ConfigError, match="prompts of one length"):
        generate_ids(demo_torch, [[5, 6, 7], [5, 6]], DecodeConfig.greedy(max_new_tokens=2), decode_mode="fast")
    ref = eager_reference(demo_torch, 24, 4)
    assert prove_equal(demo_torch, "fast", reference=ref).steps == 4  # one eager reference serves several proofs
