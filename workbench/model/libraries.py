"""The one place gptqmodel is imported: environment it needs, and its logging kept quiet."""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings

# torchao (imported by gptqmodel and by transformers' quantizer checks) warns about CUDA-only
# libraries it cannot load on a CPU machine, and torch about its own deprecations.
_NOISY_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")
# The libraries whose chatter quiet() hides, by the module a warning is attributed to (the one its
# stacklevel points at): warnings from the user's own code, and the workbench's, still show.
LIBRARIES = ("torch", "torchao", "transformers", "accelerate", "gptqmodel", "tokenicer", "defuser", "logbar",
             "auto_gptq", "peft", "optimum", "datasets", "huggingface_hub", "triton", "safetensors")
LIBRARY_MODULES = rf"^({'|'.join(LIBRARIES)})(\.|$)"


def quiet_library_logs(verbose: bool = False) -> None:
    """Silence the warnings third-party imports print that say nothing about our work."""
    for name in _NOISY_IMPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def import_gptqmodel(verbose: bool = False):
    """Import gptqmodel with the settings this workbench needs and return the module.

    gptqmodel starts one CPU worker per core it thinks it may use; on 2-core machines its default
    fails to load, so the worker count is set to the cores we have unless the user set it.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 4))))
    level = logging.INFO if verbose else logging.WARNING
    quiet_library_logs(verbose)
    try:
        from logbar import LogBar

        # Set before the import: gptqmodel logs its banner and a free-threading advice
        # (irrelevant to inference) while it is being imported.
        LogBar.shared().setLevel(level if verbose else logging.ERROR)
    except ImportError:  # a future gptqmodel without logbar: its loggers are plain logging ones
        LogBar = None
    import gptqmodel

    if LogBar is not None:
        LogBar.shared().setLevel(level)
    for name in ("gptqmodel", "tokenicer", "defuser"):
        logging.getLogger(name).setLevel(level)
    return gptqmodel


def quiet() -> None:
    """Keep notebook output readable: the libraries' chatter off, our own results on.

    Only the libraries' own warnings and loggers are silenced (LIBRARIES): a UserWarning or
    FutureWarning from anything else in the process, the user's code included, still shows.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", module=LIBRARY_MODULES)
    for name in ("transformers", "torch", "torchao", "accelerate", "gptqmodel", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if importlib.util.find_spec("gptqmodel") is not None:  # the AutoGPTQ environment has none

        import_gptqmodel()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
