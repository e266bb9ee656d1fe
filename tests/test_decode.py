"""The static-cache decode path (decode.py) on the CPU: it must equal transformers' generate.

The CUDA graph itself needs a GPU; its proof on the H100 is in results/ (benchmarks/h100.sh).
What runs here is everything around it: the static cache, cache positions, the fixed-size mask,
left padding, sampling, stop strings, streaming, the records, the breakdown and the refusals.
"""

import math

import pytest
import torch

from workbench.errors import ConfigError
from workbench.generation.config import DecodeConfig
from workbench.generation.generate import generate
from workbench.generation.record import GenerationRecord
from workbench.generation.static import CACHE_LENGTH_STEP, StaticDecoder, cache_length, graph_mismatch, tolerance
from workbench.studies.proofs import prove_equal

PROMPTS = ['def add(a, b):\n    """Return the sum of a and b."""',
           'def is_even(n):\n    """True when n is even."""\n    return']


def test_greedy_static_equals_eager_over_64_steps(demo_loaded):
    proof = prove_equal(demo_loaded, "static", context_tokens=64, steps=64)
    assert proof.decode_mode == "static" and proof.steps == 64
    assert proof.tokens_identical and proof.first_divergence is None
    # float32 on the CPU: the static cache attends over masked empty slots too, which changes
    # only the order of additions (measured: max |dlogit| ~1e-3 for logits up to ~12)
    assert proof.max_abs_dlogit < 1e-2 and proof.passed
    assert len(proof.step_max_abs_dlogit) == 64
    # the CPU is deterministic: eager against itself is identical
    assert proof.eager_repeat_first_divergence is None and proof.eager_repeat_max_abs_dlogit == 0.0


def test_static_records_equal_eager_records_for_a_padded_batch(demo_loaded):
    config = DecodeConfig.greedy(max_new_tokens=24)
    eager = generate(demo_loaded, PROMPTS, config)
    static = generate(demo_loaded, PROMPTS, config, decode_mode="static")
    assert eager[0].prompt_tokens != eager[1].prompt_tokens  # so the batch really is padded
    for e, s in zip(eager, static):
        assert s.token_ids == e.token_ids and s.stop_reason == e.stop_reason and s.text == e.text
        assert s.decode_mode == s.decode_mode_requested == "static" and e.decode_mode == "eager"
        assert max(abs(a - b) for a, b in zip(e.logprobs, s.logprobs)) < 1e-3
        assert s.new_tokens == len(s.token_times_s) == len(s.logprobs)
        assert all(b > a for a, b in zip(s.token_times_s, s.token_times_s[1:]))
        assert 0 < s.prefill_s <= s.ttft_s
        assert math.isclose(s.ttft_s + sum(b - a for a, b in zip(s.token_times_s, s.token_times_s[1:])),
                            s.token_times_s[-1], rel_tol=1e-9)


def test_static_stops_at_eos_and_pads_like_generate(demo_loaded):
    # the demo answers in the training format and ends with </s> well before 128 tokens
    record = generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=128), decode_mode="static")
    eager = generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=128))
    assert record.token_ids == eager.token_ids and record.stop_reason == eager.stop_reason
    if record.stop_reason == "eos":
        assert record.token_ids[-1] == demo_loaded.tokenizer.eos_token_id


def test_min_new_tokens_and_repetition_penalty_match_generate(demo_loaded):
    config = DecodeConfig.forced(20, repetition_penalty=1.3)
    e = generate(demo_loaded, PROMPTS[1], config)
    s = generate(demo_loaded, PROMPTS[1], config, decode_mode="static")
    assert s.token_ids == e.token_ids and s.new_tokens == 20


def test_seeded_sampling_repeats_in_static_mode(demo_loaded):
    config = DecodeConfig.card(max_new_tokens=16, seed=7, temperature=0.9)
    a = generate(demo_loaded, PROMPTS[0], config, decode_mode="static")
    b = generate(demo_loaded, PROMPTS[0], config, decode_mode="static")
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs


