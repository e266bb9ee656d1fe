"""Prompt formats, the tokenizer, encoding and token views (workbench.prompts).

Encodings are checked against SentencePiece itself: the model saw each prompt as one text, every
special token's text read as its id, SentencePiece's dummy prefix (▁) only at the very start.
"""

import re

import pytest
import sentencepiece
import transformers
from sentencepiece import sentencepiece_model_pb2

import workbench
from workbench import (
    PROMPT_FORMATS,
    CheckpointError,
    PromptError,
    PromptFormat,
    WorkbenchError,
    chat_template,
    check_context,
    diff_formats,
    encode_prompt,
    load_tokenizer,
    prompts,
    render_prompt,
    token_view,
)

SYS = "<|role_start|>system<|role_end|>"
HUM = "<|role_start|>human<|role_end|>"
BOT = "<|role_start|>bot<|role_end|>"

SINGLE = [{"role": "human", "content": "Write hello world"}]
MULTI = [
    {"role": "system", "content": "S"},
    {"role": "human", "content": "H1"},
    {"role": "bot", "content": "B1"},
    {"role": "human", "content": "H2"},
]
# Unicode, embedded and trailing newlines, indentation, a leading space: all must survive as they are.
CODE = [
    {"role": "system", "content": "Du bist ein Assistent für Code. 你好 🙂"},
    {"role": "user", "content": "Fix:\ndef f(x):\n    return x**2\n"},
    {"role": "assistant", "content": "```python\ndef f(x):\n\treturn x * x\n```\n\n  Done."},
    {"role": "user", "content": " Thanks 👍"},
]

# (format, conversation, add_generation_prompt) -> the exact prompt
EXPECTED = {
    ("codefuse", "single", True): f"{HUM}Write hello world{BOT}",
    ("codefuse", "single", False): f"{HUM}Write hello world",
    ("codefuse", "multi", True): f"{SYS}S{HUM}H1{BOT}B1</s>{HUM}H2{BOT}",
    ("codefuse", "multi", False): f"{SYS}S{HUM}H1{BOT}B1</s>{HUM}H2",
    ("card", "single", True): f"{HUM}Write hello world\n{BOT}",
    ("card", "multi", True): f"{SYS}S{HUM}H1\n{BOT}B1</s>{HUM}H2\n{BOT}",
    ("card", "multi", False): f"{SYS}S{HUM}H1\n{BOT}B1</s>{HUM}H2\n",
    ("card-diagram", "single", True): f"{HUM}Write hello world\n{BOT}",
    ("card-diagram", "multi", True): f"{SYS}S\n{HUM}H1\n{BOT}B1</s>\n{HUM}H2\n{BOT}",
    ("card-diagram", "multi", False): f"{SYS}S\n{HUM}H1\n{BOT}B1</s>\n{HUM}H2\n",
    ("newline", "single", True): f"{HUM}Write hello world\n{BOT}",
    ("newline", "single", False): f"{HUM}Write hello world",
    ("newline", "multi", True): f"{SYS}S\n{HUM}H1\n{BOT}B1</s>\n{HUM}H2\n{BOT}",
    ("newline", "multi", False): f"{SYS}S\n{HUM}H1\n{BOT}B1</s>\n{HUM}H2",
    ("mftcoder-v2", "single", True): "<s>human\nWrite hello world\n<s>bot\n",
    ("mftcoder-v2", "multi", True): "<s>system\nS\n<s>human\nH1\n<s>bot\nB1</s>\n<s>human\nH2\n<s>bot\n",
    ("mftcoder-v2", "multi", False): "<s>system\nS\n<s>human\nH1\n<s>bot\nB1</s>\n<s>human\nH2\n",
    ("raw", "single", True): "Write hello world",
    ("raw", "multi", True): "SH1B1H2",
    ("raw", "multi", False): "SH1B1H2",
    ("codefuse", "code", True): (
        f"{SYS}Du bist ein Assistent für Code. 你好 🙂{HUM}Fix:\ndef f(x):\n    return x**2\n"
        f"{BOT}```python\ndef f(x):\n\treturn x * x\n```\n\n  Done.</s>{HUM} Thanks 👍{BOT}"
    ),
    ("card", "code", True): (
        f"{SYS}Du bist ein Assistent für Code. 你好 🙂{HUM}Fix:\ndef f(x):\n    return x**2\n"
        f"{BOT}```python\ndef f(x):\n\treturn x * x\n```\n\n  Done.</s>{HUM} Thanks 👍\n{BOT}"
    ),
    ("card-diagram", "code", True): (
        f"{SYS}Du bist ein Assistent für Code. 你好 🙂\n{HUM}Fix:\ndef f(x):\n    return x**2\n\n"
        f"{BOT}```python\ndef f(x):\n\treturn x * x\n```\n\n  Done.</s>\n{HUM} Thanks 👍\n{BOT}"
    ),
    ("mftcoder-v2", "code", False): (
        "<s>system\nDu bist ein Assistent für Code. 你好 🙂\n<s>human\nFix:\ndef f(x):\n    return x**2\n\n"
        "<s>bot\n```python\ndef f(x):\n\treturn x * x\n```\n\n  Done.</s>\n<s>human\n Thanks 👍\n"
    ),
    ("raw", "code", True): (
        "Du bist ein Assistent für Code. 你好 🙂Fix:\ndef f(x):\n    return x**2\n"
        "```python\ndef f(x):\n\treturn x * x\n```\n\n  Done. Thanks 👍"
    ),
}
CONVERSATIONS = {"single": SINGLE, "multi": MULTI, "code": CODE}
QUICKSTART = [{"role": "human", "content": "Please write a QuickSort program in Python"}]

