# Two commands do all set-up on a fresh machine with Python 3.11, 3.12 or 3.13 and pip:
#   make report   builds .venv, the demo model, and renders the report suite into reports/
#   make test     builds .venv and the demo model, then runs the tests
# Both are idempotent: a second run skips what is done. `make lock` refreshes requirements.lock.

# The Pythons the main environment supports (pyproject's requires-python and environment.yml say
# the same; tests/test_packaging.py checks it). Not 3.14: numpy 2.2.6 has no cp314 wheel.
PYTHONS    := 3.11 3.12 3.13
IN_RANGE    = import sys; sys.exit("%d.%d" % sys.version_info[:2] not in "$(PYTHONS)".split())
CANDIDATES := $(addprefix python,$(PYTHONS)) python3
# The interpreter that makes .venv: the first of $(CANDIDATES) that runs and is a supported
# Python (3.11 first: requirements.lock and CI are made with it). `make PYTHON=...` picks another.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in $(CANDIDATES); do $$p -c '$(IN_RANGE)' 2>/dev/null && { echo $$p; break; }; done)
endif
VENV       ?= .venv
PY         := $(VENV)/bin/python
# Every package of the environment at the version `make` installs, as pip constraints; torch and
# the libraries only a torch build brings (nvidia-*, cuda-*, triton) are left out of it.
LOCK       ?= requirements.lock
# torch is installed only into a venv that has none, and a torch already there is kept: pip
# never picks a torch build itself. TORCH_SPEC from pip's own indexes gives PyPI's build (CUDA 13
# on Linux x86_64, no CUDA on macOS and Windows; this project's machines have a local CPU wheel);
# TORCH_INDEX=<a PyTorch wheel index> takes TORCH_SPEC from there instead (README, "The torch build").
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
MODEL      ?= demo
KERNEL     ?= auto
DEVICE     ?= auto
OUT        ?= reports
PYTEST_ARGS ?=

.PHONY: setup demo report lint test clean help lock

help:
	@echo "make report  - set up, build the demo model, render the notebooks into $(OUT)/"
	@echo "make test    - set up, build the demo model, lint, run the tests"
	@echo "make lint    - ruff over workbench, tests, benchmarks and tools (pyproject.toml's [tool.ruff])"
	@echo "make lock    - resolve pyproject.toml afresh and write $(LOCK) from it"
	@echo "variables: MODEL=/path/to/CodeFuse-CodeLlama-34B-4bits KERNEL=$(KERNEL) DEVICE=$(DEVICE) OUT=$(OUT)"
	@echo "           PYTHON=$(or $(PYTHON),<none found>) TORCH_SPEC=$(TORCH_SPEC) TORCH_INDEX=$(TORCH_INDEX)"

setup: $(VENV)/.installed

# Refuses, with what to do, a PYTHON that is missing or not a supported Python.
define check_python
	@[ -n "$(PYTHON)" ] || { \
	  echo "error: no supported Python found: the workbench needs Python $(PYTHONS), and none of" >&2; \
	  echo "       $(CANDIDATES) is one. Install one, or run 'make PYTHON=/path/to/python3.12 ...'." >&2; exit 1; }
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found. The workbench needs Python $(PYTHONS): install one, or run" >&2; \
	  echo "       'make PYTHON=/path/to/python3.12 ...'." >&2; exit 1; }
	@$(PYTHON) -c '$(IN_RANGE)' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'), the workbench supports $(PYTHONS)." >&2; \
	  echo "       Run 'make PYTHON=/path/to/python3.12 ...'." >&2; exit 1; }
endef

# The installed torch is pinned for the last pip call (-c $(VENV)/torch.txt): pip keeps it, and a
# torch outside pyproject's range is an error, not a replacement downloaded behind the user's back.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@if [ -x $(PY) ] && ! $(PY) -c '$(IN_RANGE)'; then \
	  echo "error: $(VENV) was made with Python $$($(PY) -c 'import platform; print(platform.python_version())'), the workbench supports $(PYTHONS);" >&2; \
	  echo "       remove it ('rm -rf $(VENV)') and run make again." >&2; exit 1; fi
	$(if $(wildcard $(PY)),,$(check_python))
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install --progress-bar off $(TORCH_SPEC) \
	  $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),-c $(LOCK))
	@$(PY) -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > $(VENV)/torch.txt
	$(PY) -m pip install --progress-bar off -c $(LOCK) -c $(VENV)/torch.txt -e ".[notebooks,cluster,test]"
	@touch $@

