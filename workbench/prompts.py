"""How a conversation becomes the model's input: prompt formats, rendering, encoding, token views.

CodeFuse-CodeLlama-34B was trained (codefuse-ai's MFTCoder) on turns written back to back, each a
role tag and its text, every bot turn closed by `</s>`, encoded without `<s>`. The other formats
in PROMPT_FORMATS are variants seen in the wild, kept so that a notebook can show, token by token,
how they differ from what the model saw.

One mechanism serves rendering, encoding and the token view: a conversation renders to labelled
segments (role tag, content, separator, eos); the text is encoded chunk by chunk between special
tokens, so that every `</s>` becomes the eos id whatever the tokenizer thinks of it; each token is
then placed back on the text by its character offsets.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .errors import CheckpointError, PromptError, WorkbenchError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_CONTEXT_TOKENS = 4096  # the card's input length ("4K")
EOS_TEXT = "</s>"
ROLES = ("system", "human", "bot")
ROLE_ALIASES = {"user": "human", "assistant": "bot"}  # the names most chat tools use

Message = Mapping[str, str]


# --- Formats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFormat:
    """How turns are written: a tag before each turn's text, and what goes between and after turns."""

    name: str
    description: str  # one sentence for a reader choosing or comparing formats
    system_tag: str
    human_tag: str
    bot_tag: str
    separator: str = ""  # between two turns, and before the bot tag of the generation prompt
    turn_end: str = ""  # after every turn (after the bot's </s>), the last one included
    eos_after_bot: bool = True  # every bot turn is closed with </s>
    human_newline: bool = False  # the human text gets a trailing "\n" when it has none

    def __post_init__(self):
        for field in ("name", "description", "system_tag", "human_tag", "bot_tag", "separator", "turn_end"):
            if not isinstance(getattr(self, field), str):
                raise PromptError(f"PromptFormat.{field} must be a string, got {getattr(self, field)!r}")
        if not self.name:
            raise PromptError("PromptFormat.name must not be empty")

    def tag(self, role: str) -> str:
        """The tag written before a turn of `role` (one of ROLES)."""
        return {"system": self.system_tag, "human": self.human_tag, "bot": self.bot_tag}[role]


def _codefuse_tag(role: str) -> str:
    return f"<|role_start|>{role}<|role_end|>"


def _mftcoder_v2_tag(role: str) -> str:
    return f"<s>{role}\n"


_CODEFUSE_TAGS = {f"{role}_tag": _codefuse_tag(role) for role in ROLES}

PROMPT_FORMATS: dict[str, PromptFormat] = {
    fmt.name: fmt
    for fmt in (
        PromptFormat(
            "codefuse",
            "As trained (MFTCoder): turns back to back, every bot turn closed by </s>, no <s>. Use this one.",
            **_CODEFUSE_TAGS,
        ),
        PromptFormat(
            "card",
            "The card's quick-start: like codefuse, but the human text gets a trailing newline.",
            **_CODEFUSE_TAGS,
            human_newline=True,
        ),
        PromptFormat(
            "card-diagram",
            "The card's format diagram: like codefuse, with a newline after every turn.",
            **_CODEFUSE_TAGS,
            turn_end="\n",
        ),
        PromptFormat(
            "newline",
            "The popular community template: like codefuse, with a newline between turns.",
            **_CODEFUSE_TAGS,
            separator="\n",
        ),
        PromptFormat(
            "mftcoder-v2",
            "Later MFTCoder releases (<s>human\\n ... <s>bot\\n); this model never saw it.",
            **{f"{role}_tag": _mftcoder_v2_tag(role) for role in ROLES},
            turn_end="\n",
        ),
        PromptFormat("raw", "No template: the turns' texts only, back to back.", "", "", "", eos_after_bot=False),
    )
}


def get_format(format: str | PromptFormat) -> PromptFormat:
    """The PromptFormat named `format` (a PromptFormat passes through)."""
    if isinstance(format, PromptFormat):
        return format
    try:
        return PROMPT_FORMATS[format]
    except (KeyError, TypeError):
        known = ", ".join(PROMPT_FORMATS)
        raise PromptError(f"Unknown prompt format {format!r}; known formats: {known}") from None


