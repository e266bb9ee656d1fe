"""Fixtures for the AutoGPTQ tests: the demo model, and a tiny act-order checkpoint."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HAS_AUTOGPTQ = importlib.util.find_spec("auto_gptq") is not None
NEEDS_AUTOGPTQ = "needs the auto-gptq environment: `make test-legacy` builds .venv-autogptq and runs these there"


@pytest.fixture(scope="session")
def legacy_demo_path() -> Path:
    """The demo model. Its build needs gptqmodel, so the main environment builds it and
    `make test-legacy` passes its folder as $WORKBENCH_DEMO; without that, the cache's copy."""
    given = os.environ.get("WORKBENCH_DEMO")
    if given:
        path = Path(given)
        if not (path / "gptq_model-4bit-64g.bin").is_file():
            pytest.fail(f"WORKBENCH_DEMO={given} holds no demo model (gptq_model-4bit-64g.bin)")
        return path
    from workbench.model.demo import default_path

    path = default_path()
    if not (path / "gptq_model-4bit-64g.bin").is_file():
        pytest.skip(f"no demo model at {path}: build it in the main environment (`make demo`), "
                    "or run `make test-legacy`, which does")
    return path


@pytest.fixture(scope="session")
def act_order_checkpoint(tmp_path_factory) -> Path:
    """A random 4-bit checkpoint with act-order (desc_act=True), in AutoGPTQ 0.4.2's .bin layout."""
    from workbench.model.checkpoint import Layout
    from workbench.model.synthetic import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("act") / "tiny-act-order", "tiny", Layout.AUTOGPTQ_BIN,
                                      desc_act=True, progress=False)
