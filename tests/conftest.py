"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI keeps the model's real tokenizer beside the repository; a fresh clone has none.
SHARED_TOKENIZER = REPO_ROOT.parent / "shared" / "codefuse" / "tokenizer.model"


@pytest.fixture(scope="session")
def real_tokenizer_path() -> Path:
    """The real CodeFuse tokenizer.model: $WORKBENCH_TOKENIZER, else ../shared/codefuse/tokenizer.model."""
    if os.environ.get("WORKBENCH_TOKENIZER"):
        path = Path(os.environ["WORKBENCH_TOKENIZER"])
        if not path.exists():
            pytest.skip(f"WORKBENCH_TOKENIZER={path} does not exist")
        return path
    if not SHARED_TOKENIZER.is_file():
        pytest.skip(
            f"the model's real tokenizer is not here: set WORKBENCH_TOKENIZER to its tokenizer.model "
            f"(or its model folder), or put it at {SHARED_TOKENIZER}"
        )
    return SHARED_TOKENIZER


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The embedded demo model in the real checkpoint's layout (built once, then cached)."""
    from workbench.model.demo import build

    return build()


@pytest.fixture(scope="session")
def demo_loaded(demo_model_path):
    """The demo model loaded once on the CPU with the kernel `auto` picks."""
    from workbench.model.load import load_model

    return load_model(demo_model_path, kernel="auto", device="cpu")
