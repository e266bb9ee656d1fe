"""Token views: each token placed back on the text by its character offsets, and format diffs,
as tables (`token_view`, `diff_formats`) and as strips of coloured spans (`token_strip`,
`compare_formats`) that a notebook or a rendered report shows as they are: plain HTML with inline
styles, no scripts.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import WorkbenchError
from .encoding import Chunk, encode_chunks
from .formats import EOS_TEXT, ROLES, Message, PromptFormat, Segment, get_format, render_segments

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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
        segments = render_segments(messages_or_text, format, add_generation_prompt)
        text = "".join(s.text for s in segments)
    owner = []  # the segment index of every character
    for index, segment in enumerate(segments):
        owner += [index] * len(segment.text)

    rows = []
    for chunk in encode_chunks(tokenizer, text):
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


def _segments_of_text(text: str, fmt: PromptFormat) -> list[Segment]:
    tag_roles = {fmt.tag(role): role for role in ROLES if fmt.tag(role)}
    markers = sorted([*tag_roles, EOS_TEXT], key=len, reverse=True)
    segments: list[Segment] = []
    role, turn, pos = "", -1, 0
    for match in [*re.finditer("|".join(map(re.escape, markers)), text), None]:
        end = match.start() if match else len(text)
        if end > pos:
            segments.append(Segment("content", text[pos:end], role, max(turn, 0)))
        if match is None:
            break
        if match.group() in tag_roles:
            role, turn = tag_roles[match.group()], turn + 1
            segments.append(Segment("role_tag", match.group(), role, turn))
        else:
            segments.append(Segment("eos", match.group(), role, max(turn, 0)))
        pos = match.end()
    return segments


def _token_spans(tokenizer: PreTrainedTokenizerBase, chunk: Chunk) -> list[tuple[int, int, str]]:
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
    return _diff_table(view_a, view_b, get_format(a).name, get_format(b).name)


def _differing_stretches(view_a: pd.DataFrame, view_b: pd.DataFrame) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes over the two token id sequences, the equal stretches left out."""
    matcher = difflib.SequenceMatcher(a=list(view_a["id"]), b=list(view_b["id"]), autojunk=False)
    return [op for op in matcher.get_opcodes() if op[0] != "equal"]


def _diff_table(view_a: pd.DataFrame, view_b: pd.DataFrame, name_a: str, name_b: str) -> pd.DataFrame:
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
        for change, a0, a1, b0, b1 in _differing_stretches(view_a, view_b)
    ]
    columns = ["change", "a_start", "a_end", "b_start", "b_end", "a_pieces", "b_pieces", "a_text", "b_text"]
    diff = pd.DataFrame(rows, columns=columns)
    diff.attrs.update(a=name_a, b=name_b, a_tokens=len(view_a), b_tokens=len(view_b))
    return diff


# --- Strips ------------------------------------------------------------------------------------

# Neighbouring pieces alternate colours so that every boundary shows. Content gets pastel hues;
# what the format adds gets its own families: role tags greys, separators yellows, </s> reds.
_CONTENT_COLOURS = ("#cfe3ff", "#ffe2bf", "#d5f0cf", "#f5d3ea", "#e3dbff", "#cdeeee")
_PART_COLOURS = {"role_tag": ("#d4d4d4", "#b9b9b9"), "separator": ("#fbe38e", "#f5cf4f"),
                 "eos": ("#f7a8a8", "#ee8080")}
_PART_NAMES = {"role_tag": "role tag", "content": "content", "separator": "the format's own text", "eos": "</s>"}
_STRIP_STYLE = ("font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; "
                "line-height: 2.1; white-space: pre-wrap; overflow-wrap: anywhere")
_DIFF_STYLE = "outline: 2px solid #c62828; outline-offset: -2px"


