"""CodeFuse Workbench: load CodeFuse-CodeLlama-34B-4bits with a chosen GPTQ kernel, render its
prompts, and run instrumented generation.

The public API is re-exported here; each name lives in exactly one module.
"""

from . import generation, humaneval, model, prompts, report, studies  # noqa: E402  (subpackages)
from .errors import (
    BatchMemoryError,
    CacheError,
    CheckpointError,
    ChecksumMismatch,
    ConfigError,
    KernelUnavailable,
    PromptError,
    UnsafeCheckpoint,
    WorkbenchError,
)
from .generation import (
    DECODE_MODES,
    DECODE_REQUESTS,
    DecodeConfig,
    GenerationRecord,
    WorkItem,
    WorkloadConfig,
    generate,
    generate_ids,
    load_records,
    records_frame,
    run_workload,
    save_records,
)
from .humaneval import (
    CARD_PASS_AT_1,
    EvalReport,
    HumanEvalError,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    build_prompt,
    evaluate,
    extract_completion,
    load_problems,
    pass_at_k,
    run_python,
    sandbox,  # noqa: E402  (wb.sandbox, as before the move)
)
from .humaneval import run as run_humaneval
from .measure import Latency
from .model import (
    ATTENTION_CHOICES,
    DEFAULT_ATTENTION,
    KERNELS,
    KernelAvailability,
    KernelSpec,
    Layout,
    LlamaArch,
    LoadedModel,
    LoadRecord,
    VerifyResult,
    attention_in_use,
    available_kernels,
    checkpoint_hash,
    detect_layout,
    is_synthetic,
    load_model,
    load_reference_model,
    prepare_checkpoint,
    set_attention,
    verify_checkpoint,
    write_synthetic_checkpoint,
)
from .prompts import (
    DEFAULT_CONTEXT_TOKENS,
    PROMPT_FORMATS,
    PromptFormat,
    chat_template,
    check_context,
    compare_formats,
    diff_formats,
    encode_prompt,
    load_tokenizer,
    render_prompt,
    token_strip,
    token_view,
)
from .report import notebook, plots, widgets  # noqa: E402  (used in notebooks as wb.notebook, wb.plots, ...)
from .studies import ModeEquality, StepBreakdown, profile_decode, prove_equal

# Names of the flat package before the move (docs/architecture.md lists where each went).
from .studies import answers as analysis  # noqa: E402
from .studies import decode_modes as decodestudy  # noqa: E402
from .studies import kernels as study  # noqa: E402

__version__ = "0.1.0"
