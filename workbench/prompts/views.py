"""Token views: each token placed back on the text by its character offsets, and format diffs.
"""

from __future__ import annotations

import difflib
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
