"""Instrumented generation on the demo model: the record's numbers are consistent, the output is
what plain `model.generate` gives, and the log-probabilities are what a forward pass says."""

import json
import math

import pytest
import torch

from workbench import ConfigError
from workbench.generation.config import DecodeConfig
from workbench.generation.generate import generate
from workbench.generation.record import GenerationRecord, load_records, records_frame, save_records
from workbench.prompts.encoding import encode_prompt

QUESTION = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n"


def test_decode_config_factories_and_validation():
    card = DecodeConfig.card()
    assert (card.do_sample, card.top_p, card.temperature, card.max_new_tokens) == (True, 0.95, 0.1, 512)
    greedy = DecodeConfig.greedy()
    assert (greedy.do_sample, greedy.num_beams, greedy.max_new_tokens) == (False, 1, 512)
    forced = DecodeConfig.forced(20, repetition_penalty=1.3)  # fixed-length timing runs
    assert (forced.do_sample, forced.max_new_tokens, forced.min_new_tokens, forced.repetition_penalty) == \
        (False, 20, 20, 1.3)
    with pytest.raises(ConfigError, match="DecodeConfig.max_new_tokens="):
        DecodeConfig.forced(0)
    for bad, field in [({"temperature": 0}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
                       ({"num_beams": 0}, "num_beams"), ({"max_new_tokens": 0}, "max_new_tokens"),
                       ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens"), ({"seed": -2}, "seed"),
                       ({"stop": "abc"}, "stop"), ({"repetition_penalty": 0}, "repetition_penalty")]:
        with pytest.raises(ConfigError, match=f"DecodeConfig.{field}="):
            DecodeConfig(**bad)
    with pytest.raises(ConfigError, match="unknown DecodeConfig fields"):
        DecodeConfig.from_dict({"temprature": 1.0})
    assert DecodeConfig.from_dict(card.to_dict()) == card


def test_record_is_consistent(demo_loaded):
    rec = generate(demo_loaded, QUESTION, DecodeConfig.greedy(max_new_tokens=24))
    assert rec.new_tokens == len(rec.token_ids) == len(rec.token_times_s) == len(rec.logprobs) == len(rec.top_logprobs)
    assert rec.new_tokens >= 1
    times = rec.token_times_s
    assert all(b > a for a, b in zip(times, times[1:])), "token times must increase"
    assert rec.ttft_s == times[0] and 0 < rec.prefill_s <= rec.ttft_s
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert rec.token_gaps_s == gaps
    assert math.isclose(rec.ttft_s + sum(gaps), times[-1], rel_tol=1e-9)
    if gaps:
        lat = rec.token_latency()
        assert lat.n == len(gaps) and lat.min_ms <= rec.token_ms_p50 <= rec.token_ms_p90 <= lat.max_ms
        assert (rec.token_ms_p50, rec.token_ms_p90) == (lat.p50_ms, lat.p90_ms)
        assert math.isclose(rec.tokens_per_s, len(gaps) / (times[-1] - times[0]))
    assert rec.stop_reason in ("eos", "max_new_tokens")
    assert rec.kernel == demo_loaded.kernel and rec.env["torch"] == torch.__version__
    assert rec.checkpoint_hash and rec.memory["generation"]["rss_gb"] > 0
    assert all(lp <= 0 for lp in rec.logprobs)
    assert all(len(t) == 5 and t[0].logprob >= t[-1].logprob for t in rec.top_logprobs)


def _plain_generate(loaded, ids, config):
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                    generation_config=config.generation_config(loaded.tokenizer))
    return out[0, len(ids):].tolist()


def test_greedy_equals_plain_generate_and_logprobs_equal_a_forward_pass(demo_loaded):
    config = DecodeConfig.greedy(max_new_tokens=20)
    messages = [{"role": "human", "content": QUESTION}]
    ids = encode_prompt(demo_loaded.tokenizer, messages)
    rec = generate(demo_loaded, messages, config)
    plain = _plain_generate(demo_loaded, ids, config)
    assert rec.token_ids == plain[: rec.new_tokens]
    assert rec.prompt_tokens == len(ids)
    # An independent forward pass over prompt + answer scores the same tokens.
    full = torch.tensor([ids + rec.token_ids])
    with torch.inference_mode():
        logits = demo_loaded.model(input_ids=full).logits[0, len(ids) - 1:-1].float()
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(rec.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(rec.logprobs), expected, atol=2e-2), \
        (torch.tensor(rec.logprobs) - expected).abs().max()


def test_seeded_sampling_repeats_exactly(demo_loaded):
    config = DecodeConfig.card(max_new_tokens=16, temperature=1.0, seed=7)
    a = generate(demo_loaded, QUESTION, config)
    b = generate(demo_loaded, QUESTION, config)
    c = generate(demo_loaded, QUESTION, config.replace(seed=8))
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert a.token_ids != c.token_ids


def test_stop_string_stops(demo_loaded):
    free = generate(demo_loaded, QUESTION, DecodeConfig.greedy(max_new_tokens=40))
    if len(free.text) < 6:
        pytest.skip(f"the demo model answered too briefly to test a stop string: {free.text!r}")
    stop = free.text[3:6]
    rec = generate(demo_loaded, QUESTION, DecodeConfig.greedy(max_new_tokens=40, stop=(stop,)))
    assert rec.stop_reason == "stop_string"
    assert stop not in rec.text and free.text.startswith(rec.text)
    assert rec.new_tokens < free.new_tokens and rec.new_tokens == len(rec.token_times_s)


