"""How a conversation becomes the model's input: formats, the card's tokenizer, encoding, views."""

from .encoding import DEFAULT_CONTEXT_TOKENS, check_context, encode_prompt, prompt_ids_of_length
from .formats import (
    CHAT_TEMPLATE_FILE,
    PROMPT_FORMATS,
    PromptFormat,
    chat_template,
    get_format,
    render_prompt,
    write_chat_template,
)
from .tokenizer import TokenizerAgreement, compare_with_sentencepiece, load_tokenizer
from .views import FormatComparison, TokenStrip, compare_formats, diff_formats, token_strip, token_view

__all__ = ["CHAT_TEMPLATE_FILE", "DEFAULT_CONTEXT_TOKENS", "PROMPT_FORMATS", "FormatComparison", "PromptFormat",
           "TokenStrip", "TokenizerAgreement", "chat_template", "check_context", "compare_formats",
           "compare_with_sentencepiece", "diff_formats", "encode_prompt", "get_format", "load_tokenizer",
           "prompt_ids_of_length", "render_prompt", "token_strip", "token_view", "write_chat_template"]
