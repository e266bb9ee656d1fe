"""The card's tokenizer: SentencePiece's own ids, wrapped for transformers and checked on load.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, WorkbenchError
from .formats import chat_template

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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


# --- Agreement with SentencePiece --------------------------------------------------------------

@dataclass(frozen=True)
class TokenizerAgreement:
    """How a tokenizer's ids compare with SentencePiece's own over a set of texts.

    `example` is the first text that differs: its index, a stretch of text around the first
    differing token, and the next few ids and pieces on each side from there.
    """

    texts: int
    disagreeing: int
    example: dict | None = None

    @property
    def agree(self) -> bool:
        return self.disagreeing == 0

    def to_dict(self) -> dict:
        return {"texts": self.texts, "disagreeing": self.disagreeing, "example": self.example}


def compare_with_sentencepiece(tokenizer: PreTrainedTokenizerBase, model_file: str | os.PathLike,
                               texts: Sequence[str], example_tokens: int = 4) -> TokenizerAgreement:
    """Encode every text with `tokenizer` (no special tokens added) and with SentencePiece on
    `model_file`, the ids the model was trained on; count the texts whose ids differ."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(_find_tokenizer_model(Path(model_file))))
    disagreeing, example = 0, None
    for index, text in enumerate(texts):
        expected, got = sp.encode(text), tokenizer.encode(text, add_special_tokens=False)
        if got == expected:
            continue
        disagreeing += 1
        if example is None:
            at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            start = len(sp.decode(expected[:at]))  # where the first differing token begins in the text
            ids, sp_ids = got[at: at + example_tokens], expected[at: at + example_tokens]
            example = {
                "index": index, "token": at, "text": text[max(0, start - 12): start + 24],
                "ids": ids, "pieces": tokenizer.convert_ids_to_tokens(ids),
                "sentencepiece_ids": sp_ids, "sentencepiece_pieces": [sp.id_to_piece(i) for i in sp_ids],
            }
    return TokenizerAgreement(texts=len(texts), disagreeing=disagreeing, example=example)