# --- Rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    kind: str  # role_tag, content, separator (text the format adds) or eos
    text: str
    role: str  # the role of the turn it belongs to (a separator belongs to the turn before it)
    turn: int  # index of that turn; the generation prompt's bot tag has index len(messages)


def _normalize_messages(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(role, content) pairs with aliases resolved; raises PromptError on anything else."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise PromptError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise PromptError(
            "The conversation is empty: pass at least one message, e.g. {'role': 'human', 'content': ...}"
        )
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"Message {i} must be a dict with 'role' and 'content' keys, got {message!r}")
        role = ROLE_ALIASES.get(message["role"], message["role"])
        if role not in ROLES:
            raise PromptError(
                f"Message {i} has unknown role {message['role']!r}; allowed roles: {', '.join(ROLES)} "
                f"(or the aliases {', '.join(f'{a}={r}' for a, r in ROLE_ALIASES.items())})"
            )
        if role == "system" and i > 0:
            raise PromptError(f"Message {i} is a system message; a system message may only come first")
        if not isinstance(message["content"], str):
            raise PromptError(f"Message {i} content must be a string, got {type(message['content']).__name__}")
        turns.append((role, message["content"]))
    return turns


def _render_segments(
    messages: Sequence[Message], format: str | PromptFormat, add_generation_prompt: bool
) -> list[_Segment]:
    fmt = get_format(format)
    turns = _normalize_messages(messages)
    segments: list[_Segment] = []

    def add(kind: str, text: str, role: str, turn: int) -> None:
        if text:
            segments.append(_Segment(kind, text, role, turn))

    for turn, (role, content) in enumerate(turns):
        if turn > 0:
            add("separator", fmt.separator, turns[turn - 1][0], turn - 1)
        add("role_tag", fmt.tag(role), role, turn)
        add("content", content, role, turn)
        if role == "human" and fmt.human_newline and not content.endswith("\n"):
            add("separator", "\n", role, turn)
        if role == "bot" and fmt.eos_after_bot:
            add("eos", EOS_TEXT, role, turn)
        add("separator", fmt.turn_end, role, turn)
    if add_generation_prompt:
        add("separator", fmt.separator, turns[-1][0], len(turns) - 1)
        add("role_tag", fmt.bot_tag, "bot", len(turns))
    return segments


def render_prompt(
    messages: Sequence[Message], format: str | PromptFormat = "codefuse", add_generation_prompt: bool = True
) -> str:
    """The prompt text of a conversation in a format of PROMPT_FORMATS.

    messages: {"role": ..., "content": ...} dicts; roles system (first only), human, bot, or the
    aliases user and assistant. With add_generation_prompt the text ends with the bot tag, asking
    the model for the next bot turn.
    """
    return "".join(s.text for s in _render_segments(messages, format, add_generation_prompt))


# The chat template's logic; chat_template() puts the format's settings in front of it.
_CHAT_TEMPLATE_BODY = r"""
{%- if not messages -%}{{ raise_exception('The conversation is empty.') }}{%- endif -%}
{%- for message in messages -%}
    {%- set role = aliases.get(message['role'], message['role']) -%}
    {%- if role not in tags -%}
        {{- raise_exception('Unknown role ' ~ message['role'] ~
                            '; allowed roles: system, human, bot (or user, assistant)') -}}
    {%- endif -%}
    {%- if role == 'system' and not loop.first -%}
        {{- raise_exception('A system message may only come first.') -}}
    {%- endif -%}
    {%- if not loop.first -%}{{ separator }}{%- endif -%}
    {{- tags[role] ~ message['content'] -}}
    {%- if human_newline and role == 'human' and message['content'][-1:] != '\n' -%}{{ '\n' }}{%- endif -%}
    {%- if eos_after_bot and role == 'bot' -%}{{ '</s>' }}{%- endif -%}
    {{- turn_end -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ separator ~ tags['bot'] }}{%- endif -%}
"""


