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
from .checkpoint import (
    Layout,
    VerifyResult,
    checkpoint_hash,
    detect_layout,
    is_synthetic,
    prepare_checkpoint,
    verify_checkpoint,
)
from .kernels import (
    KERNELS,
    KernelAvailability,
    KernelSpec,
    LoadedModel,
    LoadRecord,
    available_kernels,
    load_model,
    load_reference_model,
)
from .synthetic import LlamaArch, write_synthetic_checkpoint
from .generation import (
    DecodeConfig,
    GenerationRecord,
    generate,
    generate_ids,
    load_records,
    records_frame,
    save_records,
)
from .attention import ATTENTION_CHOICES, DEFAULT_ATTENTION, attention_in_use, set_attention
from .decode import DECODE_MODES, ModeEquality, prove_equal
from .breakdown import StepBreakdown, profile_decode
from .measure import Latency
from .humaneval import (
    CARD_PASS_AT_1,
    EvalReport,
    HumanEvalError,
    build_prompt,
    evaluate,
    extract_completion,
    load_problems,
    pass_at_k,
)
from .humaneval import run as run_humaneval
from .sandbox import SandboxError, SandboxLimits, SandboxResult, run_python
from . import analysis, decodestudy, notebook, plots, study, widgets  # noqa: E402  (submodules used as wb.plots, ...)

__version__ = "0.1.0"
