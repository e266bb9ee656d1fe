"""ExLlamaV2's own engine as a registry entry: its reasons, its refusals, and the record its loop builds.

The real engine needs CUDA and the exllamav2 package (GPU runs: benchmarks/peer_h200.sh). Here,
without either, the registry must say why it cannot run; the refusals are checked on synthetic
checkpoints; and the decoding loop and record building are checked with a stand-in `exllamav2`
module whose `ExLlamaV2.forward` runs the demo model (transformers + gptqmodel's torch kernel)
with a cache it keeps by ExLlamaV2's rules (`current_seq_len`, advanced by each forward). The
engine's own code (runner, decoder, stream handling, the loop in generation/static.py, the record) runs
unchanged, and must produce what transformers' generate produces for the same model.
"""

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from workbench.errors import ConfigError, KernelUnavailable
from workbench.generation import DecodeConfig, generate, generate_ids
from workbench.model import exllamav2_engine as exl
from workbench.model.checkpoint import GPTQSettings, Layout, prepare_checkpoint
from workbench.model.load import load_model
from workbench.model.registry import KERNELS, available_kernels, main
from workbench.model.synthetic import write_synthetic_checkpoint


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("e") / "tiny", "tiny", Layout.AUTOGPTQ_BIN,
                                      progress=False)


# --- the registry ------------------------------------------------------------------------------

def test_registry_entry():
    spec = KERNELS["exllamav2-engine"]
    assert spec.engine == "exllamav2" and spec.devices == ("cuda",) and spec.bits == (4,)
    assert spec.dtypes == ("float16",) and True in spec.desc_act


