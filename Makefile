# The two commands of the README: `make demo` (the main job) and `make test` (lint + tests).
# Both create the virtual environment if it is missing and install what they need.
# TORCH_SPEC picks the torch build: CI sets it to torch==2.13.0 (a CPU build); users get torch>=2.4.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.4
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-e2e lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m mmv_torch demo --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

test: lint
	$(PY) -m pytest

# End-to-end tests (the real CLI in subprocesses: signals, locks, resume; the search page in chromium): CI runs
# them after `make test`.
test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py

clean-venv:
	rm -rf $(VENV)