def test_stop_string_and_streaming_in_static_mode(demo_loaded):
    pieces = []
    record = generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=64, stop=("\n",)),
                      on_token=lambda i, text: pieces.append(text), decode_mode="static")
    assert record.stop_reason == "stop_string" and "\n" not in record.text
    assert "".join(pieces).startswith(record.text)


def test_decoder_and_cache_are_reused_across_calls(demo_loaded):
    config = DecodeConfig.forced(8)
    first = generate(demo_loaded, PROMPTS[0], config, decode_mode="static", warmup=1)
    decoder = demo_loaded.decoder[1]
    second = generate(demo_loaded, PROMPTS[0], config, decode_mode="static")
    assert demo_loaded.decoder[1] is decoder  # the same cache: nothing reallocated
    assert first.token_ids == second.token_ids and first.warmup_runs == 1
    assert decoder.length == cache_length(first.prompt_tokens, 8) and decoder.length % CACHE_LENGTH_STEP == 0


def test_record_round_trips_with_its_mode(demo_loaded, tmp_path):
    record = generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=4), decode_mode="static")
    back = GenerationRecord.load(record.save(tmp_path / "r.json"))
    assert back.decode_mode == "static" and back.decode_mode_requested == "static" and back == record


def test_refusals(demo_loaded):
    with pytest.raises(ConfigError, match="decode_mode='turbo'"):
        generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=2), decode_mode="turbo")
    with pytest.raises(ConfigError, match="beam search runs only with decode_mode='eager'"):
        generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=2, num_beams=2), decode_mode="static")
    with pytest.raises(ConfigError, match="needs a CUDA device"):  # a CPU model: no graph, and no quiet fallback
        generate(demo_loaded, PROMPTS[0], DecodeConfig.greedy(max_new_tokens=2), decode_mode="graph")
    with pytest.raises(ConfigError, match="does not fit"):
        StaticDecoder(demo_loaded.model, 1, 128, graph=False).prefill(torch.ones((1, 128), dtype=torch.long),
                                                                      torch.ones((1, 128), dtype=torch.long))


def test_grouped_sdpa_equals_transformers_sdpa_for_one_token():
    import types

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from workbench.generation.static import grouped_sdpa

    torch.manual_seed(0)
    b, heads, kv, dim, length = 2, 8, 1, 16, 40  # the demo's 8:1 grouping
    module = types.SimpleNamespace(num_key_value_groups=heads // kv, is_causal=True, training=False, config=None)
    q, k, v = torch.randn(b, heads, 1, dim), torch.randn(b, kv, length, dim), torch.randn(b, kv, length, dim)
    mask = torch.zeros(b, 1, 1, length)
    mask[0, ..., 30:] = torch.finfo(torch.float32).min  # unfilled cache slots
    mask[1, ..., :5] = torch.finfo(torch.float32).min  # left padding
    ours, _ = grouped_sdpa(module, q, k, v, mask, scaling=dim ** -0.5)
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=dim ** -0.5)
    assert ours.shape == theirs.shape == (b, 1, heads, dim)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_graph_check_refuses_nan_and_drift():
    eager = torch.tensor([1.0, -2.0, 3.0])
    assert graph_mismatch(eager, eager.clone(), tolerance(eager, eager)) == ""
    assert graph_mismatch(eager, torch.tensor([1.0, float("nan"), 3.0]), 1.0) == "non-finite logits"
    assert "max |dlogit|" in graph_mismatch(eager, eager + 0.01, tolerance(eager, eager))
    noisy = eager + 1e-3
    assert graph_mismatch(eager, eager + 2e-3, tolerance(eager, noisy)) == ""  # within 4x the eager noise