@pytest.mark.skipif(exl.installed(), reason="checks the reason given where exllamav2 is not installed")
def test_listed_with_its_reason_where_it_cannot_run(capsys):
    for device in ("cpu", "cuda"):
        a = {k.kernel: k for k in available_kernels(device)}["exllamav2-engine"]
        assert not a.available and "needs the exllamav2 package" in a.reason and "pip install" in a.reason
    assert main(["--device", "cpu"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("exllamav2-engine "))
    assert "no: needs the exllamav2 package" in line


def test_without_cuda_the_reason_is_cuda(monkeypatch):
    """With the package present (pretended), a machine without a GPU is the reason."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "exllamav2" else real(name, *a))
    if torch.cuda.is_available():
        pytest.skip("checks a machine without CUDA")
    a = {k.kernel: k for k in available_kernels("cuda")}["exllamav2-engine"]
    assert not a.available and "no CUDA device is visible" in a.reason


def test_no_nvcc_is_a_reason_unless_the_extension_is_built(monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(exl.shutil, "which", lambda name: None)
    monkeypatch.setattr(ext, "CUDA_HOME", None)
    monkeypatch.setattr(exl, "extension_built", lambda: False)
    assert "no nvcc was found" in exl.device_problem(KERNELS["exllamav2-engine"], "cuda")
    assert "cuda:1" in exl.device_problem(KERNELS["exllamav2-engine"], "cuda:1")
    monkeypatch.setattr(exl, "extension_built", lambda: True)
    assert exl.device_problem(KERNELS["exllamav2-engine"], "cuda") is None


# --- what it refuses to read --------------------------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    (GPTQSettings(bits=8, group_size=64, desc_act=False, sym=True), "4-bit only"),
    (GPTQSettings(bits=4, group_size=96, desc_act=False, sym=True), "not a power of two"),
    (GPTQSettings(bits=4, group_size=64, desc_act=False, sym=True, checkpoint_format="marlin"), "'gptq' (v1)"),
])
def test_settings_it_would_misread(settings, words):
    assert words in exl.settings_problem(settings)


def test_settings_it_reads():
    for group in (-1, 32, 64, 128):
        assert exl.settings_problem(GPTQSettings(bits=4, group_size=group, desc_act=True, sym=False)) is None


def test_act_order_layouts():
    g = torch.arange(256, dtype=torch.int32) // 64
    assert exl.act_order_problem("l", g[torch.randperm(256)], 64, 256) is None  # rows permuted, groups equal
    uneven = g.clone()
    uneven[:3] = 1  # group 1 gets 67 rows, group 0 61
    assert "group 0 61 rows, not 64" in exl.act_order_problem("l", uneven, 64, 256)
    assert "outside 0..3" in exl.act_order_problem("l", g + 1, 64, 256)


def test_a_pickle_is_refused_until_converted(tiny_bin):
    with pytest.raises(KernelUnavailable, match="a pickle, and ExLlamaV2 reads safetensors only.*prepare_checkpoint"):
        exl.check_readable(tiny_bin)
    assert exl.check_readable(prepare_checkpoint(tiny_bin, progress=False)).bits == 4


def test_an_uneven_act_order_checkpoint_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = write_synthetic_checkpoint(tmp_path / "act", "tiny", Layout.AUTOGPTQ_SAFETENSORS, desc_act=True,
                                        progress=False)
    assert exl.check_readable(folder).desc_act
    file = next(folder.glob("*.safetensors"))
    state = load_file(str(file))
    key = "model.layers.2.mlp.down_proj.g_idx"
    state[key] = torch.sort(state[key]).values.roll(5)  # the same multiset of groups no longer in groups
    state[key][:5] = 0
    save_file(state, str(file), metadata={"format": "pt"})
    with pytest.raises(KernelUnavailable, match="layers.2.mlp.down_proj.g_idx gives group"):
        exl.check_readable(folder)


def test_eight_bits_are_refused_before_loading(tmp_path):
    eight = write_synthetic_checkpoint(tmp_path / "8bit", "tiny", bits=8, progress=False)
    with pytest.raises(KernelUnavailable, match="exllamav2-engine' cannot run"):
        load_model(eight, kernel="exllamav2-engine", device="cuda")


# --- the loop and the record, through a stand-in exllamav2 ----------------------------------------

class _FakeCache:
    def __init__(self, model, batch_size=1, max_seq_len=-1):
        self.model, self.batch_size, self.max_seq_len, self.current_seq_len = model, batch_size, max_seq_len, 0
        self.past = None


class _FakeModel:
    """ExLlamaV2's forward contract over a transformers model: ids on the CPU (its embedding lives
    there), logits [B, T, V] (or [B, 1, V] with last_id_only), the cache advanced by T."""

    def __init__(self, config):
        self.config, self.hf, self.calls = config, None, []

    def load(self):
        self.hf = load_model(self.config.model_dir, kernel="torch", device="cpu", verify=False).model

    def forward(self, input_ids, cache=None, last_id_only=False, **_):
        from transformers import DynamicCache

        assert input_ids.device.type == "cpu", "ExLlamaV2 takes token ids on the CPU"
        self.calls.append(tuple(input_ids.shape))
        if cache.current_seq_len == 0:
            cache.past = DynamicCache()
        assert cache.current_seq_len + input_ids.shape[1] <= cache.max_seq_len
        out = self.hf(input_ids=input_ids, past_key_values=cache.past, use_cache=True)
        cache.current_seq_len += input_ids.shape[1]
        return out.logits[:, -1:] if last_id_only else out.logits

    def unload(self):
        self.hf = None


def _fake_config(folder):
    """config.json as ExLlamaV2 0.3.2 reads it: the rotary base from a top-level rope_theta only."""
    c = json.loads((Path(folder) / "config.json").read_text())
    return types.SimpleNamespace(
        model_dir=folder, no_graphs=False, rotary_embedding_base=float(c.get("rope_theta", 10000.0)),
        norm_eps=float(c.get("rms_norm_eps", 1e-5)), hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
        num_hidden_layers=c["num_hidden_layers"], vocab_size=c["vocab_size"],
        head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], scale_pos_emb=1.0)


def test_config_as_transformers_reads_it_or_an_error(demo_model_path):
    """transformers 5 writes rope_theta under rope_parameters, where ExLlamaV2 does not look: the base
    is set from there (the demo's 1e6, not ExLlamaV2's default 1e4); a scaling that cannot be mapped
    and any setting read differently are errors, never a different model."""
    c = json.loads((demo_model_path / "config.json").read_text())
    assert "rope_theta" not in c and c["rope_parameters"]["rope_theta"] == 1e6  # the transformers 5 layout
    theirs = _fake_config(demo_model_path)
    assert theirs.rotary_embedding_base == 10000.0
    assert exl.match_transformers_config(theirs, c) == "rope_parameters" and theirs.rotary_embedding_base == 1e6
    old = {k: v for k, v in c.items() if k != "rope_parameters"} | {"rope_theta": 1e6}  # as transformers 4 wrote it
    assert exl.match_transformers_config(types.SimpleNamespace(**vars(theirs)), old) == "rope_theta"
    linear = dict(c, rope_parameters={"rope_theta": 1e6, "rope_type": "linear", "factor": 2.0})
    scaled = types.SimpleNamespace(**vars(theirs))
    exl.match_transformers_config(scaled, linear)
    assert scaled.scale_pos_emb == 2.0
    with pytest.raises(ConfigError, match="rope_type='yarn'"):
        exl.match_transformers_config(types.SimpleNamespace(**vars(theirs)),
                                      dict(c, rope_parameters={"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}))
    misread = types.SimpleNamespace(**dict(vars(theirs), head_dim=64, norm_eps=1e-6))
    with pytest.raises(ConfigError, match="norm_eps 1e-06 against 1e-05.*head_dim 64 against 32"):
        exl.match_transformers_config(misread, c)


@pytest.fixture
def fake_exllamav2(monkeypatch):
    module = types.ModuleType("exllamav2")
    module.ExLlamaV2Config = _fake_config
    module.ExLlamaV2, module.ExLlamaV2Cache = _FakeModel, _FakeCache
    module.attn = types.SimpleNamespace(has_flash_attn=False, has_xformers=False, has_lower_right_sdpa=True,
                                        ExLlamaV2Attention=type("Attention", (), {"_attn_torch": lambda *a, **k: None}))
    monkeypatch.setitem(sys.modules, "exllamav2", module)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "exllamav2" else real(name, *a))
    return module


def engine_attention():
    return sys.modules["exllamav2"].attn.ExLlamaV2Attention._attn_torch


@pytest.fixture
def engine(fake_exllamav2, demo_model_path):
    prepared = prepare_checkpoint(demo_model_path, progress=False)
    return exl.load_exllamav2(demo_model_path, prepared, "exllamav2-engine", "cpu", None, None)


@pytest.mark.slow
def test_the_engine_loop_makes_transformers_tokens_and_a_full_record(engine, demo_model_path):
    reference = load_model(demo_model_path, kernel="torch", device="cpu")
    messages = [{"role": "human", "content": "def add(a, b):\n    \"\"\"Return a + b.\"\"\""}]
    config = DecodeConfig.greedy(max_new_tokens=48)
    mine, theirs = generate(engine, messages, config), generate(reference, messages, config)
    assert mine.token_ids == theirs.token_ids and mine.stop_reason == theirs.stop_reason
    assert mine.kernel == engine.load_record.kernel == "exllamav2-engine" and mine.decode_mode == "exllamav2"
    assert mine.decode_mode_requested == "auto" and "ExLlamaV2's own model" in mine.decode_note
    assert exl.CAUSAL_NOTE in mine.decode_note  # the correction of its SDPA prefill is on the record
    assert engine.load_record.env["exllamav2"]["causal_prefill"].startswith("restored by the workbench")
    assert getattr(engine_attention(), "workbench_causal", False)
    assert mine.attention == "exllamav2-sdpa (sdpa-no-cudnn)"  # its SDPA obeys the workbench's switches
    assert len(mine.token_times_s) == mine.new_tokens and mine.token_times_s == sorted(mine.token_times_s)
    assert mine.prefill_s <= mine.ttft_s == mine.token_times_s[0]
    assert len(mine.token_gaps_s) == mine.new_tokens - 1
    assert len(mine.logprobs) == mine.new_tokens and all(lp <= 0 for lp in mine.logprobs)
    assert max(abs(a - b) for a, b in zip(mine.logprobs, theirs.logprobs)) < 1e-3
    # greedy picks a top token (ties after log_softmax may list another id first)
    assert all(abs(top[0].logprob - lp) < 1e-4 for top, lp in zip(mine.top_logprobs, mine.logprobs))
    # one prefill of the whole prompt, then one forward of one token per new token but the last
    calls = engine.engine_handle.calls
    assert calls[-mine.new_tokens] == (1, mine.prompt_tokens) and set(calls[-mine.new_tokens + 1:]) == {(1, 1)}
    forced = generate_ids(engine, [mine.token_ids[:4] * 3], DecodeConfig.forced(5))[0]
    assert forced.new_tokens == 5 and forced.stop_reason == "max_new_tokens"


@pytest.mark.slow
def test_the_engine_refuses_other_modes_and_padding(engine):
    config = DecodeConfig.greedy(max_new_tokens=4)
    for mode in ("static", "graph", "fast"):
        with pytest.raises(ConfigError, match="decodes with ExLlamaV2's own loop only"):
            generate_ids(engine, [[5, 6, 7]], config, decode_mode=mode)
    with pytest.raises(ConfigError, match="prompts of one length"):
        generate_ids(engine, [[5, 6, 7], [5, 6]], config)
    full = engine.model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits
    assert full.shape[:2] == (1, 4)  # every position, from an empty cache
    assert engine.model.decode_bytes_per_token() > 0


# --- the causal mask exllamav2 0.3.2 leaves out of its SDPA prefill ------------------------------

def _attention_reference(q, k, v, groups: int, scale: float, visible):
    """Softmax attention in float32 by its definition: q [B, T, H, D], k/v [B, S, KV, D]; `visible(i, j)`."""
    b, t, h, d = q.shape
    s = k.shape[1]
    out = torch.zeros(b, t, h, d)
    for head in range(h):
        kv = head // groups
        scores = torch.einsum("btd,bsd->bts", q[:, :, head].float(), k[:, :, kv].float()) * scale
        allowed = torch.tensor([[visible(i, j) for j in range(s)] for i in range(t)])
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[:, :, head] = torch.einsum("bts,bsd->btd", scores.softmax(-1), v[:, :, kv].float())
    return out.reshape(b, t, h * d)


def test_the_prefill_gets_its_causal_mask():
    """exllamav2 0.3.2's SDPA branch runs a causal prompt with no mask; the wrapper gives it the
    lower-right causal mask (a prompt after cached tokens sees them all and itself up to each position),
    with an input mask ExLlamaV2's own mask, and leaves every other call to ExLlamaV2's code."""
    calls = []

    class Attention:  # the parts of exllamav2.attn.ExLlamaV2Attention the branch reads
        num_key_value_groups, scaling, sliding_window, layer_idx = 2, 16 ** -0.5, 0, 3

        def repeat_kv(self, x, n_rep):  # [B, KV, S, D] -> [B, KV * n_rep, S, D], each KV head n_rep times
            b, kv, s, d = x.shape
            return x[:, :, None].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)

        def _attn_torch(self, batch_size, q_len, q, k, v, attn_params, cfg, causal=True):
            calls.append(q_len)
            return "exllamav2's own"

    module = types.SimpleNamespace(ExLlamaV2Attention=Attention, has_lower_right_sdpa=True)
    exl.restore_causal_prefill(module)
    exl.restore_causal_prefill(module)  # once is enough: not wrapped twice
    assert Attention._attn_torch.workbench_causal
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, t, h, 16, generator=g) for t, h in ((5, 4), (9, 2), (9, 2)))
    cfg = types.SimpleNamespace(no_sdpa=False, attn_logit_softcapping=None)
    plain = types.SimpleNamespace(block_diag_layers=set(), cu_seqlens=None, is_causal=lambda: True)
    out = Attention()._attn_torch(2, 5, q, k, v, plain, cfg)
    want = _attention_reference(q, k, v, 2, 16 ** -0.5, lambda i, j: j <= i + 4)  # 4 cached tokens before
    assert calls == [] and out.shape == (2, 5, 64) and torch.allclose(out, want, atol=1e-5)
    hidden = torch.zeros(2, 1, 5, 9)
    hidden[..., 0] = float("-inf")  # the first key padded away, on top of the causal mask
    hidden[..., 5:] = torch.triu(torch.full((5, 4), float("-inf")))  # key 5 + c visible from c + 1
    padded = types.SimpleNamespace(block_diag_layers=set(), cu_seqlens=None, is_causal=lambda: False,
                                   get_attn_mask=lambda device: hidden)
    out = Attention()._attn_torch(2, 5, q, k, v, padded, cfg)
    want = _attention_reference(q, k, v, 2, 16 ** -0.5, lambda i, j: 0 < j <= i + 4)
    assert calls == [] and torch.allclose(out, want, atol=1e-5)
    for q_len, params, config in ((1, plain, cfg),  # one query token: no mask needed, ExLlamaV2's code
                                  (5, types.SimpleNamespace(**dict(vars(plain), block_diag_layers={3})), cfg),
                                  (5, types.SimpleNamespace(**dict(vars(plain), cu_seqlens=torch.tensor([0, 5]))), cfg),
                                  (5, plain, types.SimpleNamespace(no_sdpa=True, attn_logit_softcapping=None))):
        assert Attention()._attn_torch(2, q_len, q[:, :q_len], k, v, params, config) == "exllamav2's own"
    assert calls == [1, 5, 5, 5]
