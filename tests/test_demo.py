"""The demo model: its layout is the real checkpoint's, its quality is recorded, and building is
safe (cached by recipe, atomic, clear errors)."""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from workbench import CacheError
from workbench.model.demo import WEIGHTS_FILE, DemoRecipe, build, default_path

REAL_LAYOUT = {"gptq_model-4bit-64g.bin", "quantize_config.json", "config.json", "generation_config.json",
               "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "SHA256SUMS", "demo.json"}
DEMO_FILES = REAL_LAYOUT | {"chat_template.jinja"}  # the card's layout, and the chat template beside it
AUTOGPTQ_042_KEYS = {"bits", "group_size", "damp_percent", "desc_act", "static_groups", "sym", "true_sequential",
                     "model_name_or_path", "model_file_base_name"}
ROOT = Path(__file__).resolve().parents[1]


def test_layout_is_the_real_checkpoints(demo_model_path):
    assert {p.name for p in demo_model_path.iterdir()} == DEMO_FILES
    config = json.loads((demo_model_path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_attention_heads"] // config["num_key_value_heads"] == 8
    assert config["rope_theta"] == 1e6 if "rope_theta" in config else config["rope_parameters"]["rope_theta"] == 1e6
    assert config["intermediate_size"] % 64 == 0 and config["tie_word_embeddings"] is False
    qc = json.loads((demo_model_path / "quantize_config.json").read_text())
    assert set(qc) == AUTOGPTQ_042_KEYS and qc["bits"] == 4 and qc["group_size"] == 64


def test_weights_are_a_plain_tensor_pickle_with_autogptq_v1_names(demo_model_path):
    state = torch.load(demo_model_path / WEIGHTS_FILE, weights_only=True, map_location="cpu")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    q = "model.layers.0.self_attn.q_proj"
    assert {f"{q}.qweight", f"{q}.qzeros", f"{q}.scales", f"{q}.g_idx"} <= set(state)
    assert state[f"{q}.qweight"].dtype == torch.int32 and state[f"{q}.scales"].dtype == torch.float16
    hidden = state["model.embed_tokens.weight"].shape[1]
    assert state[f"{q}.qweight"].shape == (hidden * 4 // 32, hidden)  # 8 four-bit values per int32, along in
    assert state[f"{q}.scales"].shape == (hidden // 64, hidden)
    assert "lm_head.weight" in state and "model.norm.weight" in state


def test_manifest_matches_files(demo_model_path):
    lines = (demo_model_path / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split("  ", 1)) for line in lines if line)
    assert set(listed) == DEMO_FILES - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256((demo_model_path / name).read_bytes()).hexdigest() == digest, name


def test_tokenizer_has_llama_settings(demo_model_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(demo_model_path / "tokenizer.model"))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.encode("<|role_start|>", out_type=str)[0].startswith("\u2581")  # dummy prefix
    assert sp.encode("x = 1234", out_type=str)[-4:] == ["1", "2", "3", "4"]  # split digits
    assert "<0x0A>" in sp.encode("a\nb", out_type=str)  # byte fallback for the newline


def test_quality_is_recorded(demo_model_path):
    record = json.loads((demo_model_path / "demo.json").read_text())
    assert record["eval_prompts"] >= 50 and record["eval_max_new_tokens"] == 128
    assert record["build_s"] > 0 and record["heldout_loss_quantized"] < 6.0
    assert record["train_conversations"] > 1000 and record["heldout_conversations"] >= record["eval_prompts"]
    stops = record["stop_share"]
    assert set(stops) == {"codefuse", "raw"} and all(0 <= v <= 1 for v in stops.values())
    assert stops["codefuse"] >= 0.5, stops  # it answers and stops with </s> in the training format


def test_the_training_format_does_clearly_better(demo_model_path, demo_loaded):
    """Issue #2: in the training format the demo answers and stops with </s> within 128 tokens;
    without the template the same header reads like raw source (the recipe mixes plain stdlib
    source into training, as CodeLlama's pretraining) and the model keeps writing code.

    Measured on the default recipe: 1.0 vs 0.0 over 64 held-out prompts (CPU build), and at least
    0.98 vs 0.0 for eight seeds of the same recipe trained on a GPU; the bounds leave room for
    other machines' arithmetic and still demand a gap of 0.6. Answers are whole functions from their `def` line
    only with the template; without it the model continues the header it was given.
    """
    from workbench.generation.config import DecodeConfig
    from workbench.generation.generate import generate
    from workbench.model.demo import EOS_ID, collect_conversations, split_corpus

    stops = json.loads((demo_model_path / "demo.json").read_text())["stop_share"]
    assert stops["codefuse"] >= 0.8 and stops["raw"] <= 0.2, stops

    recipe = DemoRecipe()
    heldout = split_corpus(collect_conversations(recipe), recipe)[1][:16]
    config = DecodeConfig.greedy(max_new_tokens=128)
    stop, whole = {}, {}
    for fmt in ("codefuse", "raw"):  # the workbench's own loading and generation agree
        records = generate(demo_loaded, [c.human for c in heldout], config, format=fmt, logprobs=False)
        stop[fmt] = sum(EOS_ID in r.token_ids for r in records) / len(records)
        whole[fmt] = sum(r.text.lstrip().startswith(("def ", "async def ")) for r in records) / len(records)
    assert stop["codefuse"] >= 0.8 and stop["raw"] <= 0.2, stop
    assert whole["codefuse"] >= 0.75 and whole["codefuse"] >= whole["raw"] + 0.5, whole


def test_plain_source_never_holds_a_held_out_function():
    from workbench.model.demo import collect_conversations, source_windows, split_corpus

    recipe = DemoRecipe()
    heldout = split_corpus(collect_conversations(recipe), recipe)[1]

    def lines(text):  # indentation dropped: methods are dedented in conversations
        return "\n".join(line.strip() for line in text.splitlines())

    source = lines("".join(source_windows(heldout, recipe)))
    assert not [c.name for c in heldout if lines(c.bot) in source]
    everything = lines("".join(source_windows([], recipe)))
    assert all(lines(c.bot) in everything for c in heldout[:20])  # the check above can see them


def test_training_rows_are_conversations_or_plain_source_never_both():
    import random

    from workbench.model.demo import _batches

    recipe = DemoRecipe(raw_source_share=0.25, block_tokens=6, batch_size=4)
    conversations = [([7, 1, 2, 3], [-100, 1, 2, 3]), ([7, 4, 5], [-100, 4, 5])]  # 7: the role tag
    raw = [([9, 8, 9, 8, 9], [9, 8, 9, 8, 9])]
    batches = _batches(conversations, raw, recipe, random.Random(0))
    rows = [row for _ in range(10) for row in next(batches)[0].tolist()]
    plain = [r for r in rows if set(r) <= {8, 9}]
    tagged = [r for r in rows if r not in plain]
    assert len(plain) == 10  # a quarter of 40 rows
    assert all(r[0] == 7 and not {8, 9} & set(r) for r in tagged)  # each starts with a conversation


def test_cache_is_keyed_by_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    a, b = default_path(DemoRecipe()), default_path(DemoRecipe(train_steps=7))
    assert a != b and a.parent == b.parent == tmp_path / "demo"
    assert default_path(DemoRecipe()) == a


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    import workbench.model.demo as demo

    def crash(out, recipe, log):
        (out / "half-written.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_build_into", crash)
    with pytest.raises(KeyboardInterrupt):
        build(DemoRecipe(train_steps=3))
    assert list((tmp_path / "demo").iterdir()) == []


def test_unwritable_cache_says_what_to_do(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        target = Path("/proc/workbench-cache")  # even root cannot create folders in /proc
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    monkeypatch.setenv("WORKBENCH_CACHE", str(target))
    with pytest.raises(CacheError, match="not writable.*WORKBENCH_CACHE"):
        build()


def test_makefile_refuses_a_wrong_python(tmp_path):
    fake = tmp_path / "python3.11"
    fake.write_text("#!/bin/sh\nexec python3 -c 'import sys; sys.exit(1)'\n")
    fake.chmod(0o755)
    out = subprocess.run(["make", "-C", str(ROOT), "setup", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "the workbench supports 3.11 3.12 3.13" in out.stderr, out.stderr
    missing = subprocess.run(["make", "-C", str(ROOT), "setup", "PYTHON=/nonexistent/python3.11",
                              f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True)
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert not (tmp_path / "venv").exists()


def test_orphaned_build_folders_are_cleaned(tmp_path):
    from workbench.cache import building_dir

    final = tmp_path / "thing"
    orphan = tmp_path / ".thing.building-999999999-abc"  # no such process
    orphan.mkdir()
    running = tmp_path / f".thing.building-{os.getpid()}-def"  # a live build: left alone
    running.mkdir()
    with building_dir(final) as out:
        (out / "f").write_text("ok")
        assert not orphan.exists() and running.exists()
    assert (final / "f").read_text() == "ok"


def test_the_command_prints_the_folder_alone_for_scripts(demo_model_path, capsys):
    """`python -m workbench demo --path-only` prints one line, the folder (the Makefile's legacy tests
    read it; `| head -n 1` on the full output broke the pipe of the JSON that followed)."""
    from workbench.model.demo import main

    assert main(["--path-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(demo_model_path)]
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(demo_model_path) and '"heldout_loss_quantized"' in out
