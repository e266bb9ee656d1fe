"""The one place gptqmodel is imported: environment it needs, and its logging kept quiet."""

from __future__ import annotations

import logging
import os


def import_gptqmodel(verbose: bool = False):
    """Import gptqmodel with the settings this workbench needs and return the module.

    gptqmodel starts one CPU worker per core it thinks it may use; on 2-core machines its default
    fails to load, so the worker count is set to the cores we have unless the user set it.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 4))))
    import gptqmodel

    level = logging.INFO if verbose else logging.WARNING
    try:
        from logbar import LogBar

        LogBar.shared().setLevel(level)
    except ImportError:  # a future gptqmodel without logbar: its loggers are plain logging ones
        pass
    for name in ("gptqmodel", "tokenicer", "defuser"):
        logging.getLogger(name).setLevel(level)
    return gptqmodel