# A fresh resolution of pyproject.toml in a throwaway venv (no constraints) on PYTHON, which must
# be the lowest supported one (3.11, CI's), frozen; tools/lock.py adds what the other supported
# Pythons need (uv pip compile, no install) and leaves torch and its build's libraries out.
# Run it after changing a pin in pyproject.toml. torch goes in without its dependencies, which
# the second pip call resolves with the rest; off this project's machines, give TORCH_INDEX (the
# CPU build's index) so that the throwaway venv does not download a CUDA build.
UV_SPEC ?= uv==0.13.8
lock:
	$(check_python)
	@tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp"' EXIT && \
	echo "resolving pyproject.toml in a throwaway venv ($(PYTHON), $(TORCH_SPEC))" && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -q --progress-bar off --no-deps $(TORCH_SPEC) \
	  $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) && \
	"$$tmp/venv/bin/python" -m pip install -q --progress-bar off -e ".[notebooks,cluster,test]" && \
	$(PYTHON) -m venv "$$tmp/uv" && "$$tmp/uv/bin/python" -m pip install -q --progress-bar off $(UV_SPEC) && \
	"$$tmp/venv/bin/python" tools/lock.py --pythons "$(PYTHONS)" --torch "$(TORCH_SPEC)" \
	  --uv "$$tmp/uv/bin/uv" --out $(LOCK)

demo: setup
	$(PY) -m workbench demo

report: demo
	$(PY) -m workbench report --model $(MODEL) --kernel $(KERNEL) --device $(DEVICE) --out $(OUT)

lint: setup
	$(PY) -m ruff check workbench tests benchmarks tools

test: lint demo
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache

# --- The model card's engine: AutoGPTQ 0.7.1 in its own venv (README, "The model card's engine") ---
#   make legacy-env   builds .venv-autogptq from environment-autogptq.yml and registers its
#                     Jupyter kernel (codefuse-autogptq) for `workbench report --jupyter-kernel`
#   make test-legacy  runs tests/legacy there, on the demo model the main environment builds
# Python 3.11 only, whatever PYTHON is: auto-gptq 0.7.1's newest wheel is cp311 (PyPI has none
# for cp312 or later), and the main environment's transformers 5 cannot share a venv with it.
LEGACY_PYTHON  ?= python3.11
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
	@[ -x $(LEGACY_PY) ] || command -v $(LEGACY_PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(LEGACY_PYTHON) not found. The AutoGPTQ environment needs Python 3.11 (auto-gptq 0.7.1 has no" >&2; \
	  echo "       wheel for later ones): run 'make LEGACY_PYTHON=/path/to/python3.11 legacy-env'." >&2; exit 1; }
	@[ -x $(LEGACY_PY) ] || $(LEGACY_PYTHON) -m venv $(LEGACY_VENV)
	@$(LEGACY_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: $(LEGACY_VENV) is not Python 3.11; remove it ('rm -rf $(LEGACY_VENV)') and run make again." >&2; exit 1; }
	@$(LEGACY_PY) -c 'import torch' 2>/dev/null || $(LEGACY_PY) -m pip install --progress-bar off $$($(LEGACY_PINS) | grep '^torch==')
	@$(LEGACY_PINS) | grep -v '^torch==' > $(LEGACY_VENV)/requirements.txt
	$(LEGACY_PY) -m pip install --progress-bar off -r $(LEGACY_VENV)/requirements.txt
	$(LEGACY_PY) -m pip install --progress-bar off --no-deps -e .
	@touch $@

test-legacy: legacy-env demo
	WORKBENCH_DEMO="$$($(PY) -m workbench demo --path-only)" $(LEGACY_PY) -m pytest tests/legacy $(PYTEST_ARGS)
