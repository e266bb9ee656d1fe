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
