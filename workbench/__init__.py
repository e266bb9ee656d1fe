"""CodeFuse Workbench: load CodeFuse-CodeLlama-34B-4bits with a chosen GPTQ kernel, render its
prompts, and run instrumented generation.

The public API is re-exported here; each name lives in exactly one module.
"""

from .errors import (
    CacheError,
    CheckpointError,
    ChecksumMismatch,
    ConfigError,
    KernelUnavailable,
    PromptError,
    UnsafeCheckpoint,
    WorkbenchError,
)
from .prompts import (
    DEFAULT_CONTEXT_TOKENS,
    PROMPT_FORMATS,
    PromptFormat,
    chat_template,
    check_context,
    diff_formats,
    encode_prompt,
    load_tokenizer,
    render_prompt,
    token_view,
)

__version__ = "0.1.0"
