"""Attention choices (workbench.attention): set by name, read back into every record, restored
after a comparison, and applied only while the model runs. Which backend is faster is a GPU
question (results/h100/first_lengths/)."""

import pytest
import torch

from workbench.errors import ConfigError
from workbench.generation.config import DecodeConfig
from workbench.generation.generate import generate
from workbench.generation.record import GenerationRecord
from workbench.model.attention import ATTENTION_CHOICES, DEFAULT_ATTENTION, attention_in_use, set_attention


@pytest.fixture
def restore_attention(demo_loaded):
    yield demo_loaded
    set_attention(demo_loaded, DEFAULT_ATTENTION)


def test_a_load_sets_the_default_and_records_it(demo_loaded):
    assert DEFAULT_ATTENTION == "sdpa-no-cudnn"
    assert demo_loaded.attention == demo_loaded.load_record.attention == DEFAULT_ATTENTION
    assert attention_in_use(demo_loaded.model) == DEFAULT_ATTENTION


@pytest.mark.parametrize("choice", ATTENTION_CHOICES)
def test_each_choice_reads_back_as_itself(restore_attention, choice):
    assert set_attention(restore_attention, choice) == choice
    assert attention_in_use(restore_attention.model) == choice
    assert restore_attention.attention == choice


def test_an_unknown_choice_names_the_known_ones(demo_loaded):
    with pytest.raises(ConfigError, match="sdpa-no-cudnn"):
        set_attention(demo_loaded, "cudnn")
    assert attention_in_use(demo_loaded.model) == DEFAULT_ATTENTION  # nothing changed


def test_load_model_refuses_an_unknown_attention_before_loading(demo_model_path):
    from workbench.model.load import load_model

    with pytest.raises(ConfigError, match="attention='flash'"):
        load_model(demo_model_path, kernel="torch", device="cpu", attention="flash")


def test_records_say_which_attention_ran(restore_attention):
    config = DecodeConfig.greedy(max_new_tokens=4)
    for choice, mode in (("eager", "eager"), ("sdpa-math", "static"), (DEFAULT_ATTENTION, "eager")):
        set_attention(restore_attention, choice)
        rec = generate(restore_attention, "def f():", config, decode_mode=mode)
        assert rec.attention == choice
        assert GenerationRecord.from_dict(rec.to_dict()).attention == choice
    old = rec.to_dict()
    del old["attention"]  # a record written before the field existed still loads
    assert GenerationRecord.from_dict(old).attention == ""


def test_the_attention_comparison_restores_the_choice_it_found(restore_attention):
    from workbench.studies.decode_modes import compare_attention

    set_attention(restore_attention, "sdpa-math")
    rows = compare_attention(restore_attention, ["eager", "sdpa"], context_tokens=16, decode_tokens=3, repeats=1,
                             steps=2)
    assert [r["attention"] for r in rows] == ["eager", "sdpa"]
    assert all(r["token_ms_p50"] > 0 and r["first_run_token_ms_p50"] > 0 for r in rows)
    assert attention_in_use(restore_attention.model) == "sdpa-math" == restore_attention.attention


def _process_switches() -> dict:
    cuda = torch.backends.cuda
    return {"cudnn": cuda.cudnn_sdp_enabled(), "flash": cuda.flash_sdp_enabled(),
            "efficient": cuda.mem_efficient_sdp_enabled(), "math": cuda.math_sdp_enabled()}


def test_the_choice_holds_inside_the_models_forward_only(restore_attention):
    """torch's switches outside the model stay as the process set them; inside its forward they
    are the model's choice, for the eager and the static path alike."""
    seen = []
    layer = restore_attention.model.model.layers[0].self_attn
    handle = layer.register_forward_pre_hook(lambda *_: seen.append(_process_switches()))
    before = _process_switches()
    try:
        set_attention(restore_attention, "sdpa-math")
        assert _process_switches() == before
        for mode in ("eager", "static"):
            seen.clear()
            generate(restore_attention, "def f():", DecodeConfig.greedy(max_new_tokens=3), decode_mode=mode)
            assert seen and all(s == {"cudnn": False, "flash": False, "efficient": False, "math": True} for s in seen)
            assert _process_switches() == before, mode
    finally:
        handle.remove()


def test_the_switches_are_put_back_when_a_forward_fails(restore_attention):
    set_attention(restore_attention, "sdpa-flash")
    before = _process_switches()
    with pytest.raises(Exception):
        restore_attention.model(input_ids=torch.tensor([[10**9]]))  # an id past the vocabulary
    assert _process_switches() == before


def test_a_user_setting_outside_the_model_is_kept_and_read_for_unset_models(restore_attention):
    from workbench.model.attention import AttentionScope

    with AttentionScope("sdpa-efficient"):  # what a user's own `with` block would do around their code
        assert _process_switches() == {"cudnn": False, "flash": False, "efficient": True, "math": False}
        assert attention_in_use(restore_attention.model) == DEFAULT_ATTENTION  # the model's own choice
    assert attention_in_use(restore_attention.model) == DEFAULT_ATTENTION