CORPUS = """\
<|role_start|>human<|role_end|>Please write a QuickSort program in Python
<|role_start|>bot<|role_end|>def quick_sort(items):
    if len(items) <= 1:
        return items
    pivot = items[0]
    return quick_sort([x for x in items[1:] if x < pivot]) + [pivot] + quick_sort([x for x in items[1:] if x >= pivot])
The quick brown fox jumps over the lazy dog. Hello world, 12345 and 67890.
Du bist ein Assistent für Code. 你好，世界。
\tindented with a tab; two  spaces;   three.
"""


def _train_sentencepiece(folder, vocab_size, **ids):
    """A tiny Llama-style SentencePiece BPE model: byte fallback, split digits, the text kept as is."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text(CORPUS * 20, encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"),
        model_prefix=str(folder / "tokenizer"),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        **{"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1, **ids},
        minloglevel=2,
    )
    return folder / "tokenizer.model"


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    return _train_sentencepiece(tmp_path_factory.mktemp("tiny"), 400)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_file):
    return load_tokenizer(tiny_model_file.parent)


@pytest.fixture(scope="session")
def real_tokenizer(real_tokenizer_path):
    return load_tokenizer(real_tokenizer_path)


@pytest.fixture(scope="session", params=["tiny", "real"])
def any_tokenizer(request):
    """(tokenizer, its tokenizer.model), for the tiny trained model and for the real one."""
    if request.param == "tiny":
        model_file = request.getfixturevalue("tiny_model_file")
        return request.getfixturevalue("tiny_tokenizer"), model_file
    path = request.getfixturevalue("real_tokenizer_path")
    return request.getfixturevalue("real_tokenizer"), path if path.is_file() else path / "tokenizer.model"


def sentencepiece_ids(model_file, text):
    """The ids the model saw for `text`, computed with SentencePiece alone."""
    with_prefix = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    proto = sentencepiece_model_pb2.ModelProto.FromString(with_prefix.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    without_prefix = sentencepiece.SentencePieceProcessor()
    without_prefix.LoadFromSerializedProto(proto.SerializeToString())
    specials = {"<unk>": 0, "<s>": 1, "</s>": 2}
    ids = []
    for index, part in enumerate(re.split("(<unk>|<s>|</s>)", text)):
        if part in specials:
            ids.append(specials[part])
        elif part:
            ids += (with_prefix if index == 0 else without_prefix).encode(part)
    return ids


# --- Rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("format", "conversation", "add_generation_prompt"), list(EXPECTED))
def test_render_prompt_exact(format, conversation, add_generation_prompt):
    rendered = render_prompt(CONVERSATIONS[conversation], format, add_generation_prompt)
    assert rendered == EXPECTED[format, conversation, add_generation_prompt]


def test_every_format_is_covered_and_described():
    assert {"codefuse", "card", "card-diagram", "newline", "mftcoder-v2", "raw"} <= set(PROMPT_FORMATS)
    assert {format for format, _, _ in EXPECTED} == set(PROMPT_FORMATS)
    assert all(fmt.description for fmt in PROMPT_FORMATS.values())


def test_default_format_is_codefuse_with_generation_prompt():
    assert render_prompt(MULTI) == f"{SYS}S{HUM}H1{BOT}B1</s>{HUM}H2{BOT}"


def test_aliases_render_like_roles():
    aliases = [{"role": "user", "content": "H1"}, {"role": "assistant", "content": "B1"}]
    roles = [{"role": "human", "content": "H1"}, {"role": "bot", "content": "B1"}]
    assert render_prompt(aliases) == render_prompt(roles) == f"{HUM}H1{BOT}B1</s>{BOT}"


def test_card_keeps_an_existing_trailing_newline():
    assert render_prompt([{"role": "human", "content": "x\n"}], "card") == f"{HUM}x\n{BOT}"


def test_a_prompt_format_object_can_be_passed():
    fmt = PromptFormat("mine", "Tags in brackets.", "[S]", "[H]", "[B]", separator=" | ")
    assert render_prompt(MULTI, fmt) == "[S]S | [H]H1 | [B]B1</s> | [H]H2 | [B]"


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ([{"role": "robot", "content": "x"}], r"unknown role 'robot'.*system, human, bot"),
        ([{"role": "human", "content": "x"}, {"role": "system", "content": "s"}], "Message 1 is a system message"),
        ([{"role": "human"}], "'role' and 'content'"),
        ([{"role": "human", "content": 3}], "content must be a string"),
        ("just a string", "list of"),
    ],
)
def test_bad_conversations_raise(messages, match):
    with pytest.raises(PromptError, match=match):
        render_prompt(messages)


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(PromptError, match="Unknown prompt format 'llama2'.*codefuse, card, card-diagram"):
        render_prompt(SINGLE, "llama2")
    assert issubclass(PromptError, WorkbenchError)


def test_bad_prompt_format_fields_raise():
    with pytest.raises(PromptError, match="name"):
        PromptFormat("", "no name", "", "", "")
    with pytest.raises(PromptError, match="separator"):
        PromptFormat("x", "bad separator", "", "", "", separator=None)


# --- The chat template -------------------------------------------------------------------------


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_installed_chat_template_matches_render_prompt(tiny_tokenizer, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    rendered = tiny_tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    assert rendered == render_prompt(messages, "codefuse", add_generation_prompt)


@pytest.mark.parametrize("format", list(PROMPT_FORMATS))
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_every_format_has_a_matching_chat_template(tiny_tokenizer, format, conversation):
    messages = CONVERSATIONS[conversation]
    for add_generation_prompt in (True, False):
        rendered = tiny_tokenizer.apply_chat_template(
            messages,
            chat_template=chat_template(format),
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        assert rendered == render_prompt(messages, format, add_generation_prompt)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "robot", "content": "x"}], "Unknown role robot"),
        ([{"role": "human", "content": "x"}, {"role": "system", "content": "s"}], "only come first"),
    ],
)
def test_chat_template_rejects_what_render_prompt_rejects(tiny_tokenizer, messages, match):
    with pytest.raises(Exception, match=match):
        tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# --- The tokenizer -----------------------------------------------------------------------------


def test_tokenizer_has_the_cards_settings(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert tok.padding_side == "left"
    assert tok("Hello world")["input_ids"][0] != tok.bos_token_id  # trained without <s>
    batch = tok(["Hello", "Hello world, hello"], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long) and short[0] == tok.pad_token_id and long[0] != tok.pad_token_id
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


def test_tokenizer_loads_from_folder_or_file(tiny_model_file, tiny_tokenizer):
    from_file = load_tokenizer(tiny_model_file)
    text = render_prompt(CODE)
    assert from_file.encode(text, add_special_tokens=False) == tiny_tokenizer.encode(text, add_special_tokens=False)


def test_missing_tokenizer_raises(tmp_path):
    with pytest.raises(CheckpointError, match="No SentencePiece tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="No SentencePiece tokenizer"):
        load_tokenizer(tmp_path / "nothing.model")


def test_tokenizer_with_other_special_ids_is_refused(tmp_path):
    model_file = _train_sentencepiece(tmp_path, 350, unk_id=2, eos_id=0)
    with pytest.raises(CheckpointError, match="unk piece must be '<unk>' with id 0"):
        load_tokenizer(model_file)


def test_a_tokenizer_that_disagrees_with_sentencepiece_is_refused(tmp_path, tiny_model_file, monkeypatch):
    other = _train_sentencepiece(tmp_path, 350)
    build = prompts.tokenizer._sentencepiece_tokenizer
    monkeypatch.setattr(prompts.tokenizer, "_sentencepiece_tokenizer", lambda model_file: build(other))
    with pytest.raises(WorkbenchError, match="does not encode like SentencePiece"):
        load_tokenizer(tiny_model_file)


# --- Encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("format", list(PROMPT_FORMATS))
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_encode_prompt_matches_sentencepiece_and_round_trips(any_tokenizer, format, conversation):
    tok, model_file = any_tokenizer
    messages = CONVERSATIONS[conversation]
    text = render_prompt(messages, format)
    ids = encode_prompt(tok, messages, format)
    assert ids == sentencepiece_ids(model_file, text)
    assert tok.encode(text, add_special_tokens=False) == ids  # the tokenizer alone agrees
    decoded = tok.decode(ids)
    if text.startswith("<s>") and transformers.__version__.startswith("4."):
        # transformers 4's slow LlamaTokenizer decodes a leading special token with a space after it
        decoded = decoded.replace("<s> ", "<s>", 1)
    assert decoded == text


def test_every_eos_becomes_the_eos_id(tiny_tokenizer):
    ids = encode_prompt(tiny_tokenizer, MULTI)
    assert ids.count(2) == 1 and 1 not in ids
    assert encode_prompt(tiny_tokenizer, [{"role": "human", "content": "a</s>b"}], "raw").count(2) == 1


def test_text_after_eos_gets_no_dummy_prefix(tiny_tokenizer):
    pieces = tiny_tokenizer.convert_ids_to_tokens(encode_prompt(tiny_tokenizer, MULTI))
    after_eos = pieces[pieces.index("</s>") + 1]
    assert pieces[0].startswith("▁") and not after_eos.startswith("▁")


def test_check_context():
    check_context(4096)
    check_context(4000, 96)
    with pytest.raises(PromptError, match=r"4097 tokens.*context of 4096"):
        check_context(4097)
    with pytest.raises(PromptError, match=r"4000 tokens and 512 new tokens.*4512 > the context of 4096.*416"):
        check_context(4000, 512)
    with pytest.raises(PromptError, match="max_new_tokens"):
        check_context(10, -1)
    with pytest.raises(PromptError, match="context must be a positive"):
        check_context(10, 0, 0)


def test_encode_prompt_refuses_a_prompt_longer_than_the_context(tiny_tokenizer):
    n_tokens = len(encode_prompt(tiny_tokenizer, CODE, max_context=None))
    assert len(encode_prompt(tiny_tokenizer, CODE, max_context=n_tokens)) == n_tokens
    with pytest.raises(PromptError, match=f"{n_tokens} tokens.*context of {n_tokens - 1}"):
        encode_prompt(tiny_tokenizer, CODE, max_context=n_tokens - 1)
    long_question = [{"role": "human", "content": "hello world " * 3000}]
    with pytest.raises(PromptError, match="context of 4096"):
        encode_prompt(tiny_tokenizer, long_question)


# --- Token views -------------------------------------------------------------------------------


@pytest.mark.parametrize("format", list(PROMPT_FORMATS))
def test_token_view_places_every_token_on_the_text(any_tokenizer, format):
    tok, _ = any_tokenizer
    view = token_view(tok, CODE, format)
    text = render_prompt(CODE, format)
    assert list(view.columns) == ["id", "piece", "text", "start", "end", "part", "role", "turn"]
    assert list(view["id"]) == encode_prompt(tok, CODE, format)
    for row in view.itertuples():
        if not re.fullmatch(r"<0x[0-9A-F]{2}>", row.piece):  # a lone byte of a longer character
            assert row.text == text[row.start : row.end]
    covered = set().union(*(range(row.start, row.end) for row in view.itertuples()))
    assert covered == set(range(len(text)))
    # a piece may span two parts: the bot tag's ">" and a code fence's "`" make ">`" with the real tokenizer
    assert {kind for part in view["part"] for kind in part.split("+")} <= {"role_tag", "content", "separator", "eos"}


def test_token_view_labels_the_parts(tiny_tokenizer):
    view = token_view(tiny_tokenizer, MULTI, "card")
    eos = view[view["id"] == 2]
    assert list(eos["part"]) == ["eos"] and list(eos["text"]) == ["</s>"] and list(eos["role"]) == ["bot"]
    assert {"role_tag", "content", "separator", "eos"} <= set(view["part"])
    newline = view[view["part"] == "separator"]
    assert set(newline["text"]) == {"\n"} and set(newline["role"]) == {"human"}
    assert list(view["turn"])[-1] == len(MULTI)  # the generation prompt's bot tag


def test_token_view_of_a_string_finds_tags_and_eos(tiny_tokenizer):
    from_messages = token_view(tiny_tokenizer, MULTI)
    from_text = token_view(tiny_tokenizer, render_prompt(MULTI))
    assert list(from_text["id"]) == list(from_messages["id"])
    assert list(from_text["part"]) == list(from_messages["part"])
    assert list(from_text["role"]) == list(from_messages["role"])


def test_diff_formats(tiny_tokenizer):
    same = diff_formats(tiny_tokenizer, MULTI, "codefuse", "codefuse")
    assert same.empty and same.attrs["a_tokens"] == same.attrs["b_tokens"]
    diff = diff_formats(tiny_tokenizer, SINGLE, "codefuse", "card")
    assert len(diff) == 1
    row = diff.iloc[0]
    assert row["change"] == "insert" and row["a_text"] == "" and row["b_text"] == "\n"
    a_tokens = len(encode_prompt(tiny_tokenizer, SINGLE, "codefuse"))
    b_tokens = len(encode_prompt(tiny_tokenizer, SINGLE, "card"))
    assert diff.attrs == {"a": "codefuse", "b": "card", "a_tokens": a_tokens, "b_tokens": b_tokens}


# --- The model's real tokenizer ----------------------------------------------------------------


def test_real_role_tags_are_15_pieces_and_only_the_first_has_the_dummy_prefix(real_tokenizer):
    view = token_view(real_tokenizer, MULTI)
    tags = view[view["part"] == "role_tag"].groupby("turn")["piece"].apply(list)
    assert len(tags) == len(MULTI) + 1 and all(len(pieces) == 15 for pieces in tags)
    assert tags.iloc[0][0] == "▁<"
    assert all(pieces[0] == "<" for pieces in tags.iloc[1:])


def test_real_card_quickstart_is_39_tokens(real_tokenizer):
    ids = encode_prompt(real_tokenizer, QUICKSTART, "card")
    assert len(ids) == 39
    assert real_tokenizer.decode(ids) == f"{HUM}Please write a QuickSort program in Python\n{BOT}"


def test_real_chat_template_matches_render_prompt(real_tokenizer):
    for messages in CONVERSATIONS.values():
        rendered = real_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert rendered == render_prompt(messages)


def test_real_indentation_is_tokenized_as_sentencepiece_does(real_tokenizer):
    # The converted `tokenizers` BPE of transformers 5 gives ▁▁▁▁ + return here.
    pieces = real_tokenizer.tokenize("def f(x):\n    return x")
    assert pieces[-4:] == ["<0x0A>", "▁▁▁", "▁return", "▁x"]


def test_real_token_piece_spanning_two_parts(real_tokenizer):
    view = token_view(real_tokenizer, [{"role": "human", "content": "Hello "}])
    assert "content+role_tag" in set(view["part"])  # "▁<": the content's space and the tag's "<"


def test_public_names_are_exported():
    for name in ("render_prompt", "PROMPT_FORMATS", "load_tokenizer", "encode_prompt", "token_view",
                 "diff_formats", "check_context", "chat_template", "PromptFormat"):
        assert hasattr(workbench, name)


# --- Strips --------------------------------------------------------------------------------------

_SPAN = re.compile(r'<span title="([^"]*)" style="([^"]*)">([^<]*)</span>')


def _token_spans(page: str) -> list[dict]:
    """The spans of a page that carry a title (the token spans), with their attributes and text."""
    from html.parser import HTMLParser

    class Spans(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found, self.open = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "span" and "title" in dict(attrs):
                self.open = {**dict(attrs), "text": ""}

        def handle_data(self, data):
            if self.open is not None:
                self.open["text"] += data

        def handle_endtag(self, tag):
            if tag == "span" and self.open is not None:
                self.found.append(self.open)
                self.open = None

    parser = Spans()
    parser.feed(page)
    return parser.found


def test_token_strip_has_one_span_per_token_with_its_id_and_piece(tiny_tokenizer):
    import html

    strip = prompts.token_strip(tiny_tokenizer, MULTI, "newline")
    view = token_view(tiny_tokenizer, MULTI, "newline")
    assert strip.table.equals(view) and len(strip) == len(view)
    spans = _SPAN.findall(strip.html(legend=False))
    assert len(spans) == len(view)
    for (title, style, shown), row in zip(spans, view.itertuples()):
        title = html.unescape(title)
        assert f"id {row.id} " in title and repr(row.piece) in title and row.part in title
        shown = html.unescape(shown)
        assert shown == (row.text.replace("\n", "\u21b5\n") or row.piece)
    tag_colours = {s.split(";")[0] for (_, s, _), part in zip(spans, view["part"]) if part == "role_tag"}
    content_colours = {s.split(";")[0] for (_, s, _), part in zip(spans, view["part"]) if part == "content"}
    assert tag_colours and content_colours and not tag_colours & content_colours  # tags shaded apart


def test_strip_html_is_self_contained_and_shows_the_prompt(real_tokenizer):
    import html

    strip = prompts.token_strip(real_tokenizer, CODE)
    for shown in (strip, prompts.compare_formats(real_tokenizer, CODE, "codefuse", "card")):
        page = shown._repr_html_()
        assert "<script" not in page and "http" not in page
        assert "<table" not in page  # notebook 02's token table stays the cell's one table
    text = "".join(html.unescape(t) for _, _, t in _SPAN.findall(strip.html())).replace("\u21b5", "")
    expected = render_prompt(CODE)
    for emoji in ("🙂", "👍"):  # byte-fallback pieces show their bytes
        expected = expected.replace(emoji, "".join(f"\\x{b:02x}" for b in emoji.encode()))
    assert text == expected


def test_compare_formats_outlines_exactly_the_differing_tokens(tiny_tokenizer):
    comparison = prompts.compare_formats(tiny_tokenizer, MULTI, "codefuse", "newline")
    diff = diff_formats(tiny_tokenizer, MULTI, "codefuse", "newline")
    assert comparison.diff.equals(diff) and len(diff) > 0
    page = comparison._repr_html_()
    marks_a = [i for row in diff.itertuples() for i in range(row.a_start, row.a_end)]
    marks_b = [i for row in diff.itertuples() for i in range(row.b_start, row.b_end)]
    assert comparison.a.html(marks_a, legend=False) in page and comparison.b.html(marks_b, legend=False) in page
    marked_b = [i for i, (_, style, _) in enumerate(_SPAN.findall(page)[len(comparison.a):]) if "outline" in style]
    assert marked_b == [i for row in diff.itertuples() for i in range(row.b_start, row.b_end)]
    same = prompts.compare_formats(tiny_tokenizer, MULTI, "codefuse", "codefuse")
    assert len(same.diff) == 0 and "outline: 2px" not in "".join(s for _, s, _ in _SPAN.findall(same.html()))


def test_a_strip_survives_the_reports_html_export(tiny_tokenizer, tmp_path):
    import nbformat

    from workbench.report.html import render_html

    strip = prompts.token_strip(tiny_tokenizer, SINGLE)
    cell = nbformat.v4.new_code_cell("strip", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": strip._repr_html_(), "text/plain": "<TokenStrip>"})])
    render_html(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "page.html", "strip")
    page = (tmp_path / "page.html").read_text()
    spans = _token_spans(page)
    assert [s["title"] for s in spans] == [s["title"] for s in _token_spans(strip.html())]
    assert len(spans) == len(strip) and "<script" not in page and "cdn" not in page.lower()
