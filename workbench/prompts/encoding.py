"""Encoding a rendered conversation into token ids, within the model's context.

The text is encoded chunk by chunk between special tokens, so that every `</s>` becomes the eos id
whatever the tokenizer thinks of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PromptError, WorkbenchError
from .formats import EOS_TEXT, Message, PromptFormat, render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_CONTEXT_TOKENS = 4096  # the card's input length ("4K")


# --- Encoding ----------------------------------------------------------------------------------


def check_context(n_prompt_tokens: int, max_new_tokens: int = 0, context: int = DEFAULT_CONTEXT_TOKENS) -> None:
    """Raise PromptError unless the prompt plus the new tokens fit the context."""
    for name, value in (("n_prompt_tokens", n_prompt_tokens), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PromptError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
        raise PromptError(f"context must be a positive integer, got {context!r}")
    total = n_prompt_tokens + max_new_tokens
    if total > context:
        raise PromptError(
            f"The prompt has {n_prompt_tokens} tokens and {max_new_tokens} new tokens are asked for: "
            f"{total} > the context of {context} tokens. Shorten the prompt by at least {total - context} "
            "tokens or ask for fewer new tokens."
        )


@dataclass(frozen=True)
class Chunk:
    start: int  # character offset in the prompt
    text: str
    ids: tuple[int, ...]
    special: bool  # a special token's text (</s>, <s>, <unk>), encoded as its id
    at_start: bool  # first text of the prompt: the tokenizer put SentencePiece's dummy prefix on it


def encode_chunks(tokenizer: PreTrainedTokenizerBase, text: str) -> list[Chunk]:
    """The text split at special tokens' texts, each part encoded, as the whole text was in training.

    A special token's text becomes its id whatever the tokenizer's settings. Only the text at the
    very start gets SentencePiece's dummy prefix (▁): the text after a special token is encoded as
    if the special token were still in front of it, then the special token is dropped.
    """
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    special_ids[EOS_TEXT] = tokenizer.eos_token_id
    pattern = re.compile("|".join(re.escape(token) for token in sorted(special_ids, key=len, reverse=True)))
    chunks: list[Chunk] = []
    pos = 0
    for match in [*pattern.finditer(text), None]:
        end = match.start() if match else len(text)
        if end > pos:
            ids = _encode_text(tokenizer, text[pos:end], at_start=pos == 0)
            chunks.append(Chunk(pos, text[pos:end], ids, special=False, at_start=pos == 0))
        if match:
            ids = (special_ids[match.group()],)
            chunks.append(Chunk(match.start(), match.group(), ids, special=True, at_start=False))
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
    ids = [i for chunk in encode_chunks(tokenizer, text) for i in chunk.ids]
    if max_context is not None:
        check_context(len(ids), 0, max_context)
    return ids


_FILLER = '''def merge_sort(items):
    """Sort a list with merge sort and return a new list."""
    if len(items) <= 1:
        return list(items)
    middle = len(items) // 2
    left, right = merge_sort(items[:middle]), merge_sort(items[middle:])
    merged = []
    while left and right:
        merged.append(left.pop(0) if left[0] <= right[0] else right.pop(0))
    return merged + left + right
'''


def prompt_ids_of_length(tokenizer, n: int) -> list[int]:
    """Exactly `n` token ids of ordinary code, for timing prompts of a given length."""
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(_FILLER, add_special_tokens=False)
    return ids[:n]
