"""Streaming: the workbench's incremental decoding gives exactly the text a full decode does, and
generate() feeds transformers' own streamers in both decode modes."""

import random
import threading

import pytest
from transformers import TextIteratorStreamer, TextStreamer

from workbench import ConfigError
from workbench.generation.config import DecodeConfig
from workbench.generation.generate import generate
from workbench.generation.streaming import IncrementalDecoder, full_decode_deltas
from workbench.prompts.tokenizer import load_tokenizer

TEXTS = ["def f(x):\n    return x  # 你好 🙂 2024\n", "  \n\n\tprint('ünïcødé')  \n", "🙂🙂 a\u00a0b ☃\n    "]


def _id_sequences(tokenizer, seed: int = 0) -> list[list[int]]:
    """Encoded texts (byte fallback, runs of spaces, newlines), with </s> inside one, and random ids."""
    rng = random.Random(seed)
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    with_eos = encoded[0][:5] + [tokenizer.eos_token_id] + encoded[1]
    randoms = [[rng.randrange(3, len(tokenizer)) for _ in range(60)] for _ in range(5)]
    return [*encoded, with_eos, *randoms]


@pytest.mark.parametrize("which", ["demo", "real"])
def test_incremental_deltas_equal_a_full_decode_at_every_token(which, request):
    path = request.getfixturevalue("demo_model_path" if which == "demo" else "real_tokenizer_path")
    tokenizer = load_tokenizer(path)
    for ids in _id_sequences(tokenizer):
        decoder = IncrementalDecoder(tokenizer)
        deltas = [decoder.push(i) for i in ids]
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
        assert deltas == full_decode_deltas(tokenizer, ids)


def test_the_decoding_window_stays_short(demo_model_path):
    tokenizer = load_tokenizer(demo_model_path)
    decoder = IncrementalDecoder(tokenizer)
    ids = tokenizer.encode("x = 1\n" * 200, add_special_tokens=False)
    for i in ids:
        decoder.push(i)
        assert len(decoder.ids) - decoder.prefix_offset <= 8  # not the whole answer


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_a_transformers_text_streamer_prints_the_answer(demo_loaded, mode, capsys):
    config = DecodeConfig.greedy(max_new_tokens=12)
    streamer = TextStreamer(demo_loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    record = generate(demo_loaded, "def add(a, b):", config, streamer=streamer, decode_mode=mode)
    assert capsys.readouterr().out == record.text + "\n"  # TextStreamer ends the stream with a newline


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_a_text_iterator_streamer_yields_the_answer_to_another_thread(demo_loaded, mode):
    config = DecodeConfig.greedy(max_new_tokens=12)
    streamer = TextIteratorStreamer(demo_loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    records, pieces = [], []
    worker = threading.Thread(target=lambda: records.append(
        generate(demo_loaded, "def add(a, b):", config, streamer=streamer, decode_mode=mode)))
    worker.start()
    pieces = list(streamer)  # ends when generation calls streamer.end()
    worker.join()
    assert records and "".join(pieces) == records[0].text


def test_on_token_and_a_streamer_together(demo_loaded, capsys):
    config = DecodeConfig.greedy(max_new_tokens=8)
    pieces = []
    streamer = TextStreamer(demo_loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    record = generate(demo_loaded, "def add(a, b):", config, on_token=lambda i, t: pieces.append(t), streamer=streamer)
    assert "".join(pieces) == record.text and capsys.readouterr().out == record.text + "\n"


def test_streamers_are_refused_where_they_cannot_stream(demo_loaded):
    config = DecodeConfig.greedy(max_new_tokens=2)
    streamer = TextStreamer(demo_loaded.tokenizer)
    with pytest.raises(ConfigError, match="single prompt"):
        generate(demo_loaded, ["a", "b"], config, streamer=streamer)
    with pytest.raises(ConfigError, match="streamer=.*put\\(\\) and end\\(\\)"):
        generate(demo_loaded, "a", config, streamer=print)
