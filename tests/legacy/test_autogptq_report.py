"""The report suite in the AutoGPTQ environment's Jupyter kernel, with the notebooks' defaults:
`kernel="auto"` picks the AutoGPTQ kernel that runs there (on the CPU, cuda-old's torch fallback).

The report runner is the main environment's (papermill lives there), so this test, run in the
AutoGPTQ environment, asks the main environment's Python to render notebook 01 in a Jupyter
kernel that runs this interpreter.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NEEDS_AUTOGPTQ

pytest.importorskip("auto_gptq", reason=NEEDS_AUTOGPTQ)

ROOT = Path(__file__).resolve().parents[2]
# `make` builds the main environment as .venv in the checkout; WORKBENCH_MAIN_PYTHON names another.
MAIN_PYTHON = Path(os.environ.get("WORKBENCH_MAIN_PYTHON", ROOT / ".venv" / "bin" / "python"))
KERNEL_NAME = "codefuse-autogptq-test"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A Jupyter data folder holding a kernelspec for this interpreter, seen only by this test."""
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL_NAME],
                   check=True, capture_output=True)
    return prefix / "share" / "jupyter"


def test_notebook_01_renders_in_this_kernel_with_auto(legacy_demo_path, jupyter_path, tmp_path):
    if not MAIN_PYTHON.is_file():
        pytest.skip(f"no main environment at {MAIN_PYTHON} (make setup builds it; or set WORKBENCH_MAIN_PYTHON)")
    out = tmp_path / "report"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"MAX_NEW_TOKENS": 8}))  # KERNEL and DEVICE keep their defaults: auto
    env = {**os.environ, "JUPYTER_PATH": str(jupyter_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(MAIN_PYTHON), "-m", "workbench", "report", "--only", "01", "--model",
                           str(legacy_demo_path), "--out", str(out), "--jupyter-kernel", KERNEL_NAME,
                           "--params", str(params)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["jupyter_kernel_python"] == sys.executable
    saved = json.loads((out / "01_quickstart.json").read_text())
    assert saved["load"]["kernel_requested"] == "auto"
    assert saved["load"]["kernel"].startswith("autogptq-")  # what ran, fallback named, e.g. cuda-old's torch path
    assert saved["records"][0]["kernel"] == saved["load"]["kernel"] and saved["records"][0]["new_tokens"] >= 1
    assert (out / "01_quickstart.html").is_file()
