"""How a conversation becomes the model's input: formats, the card's tokenizer, encoding, views."""

from .encoding import DEFAULT_CONTEXT_TOKENS, check_context, encode_prompt, prompt_ids_of_length
from .formats import PROMPT_FORMATS, PromptFormat, chat_template, get_format, render_prompt
from .tokenizer import load_tokenizer
from .views import diff_formats, token_view

__all__ = ["DEFAULT_CONTEXT_TOKENS", "PROMPT_FORMATS", "PromptFormat", "chat_template", "check_context",
           "diff_formats", "encode_prompt", "get_format", "load_tokenizer", "prompt_ids_of_length",
           "render_prompt", "token_view"]