def chat_template(format: str | PromptFormat = "codefuse") -> str:
    """A Jinja chat template that renders exactly as render_prompt does, for apply_chat_template."""
    fmt = get_format(format)
    settings = {
        "tags": {role: fmt.tag(role) for role in ROLES},
        "aliases": ROLE_ALIASES,
        "separator": fmt.separator,
        "turn_end": fmt.turn_end,
        "eos_after_bot": fmt.eos_after_bot,
        "human_newline": fmt.human_newline,
    }
    # JSON values are Jinja literals too (strings with their escapes, dicts, true/false)
    header = "".join(f"{{%- set {name} = {json.dumps(value)} -%}}\n" for name, value in settings.items())
    return f"{{#- CodeFuse Workbench prompt format {fmt.name} -#}}\n" + header + _CHAT_TEMPLATE_BODY.strip()


# --- The tokenizer -----------------------------------------------------------------------------

# Special pieces the card's settings assume: (piece, id).
_SPECIAL_PIECES = {"unk": ("<unk>", 0), "bos": ("<s>", 1), "eos": ("</s>", 2)}
# Exercises what tokenizer wrappers get wrong: the dummy prefix, runs of spaces (indentation),
# byte fallback, digits.
_SELF_CHECK_TEXT = "<|role_start|>human<|role_end|>def f(x):\n    return x  # 你好 🙂 2024\n"


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The card's tokenizer: SentencePiece, legacy=False, left padding, pad = <unk>, no <s> added.

    path: a model folder holding tokenizer.model, or a tokenizer.model file. Only the
    SentencePiece model is read; the card's settings replace whatever tokenizer_config.json says.
    The codefuse chat template is installed, and the result is checked against SentencePiece.
    """
    model_file = _find_tokenizer_model(Path(path))
    _check_special_pieces(model_file)
    tokenizer = _sentencepiece_tokenizer(model_file)
    tokenizer.chat_template = chat_template("codefuse")
    _check_against_sentencepiece(tokenizer, model_file)
    return tokenizer


def _find_tokenizer_model(path: Path) -> Path:
    model_file = path / "tokenizer.model" if path.is_dir() else path
    if not model_file.is_file():
        raise CheckpointError(
            f"No SentencePiece tokenizer at {model_file}: pass a model folder holding tokenizer.model, "
            "or the tokenizer.model file itself"
        )
    return model_file


def _check_special_pieces(model_file: Path) -> None:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    found = {"unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
    for name, (piece, expected_id) in _SPECIAL_PIECES.items():
        if found[name] != expected_id or sp.id_to_piece(expected_id) != piece:
            raise CheckpointError(
                f"{model_file}: the {name} piece must be {piece!r} with id {expected_id} (Llama's layout, which "
                f"the card's settings assume); this model has {name} id {found[name]}"
            )


def _sentencepiece_tokenizer(model_file: Path) -> PreTrainedTokenizerBase:
    """A transformers tokenizer that runs SentencePiece itself, as the card's slow tokenizer does.

    The one place that depends on the transformers version. 4.x ships it as the slow
    LlamaTokenizer. In 5.x LlamaTokenizer is a converted `tokenizers` BPE that splits runs of spaces
    differently ("\\n    return" gives ▁▁▁▁ + return, SentencePiece ▁▁▁ + ▁return), which is not
    what the model saw, so 5.x gets _sentencepiece_llama_class() instead.
    """
    import transformers

    settings = dict(
        vocab_file=str(model_file),
        legacy=False,  # no dummy prefix after a special token, e.g. after </s>
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",  # Llama has no pad piece; the card pads with <unk> (id 0)
        padding_side="left",  # generation appends on the right
        add_bos_token=False,  # trained without <s>, so a plain tokenizer(text) matches training
        add_eos_token=False,
        clean_up_tokenization_spaces=False,  # decode gives back the exact text
    )
    if int(transformers.__version__.split(".")[0]) < 5:
        return transformers.LlamaTokenizer(**settings)
    return _sentencepiece_llama_class()(**settings)


@functools.cache
def _sentencepiece_llama_class() -> type:
    """transformers 5's SentencePiece backend, completed with what Llama's slow tokenizer did.

    Built on first use: transformers 4 has no SentencePieceBackend to derive from.
    """
    from transformers.tokenization_utils_sentencepiece import SPIECE_UNDERLINE, SentencePieceBackend

    class SentencePieceLlamaTokenizer(SentencePieceBackend):
        def tokenize(self, text, **kwargs):
            # With legacy=False the backend turns SentencePiece's dummy prefix off, so that text after
            # a special token gets none; the prefix at the very start of the text is ours to add.
            if not text:
                return []
            tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
            if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
                tokens = tokens[1:]  # the text starts with a special token: no prefix in front of it
            return tokens

        def convert_tokens_to_string(self, tokens):
            # SentencePiece decodes the pieces (▁ as a space, <0x..> bytes); special tokens stay as text.
            specials = set(self.all_special_tokens)
            parts: list[str] = []
            run: list[str] = []
            for token in tokens:
                if token in specials:
                    parts += [self.sp_model.decode_pieces(run), token]
                    run = []
                else:
                    run.append(token)
            text = "".join(parts) + self.sp_model.decode_pieces(run)
            if tokens and tokens[0].startswith(SPIECE_UNDERLINE):
                text = text[1:]  # the dummy prefix tokenize added
            return text

    return SentencePieceLlamaTokenizer


def _check_against_sentencepiece(tokenizer: PreTrainedTokenizerBase, model_file: Path) -> None:
    import sentencepiece
    import transformers

    expected = sentencepiece.SentencePieceProcessor(model_file=str(model_file)).encode(_SELF_CHECK_TEXT)
    got = tokenizer.encode(_SELF_CHECK_TEXT, add_special_tokens=False)
    if got != expected:
        raise WorkbenchError(
            f"The tokenizer built from {model_file} with transformers {transformers.__version__} does not "
            f"encode like SentencePiece: {_SELF_CHECK_TEXT!r} gave {got}, SentencePiece {expected}. "
            "Update workbench.prompts._sentencepiece_tokenizer for this transformers version."
        )


# --- Encoding ----------------------------------------------------------------------------------


def check_context(n_prompt_tokens: int, max_new_tokens: int = 0, context: int = DEFAULT_CONTEXT_TOKENS) -> None:
    """Raise PromptError unless the prompt plus the new tokens fit the context."""
    for name, value in (("n_prompt_tokens", n_prompt_tokens), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or value < 0:
            raise PromptError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(context, int) or context <= 0:
        raise PromptError(f"context must be a positive integer, got {context!r}")
    total = n_prompt_tokens + max_new_tokens
    if total > context:
        raise PromptError(
            f"The prompt has {n_prompt_tokens} tokens and {max_new_tokens} new tokens are asked for: "
            f"{total} > the context of {context} tokens. Shorten the prompt by at least {total - context} "
            "tokens or ask for fewer new tokens."
        )


@dataclass(frozen=True)
class _Chunk:
    start: int  # character offset in the prompt
    text: str
    ids: tuple[int, ...]
    special: bool  # a special token's text (</s>, <s>, <unk>), encoded as its id
    at_start: bool  # first text of the prompt: the tokenizer put SentencePiece's dummy prefix on it


def _encode_chunks(tokenizer: PreTrainedTokenizerBase, text: str) -> list[_Chunk]:
    """The text split at special tokens' texts, each part encoded, as the whole text was in training.

    A special token's text becomes its id whatever the tokenizer's settings. Only the text at the
    very start gets SentencePiece's dummy prefix (▁): the text after a special token is encoded as
    if the special token were still in front of it, then the special token is dropped.
    """
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    special_ids[EOS_TEXT] = tokenizer.eos_token_id
    pattern = re.compile("|".join(re.escape(token) for token in sorted(special_ids, key=len, reverse=True)))
    chunks: list[_Chunk] = []
    pos = 0
    for match in [*pattern.finditer(text), None]:
        end = match.start() if match else len(text)
        if end > pos:
            ids = _encode_text(tokenizer, text[pos:end], at_start=pos == 0)
            chunks.append(_Chunk(pos, text[pos:end], ids, special=False, at_start=pos == 0))
        if match:
            ids = (special_ids[match.group()],)
            chunks.append(_Chunk(match.start(), match.group(), ids, special=True, at_start=False))
            pos = match.end()
    return chunks


def _encode_text(tokenizer: PreTrainedTokenizerBase, text: str, at_start: bool) -> tuple[int, ...]:
    if at_start:
        return tuple(tokenizer.encode(text, add_special_tokens=False))
    ids = tokenizer.encode(tokenizer.eos_token + text, add_special_tokens=False)
    if not ids or ids[0] != tokenizer.eos_token_id:
        raise WorkbenchError(
            f"The tokenizer does not read {tokenizer.eos_token!r} as its eos token (it gave {ids[:3]}...); "
            "load it with workbench.load_tokenizer"
        )
    return tuple(ids[1:])


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    format: str | PromptFormat = "codefuse",
    add_generation_prompt: bool = True,
    max_context: int | None = DEFAULT_CONTEXT_TOKENS,
) -> list[int]:
    """The token ids of render_prompt(...), without <s>, every </s> as the eos id.

    Raises PromptError when the prompt is longer than max_context tokens (None: no check).
    """
    text = render_prompt(messages, format, add_generation_prompt)
    ids = [i for chunk in _encode_chunks(tokenizer, text) for i in chunk.ids]
    if max_context is not None:
        check_context(len(ids), 0, max_context)
    return ids


# --- Views -------------------------------------------------------------------------------------

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_view(
    tokenizer: PreTrainedTokenizerBase,
    messages_or_text: Sequence[Message] | str,
    format: str | PromptFormat = "codefuse",
    add_generation_prompt: bool = True,
) -> pd.DataFrame:
    """One row per token of the prompt: what it is, which text it covers and where it comes from.

    Columns: id, piece, text (what the token covers; a lone byte of a longer character shows as
    \\xNN), start and end (character offsets in the prompt), part (role_tag, content, separator or
    eos; joined with "+" for a token spanning two parts), role and turn. A string is taken as an
    already rendered prompt: the format's role tags and </s> are found in it, the rest is content.
    """
    if isinstance(messages_or_text, str):
        text = messages_or_text
        segments = _segments_of_text(text, get_format(format))
    else:
        segments = _render_segments(messages_or_text, format, add_generation_prompt)
        text = "".join(s.text for s in segments)
    owner = []  # the segment index of every character
    for index, segment in enumerate(segments):
        owner += [index] * len(segment.text)

    rows = []
    for chunk in _encode_chunks(tokenizer, text):
        for token_id, (start, end, covered) in zip(chunk.ids, _token_spans(tokenizer, chunk)):
            touched = sorted({owner[c] for c in range(start, end)} or {owner[min(start, len(owner) - 1)]})
            first = segments[touched[0]]
            rows.append(
                {
                    "id": token_id,
                    "piece": tokenizer.convert_ids_to_tokens(token_id),
                    "text": covered,
                    "start": start,
                    "end": end,
                    "part": "+".join(dict.fromkeys(segments[i].kind for i in touched)),
                    "role": first.role,
                    "turn": first.turn,
                }
            )
    return pd.DataFrame(rows, columns=["id", "piece", "text", "start", "end", "part", "role", "turn"])


def _segments_of_text(text: str, fmt: PromptFormat) -> list[_Segment]:
    tag_roles = {fmt.tag(role): role for role in ROLES if fmt.tag(role)}
    markers = sorted([*tag_roles, EOS_TEXT], key=len, reverse=True)
    segments: list[_Segment] = []
    role, turn, pos = "", -1, 0
    for match in [*re.finditer("|".join(map(re.escape, markers)), text), None]:
        end = match.start() if match else len(text)
        if end > pos:
            segments.append(_Segment("content", text[pos:end], role, max(turn, 0)))
        if match is None:
            break
        if match.group() in tag_roles:
            role, turn = tag_roles[match.group()], turn + 1
            segments.append(_Segment("role_tag", match.group(), role, turn))
        else:
            segments.append(_Segment("eos", match.group(), role, max(turn, 0)))
        pos = match.end()
    return segments


def _token_spans(tokenizer: PreTrainedTokenizerBase, chunk: _Chunk) -> list[tuple[int, int, str]]:
    """(start, end, covered text) of each token of a chunk, in characters of the whole prompt."""
    if chunk.special:
        return [(chunk.start, chunk.start + len(chunk.text), chunk.text)]
    pieces = tokenizer.convert_ids_to_tokens(list(chunk.ids))
    piece_bytes = [_piece_bytes(piece) for piece in pieces]
    data = chunk.text.encode("utf-8")
    joined = b"".join(piece_bytes)
    # SentencePiece's dummy prefix: a space in front of the first piece that covers no text
    cursor = -1 if chunk.at_start and joined == b" " + data else 0
    if joined[-cursor:] != data:
        raise WorkbenchError(
            f"Cannot place the tokens {pieces[:8]}... on the text {chunk.text[:40]!r}: the tokenizer changes the "
            "text it encodes (a normalization), which Llama's SentencePiece model never does"
        )
    char_at = [index for index, char in enumerate(chunk.text) for _ in char.encode("utf-8")]  # of every byte
    spans = []
    for piece in piece_bytes:
        begin, cursor = max(cursor, 0), cursor + len(piece)
        start = char_at[begin] if begin < len(data) else len(chunk.text)
        end = char_at[cursor - 1] + 1 if cursor > begin else start  # a partial character counts whole
        covered = data[begin:cursor].decode("utf-8", errors="backslashreplace")
        spans.append((chunk.start + start, chunk.start + end, covered))
    return spans


def _piece_bytes(piece: str) -> bytes:
    byte = _BYTE_PIECE.fullmatch(piece)
    return bytes([int(byte.group(1), 16)]) if byte else piece.replace("▁", " ").encode("utf-8")


def diff_formats(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    a: str | PromptFormat,
    b: str | PromptFormat,
    add_generation_prompt: bool = True,
) -> pd.DataFrame:
    """Where the token sequences of two formats differ: one row per differing stretch.

    Columns: change (replace, insert or delete, read as "to turn a into b"), a_start, a_end,
    b_start, b_end (token positions), a_pieces, b_pieces, a_text, b_text. No rows: the same tokens.
    attrs holds both formats' names and token counts.
    """
    view_a = token_view(tokenizer, messages, a, add_generation_prompt)
    view_b = token_view(tokenizer, messages, b, add_generation_prompt)
    matcher = difflib.SequenceMatcher(a=list(view_a["id"]), b=list(view_b["id"]), autojunk=False)
    rows = [
        {
            "change": change,
            "a_start": a0,
            "a_end": a1,
            "b_start": b0,
            "b_end": b1,
            "a_pieces": list(view_a["piece"][a0:a1]),
            "b_pieces": list(view_b["piece"][b0:b1]),
            "a_text": "".join(view_a["text"][a0:a1]),
            "b_text": "".join(view_b["text"][b0:b1]),
        }
        for change, a0, a1, b0, b1 in matcher.get_opcodes()
        if change != "equal"
    ]
    columns = ["change", "a_start", "a_end", "b_start", "b_end", "a_pieces", "b_pieces", "a_text", "b_text"]
    diff = pd.DataFrame(rows, columns=columns)
    diff.attrs.update(a=get_format(a).name, b=get_format(b).name, a_tokens=len(view_a), b_tokens=len(view_b))
    return diff
