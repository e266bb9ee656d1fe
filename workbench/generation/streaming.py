"""Streaming new text while tokens are generated: the workbench's `on_token` callback, any
transformers streamer (TextStreamer, TextIteratorStreamer, ...), or both at once.

Every streamer follows transformers' protocol: `put(ids)` first with the prompt, then with each
new token, and `end()` once generation is over.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError

REPLACEMENT = "\ufffd"  # what decoding gives for half of a multi-byte character


class IncrementalDecoder:
    """The text each new token adds, decoding a short window of ids instead of the whole answer.

    The window runs from the last point where the text was complete to the newest token, so the
    work per token stays constant however long the answer grows; the deltas joined are exactly
    `tokenizer.decode(ids, skip_special_tokens=True)`. A token that ends half a character adds
    nothing until the character is whole; special tokens add nothing.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.special = set(tokenizer.all_special_ids)
        self.ids: list[int] = []  # the text tokens so far (special ones left out)
        self.prefix_offset = 0  # the window's start: text before it is final
        self.read_offset = 0  # the window's text up to here has been handed out

    def push(self, token_id: int) -> str:
        """Add a token; return the new text it completes ("" while a character is unfinished)."""
        if token_id in self.special:
            return ""
        self.ids.append(token_id)
        # Both decodes start at the same token, so SentencePiece's leading-space rule treats them alike.
        seen = self.tok.decode(self.ids[self.prefix_offset: self.read_offset], skip_special_tokens=True)
        text = self.tok.decode(self.ids[self.prefix_offset:], skip_special_tokens=True)
        if len(text) <= len(seen) or text.endswith(REPLACEMENT):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(seen):]


def full_decode_deltas(tokenizer, ids: list[int]) -> list[str]:
    """The reference IncrementalDecoder is held to (and how streaming worked before it): the whole
    answer decoded again at every token, each token's delta the text past what was handed out,
    nothing while the text ends in half a character. Its cost grows with the answer
    (benchmarks/streaming_cost.py measures both)."""
    deltas, sent, seen = [], "", []
    for token_id in ids:
        seen.append(token_id)
        text = tokenizer.decode(seen, skip_special_tokens=True)
        if text.endswith(REPLACEMENT):
            deltas.append("")
        else:
            deltas.append(text[len(sent):])
            sent = text
    return deltas


class TokenTextStreamer:
    """transformers' streamer protocol, turning new token ids into text deltas for `on_token`."""

    def __init__(self, tokenizer, on_token: Callable[[int, str], None]):
        self.decoder, self.on_token, self.prompt_seen = IncrementalDecoder(tokenizer), on_token, False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.on_token(token_id, self.decoder.push(token_id))

    def end(self):
        pass


class Streamers:
    """Several streamers fed as one: each gets every `put` and the `end`."""

    def __init__(self, streamers: list):
        self.streamers = streamers

    def put(self, value):
        for streamer in self.streamers:
            streamer.put(value)

    def end(self):
        for streamer in self.streamers:
            streamer.end()


def make_streamer(tokenizer, on_token: Callable[[int, str], None] | None, streamer) -> object | None:
    """One streamer for `generate`: the on_token callback's, the given one, both, or None."""
    if streamer is not None and not all(callable(getattr(streamer, name, None)) for name in ("put", "end")):
        raise ConfigError(f"streamer={streamer!r} is invalid: allowed an object with put() and end(), as "
                          "transformers' TextStreamer and TextIteratorStreamer have")
    chosen = ([TokenTextStreamer(tokenizer, on_token)] if on_token is not None else []) + \
        ([streamer] if streamer is not None else [])
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else Streamers(chosen)
