# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make report   builds .venv, the demo model, and renders the report suite into reports/
#   make test     builds .venv and the demo model, then runs the tests
# Both are idempotent: a second run skips what is done.

PYTHON     ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
# The CPU build; a CUDA user installs a CUDA torch into .venv first (README), which is kept.
TORCH_SPEC ?= torch==2.13.0
MODEL      ?= demo
KERNEL     ?= auto
DEVICE     ?= auto
OUT        ?= reports
PYTEST_ARGS ?=

.PHONY: setup demo report test clean help

help:
	@echo "make report  - set up, build the demo model, render the notebooks into $(OUT)/"
	@echo "make test    - set up, build the demo model, run the tests"
	@echo "variables: MODEL=/path/to/CodeFuse-CodeLlama-34B-4bits KERNEL=$(KERNEL) DEVICE=$(DEVICE) OUT=$(OUT)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found. The workbench needs Python 3.11: install it, or run" >&2; \
	  echo "       'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'), the workbench needs 3.11." >&2; \
	  echo "       Run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	  echo "error: $(VENV) was made with another Python; remove it ('rm -rf $(VENV)') and run make again." >&2; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --progress-bar off $(TORCH_SPEC)
	$(PY) -m pip install --progress-bar off -e ".[notebooks,test]"
	@touch $@

demo: setup
	$(PY) -m workbench demo

report: demo
	$(PY) -m workbench report --model $(MODEL) --kernel $(KERNEL) --device $(DEVICE) --out $(OUT)

test: demo
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache

# --- The model card's engine: AutoGPTQ 0.7.1 in its own venv (README, "The model card's engine") ---
#   make legacy-env   builds .venv-autogptq from environment-autogptq.yml and registers its
#                     Jupyter kernel (codefuse-autogptq) for `workbench report --jupyter-kernel`
#   make test-legacy  runs tests/legacy there, on the demo model the main environment builds
LEGACY_VENV    ?= .venv-autogptq
LEGACY_PY      := $(LEGACY_VENV)/bin/python
LEGACY_ENV     := environment-autogptq.yml
LEGACY_KERNEL  ?= codefuse-autogptq
# The pip list of $(LEGACY_ENV), one requirement a line: the single place its pins live.
LEGACY_PINS     = awk '/^ *- pip:/ {p = 1; next} p && /^ *- / {sub(/^ *- /, ""); print}' $(LEGACY_ENV)

.PHONY: legacy-env test-legacy

# The kernelspec is (re)registered on every run: another checkout's `make legacy-env` (CI's clone)
# points the same user-wide name at its own venv.
legacy-env: $(LEGACY_VENV)/.installed
	$(LEGACY_PY) -m ipykernel install --user --name $(LEGACY_KERNEL) --display-name "Python 3.11 (CodeFuse, AutoGPTQ 0.7.1)"

# torch is installed only into a venv that has none, so a CUDA user's torch 2.2.1+cu121 stays (README).
# The workbench goes in with --no-deps: its own requirements are the main environment's.
$(LEGACY_VENV)/.installed: $(LEGACY_ENV) pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found. The AutoGPTQ environment needs Python 3.11: run 'make PYTHON=/path/to/python3.11 legacy-env'." >&2; exit 1; }
	@[ -x $(LEGACY_PY) ] || $(PYTHON) -m venv $(LEGACY_VENV)
	@$(LEGACY_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: $(LEGACY_VENV) is not Python 3.11; remove it ('rm -rf $(LEGACY_VENV)') and run make again." >&2; exit 1; }
	@$(LEGACY_PY) -c 'import torch' 2>/dev/null || $(LEGACY_PY) -m pip install --progress-bar off $$($(LEGACY_PINS) | grep '^torch==')
	@$(LEGACY_PINS) | grep -v '^torch==' > $(LEGACY_VENV)/requirements.txt
	$(LEGACY_PY) -m pip install --progress-bar off -r $(LEGACY_VENV)/requirements.txt
	$(LEGACY_PY) -m pip install --progress-bar off --no-deps -e .
	@touch $@

test-legacy: legacy-env demo
	WORKBENCH_DEMO="$$($(PY) -m workbench demo | head -n 1)" $(LEGACY_PY) -m pytest tests/legacy $(PYTEST_ARGS)
