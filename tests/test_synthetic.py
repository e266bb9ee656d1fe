"""Synthetic checkpoints: realistic random GPTQ tensors, both layouts identical, marked synthetic,
written without holding the state dict in memory, and loadable through load_model."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from workbench.errors import CheckpointError, ConfigError
from workbench.model.checkpoint import (
    Layout,
    checkpoint_hash,
    dequantize_gptq_v1,
    detect_layout,
    is_synthetic,
    read_gptq_settings,
    read_state_dict,
    verify_checkpoint,
)
from workbench.model.synthetic import ARCHS, LlamaArch, synthetic_tokenizer_model, write_synthetic_checkpoint

TINY = ARCHS["tiny"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset in every layout, same seed."""
    root = tmp_path_factory.mktemp("synthetic")
    return {layout: write_synthetic_checkpoint(root / layout.value, "tiny", layout, progress=False)
            for layout in Layout}


def test_presets_have_the_documented_shapes():
    a = ARCHS["codefuse-34b"]
    assert (a.vocab_size, a.hidden_size, a.num_layers, a.num_heads, a.num_kv_heads, a.intermediate_size,
            a.max_positions, a.rope_theta, a.rms_norm_eps, a.tie_word_embeddings) == \
           (32000, 8192, 48, 64, 8, 22016, 16384, 1e6, 1e-5, False)
    assert (TINY.hidden_size, TINY.num_layers, TINY.num_heads, TINY.num_kv_heads, TINY.intermediate_size,
            TINY.vocab_size) == (256, 4, 8, 1, 704, 4096)
    with pytest.raises(ConfigError, match="num_heads"):
        LlamaArch(hidden_size=256, num_heads=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hidden_size = 1


def test_layouts_are_detected_and_marked_synthetic(tiny):
    for layout, path in tiny.items():
        assert detect_layout(path) is layout
        assert is_synthetic(path)
        config = json.loads((path / "config.json").read_text())
        assert config["workbench_synthetic"] is True and "not a trained model" in config["workbench_note"]
        manifest = (path / "SHA256SUMS").read_text()
        assert manifest.startswith("# synthetic checkpoint")
        assert verify_checkpoint(path, progress=False).source == "self-declared"
    qcfg = json.loads((tiny[Layout.AUTOGPTQ_BIN] / "quantize_config.json").read_text())
    assert set(qcfg) == {"bits", "group_size", "damp_percent", "desc_act", "static_groups", "sym",
                         "true_sequential", "model_name_or_path", "model_file_base_name"}
    assert (qcfg["bits"], qcfg["group_size"], qcfg["desc_act"]) == (4, 64, False)
    assert (tiny[Layout.AUTOGPTQ_BIN] / "gptq_model-4bit-64g.bin").exists()


def test_manifest_is_sha256sum_compatible(tiny):
    path = tiny[Layout.AUTOGPTQ_BIN]
    out = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_layout_holds_the_same_weights(tiny):
    pickled = read_state_dict(tiny[Layout.AUTOGPTQ_BIN])
    safet = read_state_dict(tiny[Layout.AUTOGPTQ_SAFETENSORS])
    hf = read_state_dict(tiny[Layout.HF])
    assert pickled.keys() == safet.keys()
    assert set(hf) == {k for k in pickled if not k.endswith(".bias")}  # AutoGPTQ's zero biases only in its layouts
    for k, v in pickled.items():
        assert torch.equal(v, safet[k]), k
        if k in hf:
            assert torch.equal(v, hf[k]), k


def test_values_are_realistic(tiny):
    state = read_state_dict(tiny[Layout.AUTOGPTQ_SAFETENSORS])
    for name, t in state.items():
        if not name.endswith(".bias"):
            assert t.any(), f"{name} is all zeros"
    prefix = "model.layers.0.mlp.down_proj"
    qzeros, scales = state[f"{prefix}.qzeros"], state[f"{prefix}.scales"]
    assert scales.dtype == torch.float16 and 0.002 < scales.float().median() < 0.02
    w = dequantize_gptq_v1(state[f"{prefix}.qweight"], qzeros, scales, state[f"{prefix}.g_idx"], 4)
    assert w.shape == (TINY.intermediate_size, TINY.hidden_size)
    assert 0.5 / TINY.intermediate_size ** 0.5 < w.std() < 2 / TINY.intermediate_size ** 0.5  # ~1/sqrt(fan-in)
    # Mean zero: a bias of half a code step (uniform codes 0..15 around zero 8) compounds through
    # the layers until float16 overflows (see test_deep_model_activations_stay_in_float16_range).
    assert abs(w.mean()) < 0.02 * w.std()
    assert torch.all((qzeros == 0x77777777))  # symmetric: zero 8, stored as 7 in v1
    norm = state["model.layers.0.input_layernorm.weight"].float()
    assert 0.9 < norm.mean() < 1.1
    assert 0.005 < state["model.embed_tokens.weight"].float().std() < 0.05


def test_act_order_g_idx_and_asymmetric_zeros(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "x", "tiny", Layout.AUTOGPTQ_SAFETENSORS, desc_act=True,
                                      sym=False, progress=False)
    settings = read_gptq_settings(path)
    assert settings.desc_act and not settings.sym
    state = read_state_dict(path)
    g_idx = state["model.layers.0.self_attn.q_proj.g_idx"]
    assert torch.equal(torch.bincount(g_idx), torch.full((TINY.hidden_size // 64,), 64))  # 64 rows per group
    assert not torch.equal(g_idx, torch.sort(g_idx).values)  # permuted, as act-order leaves it
    q = state["model.layers.0.self_attn.q_proj.qzeros"]
    zeros = torch.stack([(q >> s) & 15 for s in range(0, 32, 4)], -1).flatten() + 1
    assert zeros.min() >= 1 and zeros.max() <= 15 and 7 <= zeros.float().mean() <= 9


def test_refuses_existing_folder_and_bad_settings(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CheckpointError, match="already exists"):
        write_synthetic_checkpoint(tmp_path / "full", "tiny")
    with pytest.raises(ConfigError, match="bits=3"):
        write_synthetic_checkpoint(tmp_path / "a", "tiny", bits=3)
    with pytest.raises(ConfigError, match="group_size=96"):
        write_synthetic_checkpoint(tmp_path / "b", "tiny", group_size=96)
    with pytest.raises(ConfigError, match="known: codefuse-34b, tiny"):
        write_synthetic_checkpoint(tmp_path / "c", "llama-70b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tokenizer_round_trips_code():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=synthetic_tokenizer_model(4096))
    assert sp.get_piece_size() == 4096
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    text = "def f(x):\n    return {'é': x ** 2}  # ünïcode → bytes"
    ids = sp.encode(text)
    assert max(ids) < 4096 and sp.decode(ids) == text


def test_bin_writer_streams_instead_of_holding_the_state_dict(tmp_path):
    """A 262 MB pickle written in a child process: its peak RSS grows by far less than the file."""
    code = """
import resource, sys, torch, torch._dynamo  # dynamo: imported by the writer's fake tensors, not its data
import workbench.model.synthetic as synthetic
from workbench.model.synthetic import LlamaArch, write_synthetic
from workbench.model.checkpoint import Layout
synthetic._MAPPED_WINDOW_BYTES = 16 << 20
arch = LlamaArch(vocab_size=8192, hidden_size=2048, num_layers=8, num_heads=16, num_kv_heads=4,
                 intermediate_size=5632, max_positions=2048)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rec = write_synthetic(sys.argv[1], arch, Layout.AUTOGPTQ_BIN, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rec.weights_bytes, (peak - base) * 1024, rec.seconds)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    size, extra_rss, seconds = out.stdout.split()[-3:]
    size, extra_rss = int(size), int(extra_rss)
    assert size > 250e6
    assert extra_rss < 0.5 * size, f"writing {size / 1e6:.0f} MB raised peak RSS by {extra_rss / 1e6:.0f} MB"
    loaded = torch.load(tmp_path / "m" / "gptq_model-4bit-64g.bin", weights_only=True, mmap=True)
    assert loaded["model.layers.7.mlp.down_proj.qweight"].shape == (5632 // 8, 2048)
    assert loaded["lm_head.weight"].float().std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("layout", [Layout.AUTOGPTQ_BIN, Layout.AUTOGPTQ_SAFETENSORS])
def test_tiny_loads_and_generates_on_cpu(tiny, layout):
    from workbench.model.load import load_model

    loaded = load_model(tiny[layout], kernel="torch_aten", device="cpu")
    record = loaded.load_record
    assert record.synthetic and record.kernel == "torch_aten" and record.layout == layout.value
    assert record.checkpoint_hash == checkpoint_hash(tiny[layout])
    ids = loaded.tokenizer("def add(a, b):", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = loaded.model(ids).logits
        out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.isfinite(logits).all()
    assert out.shape[1] == ids.shape[1] + 4


@pytest.mark.slow
def test_deep_model_activations_stay_in_float16_range(tmp_path):
    """48 layers, as in the 34B model: the residual stream must grow slowly (like sqrt(depth)), not
    by a constant per layer, or the 34B model's float16 logits are NaN."""
    from workbench.model.load import load_model

    arch = LlamaArch(vocab_size=1024, hidden_size=512, num_layers=48, num_heads=8, num_kv_heads=1,
                     intermediate_size=1408, max_positions=4096)
    write_synthetic_checkpoint(tmp_path / "deep", arch, Layout.HF, progress=False)
    loaded = load_model(tmp_path / "deep", kernel="torch_aten", device="cpu", verify=False)
    rms = []
    for layer in loaded.model.model.layers:
        layer.register_forward_hook(
            lambda m, args, out: rms.append(float((out[0] if isinstance(out, tuple) else out).pow(2).mean().sqrt())))
    with torch.no_grad():
        logits = loaded.model(torch.randint(3, 1000, (1, 32))).logits
    assert torch.isfinite(logits).all()
    # measured at hidden 1024: ~0.8 after layer 0, ~8 after layer 47; uniform codes gave ~3600 there
    assert rms[-1] < 30 and rms[-1] < 20 * rms[0], rms[::8]
