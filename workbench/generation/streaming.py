"""Streaming new text to a callback while tokens are generated.
"""

from __future__ import annotations


class TokenTextStreamer:
    """transformers' streamer protocol, turning new token ids into text deltas for `on_token`."""

    def __init__(self, tokenizer, on_token):
        self.tok, self.on_token, self.ids, self.sent, self.prompt_seen = tokenizer, on_token, [], "", False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.ids.append(token_id)
            text = self.tok.decode(self.ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                delta = ""
            else:
                delta, self.sent = text[len(self.sent):], text
            self.on_token(token_id, delta)

    def end(self):
        pass