class TokenStrip:
    """A prompt's tokens as a strip of coloured spans, one per token: role tags shaded apart from
    content, each token's id and piece on hover. Jupyter shows it as HTML; `table` is the
    token_view table behind it, and `html()` the markup, for a report or a file."""

    def __init__(self, table: pd.DataFrame, title: str = ""):
        self.table = table
        self.title = title

    def html(self, highlight: Sequence[int] = (), legend: bool = True) -> str:
        """The strip as HTML; the tokens at the positions in `highlight` are outlined."""
        marked = set(highlight)
        spans = [_token_span(row, position, position in marked)
                 for position, row in enumerate(self.table.itertuples(index=False))]
        head = f"<div style=\"font-weight: 600; margin: .2em 0\">{html.escape(self.title)}</div>" if self.title else ""
        key = _legend(bool(marked)) if legend else ""
        return f"<div>{head}{key}<div style=\"{_STRIP_STYLE}\">{''.join(spans)}</div></div>"

    def _repr_html_(self) -> str:
        return self.html()

    def __len__(self) -> int:
        return len(self.table)


def _token_span(row, position: int, differs: bool) -> str:
    shades = _PART_COLOURS.get(row.part.split("+")[0], _CONTENT_COLOURS)
    style = f"background: {shades[position % len(shades)]}; border-radius: 2px; padding: 1px 0"
    shown = row.text.replace("\n", "\u21b5\n")  # a visible mark where a token holds a newline
    if not shown:  # a token that covers no text of its own: SentencePiece's dummy prefix (▁)
        shown, style = row.piece, style + "; color: #777"
    if _BYTE_PIECE.fullmatch(row.piece):
        style += "; font-style: italic; color: #555"
    if differs:
        style += f"; {_DIFF_STYLE}"
    hover = f"#{position} id {row.id} piece {row.piece!r} | {row.part}, {row.role or 'no role'}"
    return f'<span title="{html.escape(hover)}" style="{style}">{html.escape(shown)}</span>'


def _legend(with_diff: bool) -> str:
    items = [(name, (_PART_COLOURS.get(part) or _CONTENT_COLOURS)[0], "") for part, name in _PART_NAMES.items()]
    if with_diff:
        items.append(("differs from the other format", "#ffffff", f"; {_DIFF_STYLE}"))
    chips = "".join(f'<span style="background: {colour}; padding: 0 .4em; margin-right: .6em; border-radius: 2px'
                    f'{extra}">{html.escape(name)}</span>' for name, colour, extra in items)
    return f'<div style="font-size: 12px; margin: .2em 0 .4em">{chips}<span style="color: #666">hover a token ' \
           f"for its id and piece</span></div>"


def token_strip(
    tokenizer: PreTrainedTokenizerBase,
    messages_or_text: Sequence[Message] | str,
    format: str | PromptFormat = "codefuse",
    add_generation_prompt: bool = True,
) -> TokenStrip:
    """`token_view` drawn as the text it encodes, one coloured span per token (see TokenStrip)."""
    table = token_view(tokenizer, messages_or_text, format, add_generation_prompt)
    return TokenStrip(table, f"{get_format(format).name}: {len(table)} tokens")


class FormatComparison:
    """Two formats' strips side by side, the stretches of tokens that differ outlined; `diff` is
    diff_formats' table of those stretches."""

    def __init__(self, a: TokenStrip, b: TokenStrip, diff: pd.DataFrame):
        self.a, self.b, self.diff = a, b, diff

    def html(self) -> str:
        marks_a = [i for row in self.diff.itertuples() for i in range(row.a_start, row.a_end)]
        marks_b = [i for row in self.diff.itertuples() for i in range(row.b_start, row.b_end)]
        column = "flex: 1 1 0; min-width: 0"
        return (f"<div>{_legend(True)}<div style=\"display: flex; gap: 1.5em; align-items: flex-start\">"
                f"<div style=\"{column}\">{self.a.html(marks_a, legend=False)}</div>"
                f"<div style=\"{column}\">{self.b.html(marks_b, legend=False)}</div></div>"
                f"<div style=\"font-size: 12px; color: #666\">{len(self.diff)} differing stretch(es)</div></div>")

    def _repr_html_(self) -> str:
        return self.html()


def compare_formats(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    a: str | PromptFormat,
    b: str | PromptFormat,
    add_generation_prompt: bool = True,
) -> FormatComparison:
    """The conversation in formats `a` and `b`, strips side by side, where their tokens differ outlined."""
    strip_a = token_strip(tokenizer, messages, a, add_generation_prompt)
    strip_b = token_strip(tokenizer, messages, b, add_generation_prompt)
    diff = _diff_table(strip_a.table, strip_b.table, get_format(a).name, get_format(b).name)
    return FormatComparison(strip_a, strip_b, diff)
