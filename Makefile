# Every target builds what it needs from the lock file first; nothing is assumed installed but python3.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help venv test lint demo docs bench chaos e2e clean

help:
	@echo "make demo   - run the expiry clean-up DAG and a manual cancellation against the bundled emulator"
	@echo "make test   - run the whole test suite"
	@echo "make lint   - ruff and mypy"
	@echo "make docs   - build the documentation site (warnings are errors)"
	@echo "make bench  - benchmarks against the emulator (writes build/bench.json)"
	@echo "make chaos  - the large fault-matrix run"
	@echo "make e2e    - end to end on a real Airflow deployment, driven in Chromium"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/airflow: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

venv: $(BIN)/airflow

test: venv
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: venv
	$(BIN)/python scripts/demo.py

docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

bench: venv
	$(BIN)/python -m benchmarks.run

chaos: venv
	DROPBOX_SIGN_CHAOS=1 $(BIN)/pytest -q -m chaos

# Debian's Chromium drives the UI: Playwright never downloads a browser of its own.
/usr/bin/chromium:
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }

e2e: venv /usr/bin/chromium
	$(BIN)/python tests/e2e/run.py

clean:
	rm -rf build site .pytest_cache .mypy_cache .ruff_cache