def test_json_round_trip_and_frame(demo_loaded, tmp_path):
    recs = generate(demo_loaded, [QUESTION, "def mul(a, b):\n"], DecodeConfig.greedy(max_new_tokens=8))
    assert [r.batch_index for r in recs] == [0, 1] and all(r.batch_size == 2 for r in recs)
    path = save_records(tmp_path / "records.json", recs)
    again = load_records(path)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in recs]
    one = recs[0].save(tmp_path / "one.json")
    assert GenerationRecord.load(one).to_dict() == json.loads(one.read_text())
    frame = records_frame(recs)
    assert list(frame["batch_index"]) == [0, 1] and frame["ttft_s"].notna().all()


def test_batch_matches_single_prompts(demo_loaded):
    """Left padding must not change a greedy answer (within the demo's float16 arithmetic)."""
    prompts = [QUESTION, "def is_even(n):\n    \"\"\"Whether n is even.\"\"\"\n"]
    config = DecodeConfig.greedy(max_new_tokens=8)
    batch = generate(demo_loaded, prompts, config)
    singles = [generate(demo_loaded, p, config) for p in prompts]
    assert [b.token_ids[:4] for b in batch] == [s.token_ids[:4] for s in singles]


def test_streaming_sends_the_answer_and_warmup_is_reported(demo_loaded):
    pieces = []
    rec = generate(demo_loaded, QUESTION, DecodeConfig.greedy(max_new_tokens=12),
                   on_token=lambda token_id, text: pieces.append((token_id, text)), warmup=1)
    assert [t for t, _ in pieces] == rec.token_ids
    assert "".join(text for _, text in pieces) == rec.text
    assert rec.warmup_runs == 1
    with pytest.raises(ConfigError, match="on_token"):
        generate(demo_loaded, [QUESTION, QUESTION], DecodeConfig.greedy(max_new_tokens=2), on_token=print)


def test_bad_prompts_are_refused(demo_loaded):
    with pytest.raises(ConfigError, match="prompt must be"):
        generate(demo_loaded, [], DecodeConfig.greedy(max_new_tokens=2))
    with pytest.raises(ConfigError, match="config must be a DecodeConfig"):
        generate(demo_loaded, QUESTION, {"max_new_tokens": 2})


# --- a checkpoint's generation_config.json --------------------------------------------------------

def test_decode_config_from_a_generation_config(tmp_path):
    from transformers import GenerationConfig

    card = DecodeConfig.from_generation_config(GenerationConfig(do_sample=True, top_p=0.95, temperature=0.1,
                                                                max_new_tokens=512))
    assert card == DecodeConfig.card()
    ids_only = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "transformers_version": "4.33.1"}
    assert DecodeConfig.from_generation_config(ids_only) == DecodeConfig.greedy()  # nothing said: our defaults
    (tmp_path / "generation_config.json").write_text(json.dumps({**ids_only, "do_sample": True, "top_k": 40}))
    from_folder = DecodeConfig.from_generation_config(tmp_path, max_new_tokens=64)
    assert (from_folder.do_sample, from_folder.top_k, from_folder.max_new_tokens) == (True, 40, 64)
    assert DecodeConfig.from_generation_config(tmp_path / "generation_config.json").top_k == 40


def test_a_generation_config_decodeconfig_cannot_express_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\['max_length', 'typical_p'\]"):
        DecodeConfig.from_generation_config({"max_length": 4096, "typical_p": 0.9})
    config = DecodeConfig.from_generation_config({"max_length": 4096, "typical_p": 0.9}, max_new_tokens=100,
                                                 ignore=["typical_p"])
    assert config.max_new_tokens == 100
    with pytest.raises(ConfigError, match="cannot read a generation config"):
        DecodeConfig.from_generation_config(tmp_path)  # no generation_config.json there
    with pytest.raises(ConfigError, match="DecodeConfig.temperature="):
        DecodeConfig.from_generation_config({"temperature": 0})  # validated like any DecodeConfig


def test_the_checkpoints_generation_config_is_read_at_load(demo_loaded, demo_model_path):
    shipped = json.loads((demo_model_path / "generation_config.json").read_text())
    assert demo_loaded.load_record.generation_config == shipped == demo_loaded.generation_config
    assert demo_loaded.load_record.to_dict()["generation_config"] == shipped
    assert DecodeConfig.from_generation_config(demo_loaded.generation_config) == DecodeConfig.greedy()


def test_answer_end_finds_the_first_prefix_holding_a_stop_string(real_tokenizer_path):
    """answer_end bisects for the shortest prefix whose text holds a stop string: on HumanEval's
    solutions, cut and joined at random (multi-byte characters included), it ends where trying
    every prefix in turn ends, with the same text."""
    import random

    from workbench.generation.stopping import answer_end
    from workbench.humaneval.protocol import load_problems
    from workbench.prompts.tokenizer import load_tokenizer

    tok = load_tokenizer(real_tokenizer_path)
    solutions = [p.canonical_solution for p in load_problems().values()]
    rng = random.Random(5)

    def linear(ids, stops):
        for k in range(1, len(ids) + 1):
            text = tok.decode(ids[:k], skip_special_tokens=True)
            hits = [text.find(s) for s in stops if s in text]
            if hits:
                return k, "stop_string", text[: min(hits)]
        return len(ids), "max_new_tokens", tok.decode(ids, skip_special_tokens=True)

    stopped = 0
    for _ in range(60):
        text = "".join(rng.sample(solutions, 3)) + rng.choice(["", "é → ü\n", "日本語\n"])
        ids = tok.encode(text, add_special_tokens=False)[: rng.randint(5, 200)]
        stops = tuple(rng.sample(["\n", "return", "    if", "):", "→", "本", "\n\n"], 2))
        got = answer_end(tok, ids, DecodeConfig.greedy(max_new_tokens=512, stop=stops))
        assert got == linear(ids, stops), (stops, ids)
        stopped += got[1] == "stop_string"
    assert stopped >= 30  # most cases did stop, at varied places
