"""The model: checkpoints, the kernel registry, loading with one kernel, and what was loaded.

One file per engine (gptqmodel's loading lives in load.py, AutoGPTQ's in autogptq_engine.py);
`LoadedModel` owns its release; the demo and synthetic checkpoints are made here too.
"""

from .attention import ATTENTION_CHOICES, DEFAULT_ATTENTION, attention_in_use, set_attention
from .checkpoint import (
                         Layout,
                         VerifyResult,
                         checkpoint_hash,
                         detect_layout,
                         is_synthetic,
                         model_kind,
                         prepare_checkpoint,
                         verify_checkpoint,
)
from .load import load_model, load_reference_model, resolve_model
from .loaded import LoadedModel, LoadRecord
from .registry import KERNELS, KernelAvailability, KernelSpec, available_kernels, choose_kernel, resolve_device
from .synthetic import LlamaArch, write_synthetic_checkpoint

__all__ = ["ATTENTION_CHOICES", "DEFAULT_ATTENTION", "KERNELS", "KernelAvailability", "KernelSpec", "Layout",
           "LlamaArch", "LoadRecord", "LoadedModel", "VerifyResult", "attention_in_use", "available_kernels",
           "checkpoint_hash", "choose_kernel", "detect_layout", "is_synthetic", "load_model", "load_reference_model",
           "model_kind", "prepare_checkpoint", "resolve_device", "resolve_model", "set_attention", "verify_checkpoint",
           "write_synthetic_checkpoint"]