def test_breakdown_on_the_cpu_splits_the_step(demo_loaded):
    from workbench.studies.breakdown import profile_decode

    for mode in ("eager", "static"):
        b = profile_decode(demo_loaded, context_tokens=32, steps=4, decode_mode=mode)
        assert b.decode_mode == mode and b.steps == 4 and b.device == "cpu"
        assert b.qgemm_ms > 0 and b.attention_ms > 0 and b.other_host_ms >= 0
        assert math.isclose(b.qgemm_ms + b.attention_ms + b.other_host_ms, b.wall_ms, rel_tol=1e-6)
        assert b.gpu_busy_ms is None and b.host_uncovered_ms is None and b.unprofiled_wall_ms > 0


def _trace(steps=3, graph=False):
    """A hand-made Chrome trace of `steps` decode steps of 1000 us each: per step a GEMM op
    (200 us) launched inside a quantized linear, an attention op (100 us) inside attention,
    another op (50 us) outside both; in graph mode one graph launch starts all three."""
    ev, corr = [], 0

    def x(cat, name, ts, dur, **args):
        ev.append({"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args})

    for i in range(steps):
        t0 = i * 1000.0
        x("user_annotation", "wb::step", t0, 900)
        if graph:
            corr += 1
            x("cuda_runtime", "cudaGraphLaunch", t0 + 10, 5, correlation=corr)
            for name, start, dur in (("gemm_q4", 100, 200), ("attn_kernel", 320, 100), ("rmsnorm", 440, 50)):
                x("kernel", name, t0 + start, dur, correlation=corr)
            continue
        x("user_annotation", "wb::attention", t0 + 50, 300)
        for name, launch, start, dur, ann in (("gemm_q4", 60, 100, 200, "wb::qgemm"),
                                              ("attn_kernel", 200, 320, 100, None),
                                              ("rmsnorm", 400, 440, 50, None)):
            if ann:
                x("user_annotation", ann, t0 + launch - 5, 20)
            corr += 1
            x("cuda_runtime", "cudaLaunchKernel", t0 + launch, 5, correlation=corr)
            x("kernel", name, t0 + start, dur, correlation=corr)
    x("user_annotation", "wb::step", steps * 1000.0, 900)  # the next step's start ends the last one
    return {"traceEvents": ev}


def test_breakdown_attributes_gpu_ops_by_annotation_and_by_name_in_graphs():
    from workbench.studies.breakdown import _name_shares, _split

    eager = _split(_trace(), "cuda", None)
    assert eager["steps"] == 3 and math.isclose(eager["wall_ms"], 1.0)
    assert math.isclose(eager["qgemm_ms"], 0.2) and math.isclose(eager["attention_ms"], 0.1)
    assert math.isclose(eager["other_gpu_ms"], 0.05) and math.isclose(eager["gpu_busy_ms"], 0.35)
    assert math.isclose(eager["host_uncovered_ms"], 0.65) and eager["launches_per_step"] == 3
    shares = _name_shares(_trace())
    assert shares["gemm_q4"] == {"wb::qgemm": 1.0} and shares["attn_kernel"] == {"wb::attention": 1.0}
    graph = _split(_trace(graph=True), "cuda", shares)  # no annotations inside a replay: by name
    assert math.isclose(graph["qgemm_ms"], 0.2) and math.isclose(graph["attention_ms"], 0.1)
    assert graph["launches_by_op"] == eager["launches_by_op"]


def test_bench_modes_prints_each_mode_with_its_proof(demo_model_path, tmp_path, capsys):
    import json

    from workbench.studies.decode_modes import main

    out = tmp_path / "modes.json"
    assert main(["--model", str(demo_model_path), "--device", "cpu", "--kernels", "torch_fused", "--contexts", "16",
                 "--new-tokens", "4", "--repeats", "1", "--prove-steps", "4", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    static = next(line for line in lines if " static " in line)
    assert static.split()[-1] == "yes"  # proven against eager
    assert "needs a CUDA device" in next(line for line in lines if " graph " in line)
    saved = json.loads(out.read_text())
    assert {r["decode_mode_requested"] for r in saved["rows"]} == {"eager", "static", "graph"}
