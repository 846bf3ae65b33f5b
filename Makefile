# Every target builds what it needs from the lock file first; nothing is assumed installed but python3.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help venv test tryout contract test-compat compat-lock lint demo docs bench bench-growth chaos e2e e2e-distributed dist wheel-check mutation clean

help:
	@echo "make demo   - run the expiry clean-up DAG and a manual cancellation against the bundled emulator"
	@echo "make test   - run the whole test suite"
	@echo "make tryout - follow docs/try-it-locally.md literally: emulator, airflow standalone, approval, clean-up, events"
	@echo "make contract - the contract suite: the emulator, and a real account with DROPBOX_SIGN_CONTRACT_API_KEY"
	@echo "make test-compat - the suite on every supported Airflow minor and the lowest Python"
	@echo "make compat-lock - re-resolve the pinned constraints of test-compat (.ci/compat/*.txt)"
	@echo "make dist   - build the sdist and the wheel into dist/"
	@echo "make wheel-check - install the wheel with pip next to Airflow and check what users get"
	@echo "make lint   - ruff and mypy"
	@echo "make docs   - build the documentation site (warnings are errors)"
	@echo "make bench  - benchmarks against the emulator (writes build/bench.json)"
	@echo "make bench-growth - how cost grows with triggers and poll interval (docs/bench-growth.json, plots)"
	@echo "make chaos  - the large fault-matrix run"
	@echo "make mutation - mutate the safety checks one module at a time; fails on an unlisted survivor"
	@echo "make e2e    - end to end on a real Airflow deployment, driven in Chromium; then what two users can tamper with"
	@echo "make e2e-distributed - Postgres, Redis, CeleryExecutor, 2 workers, 2 triggerers, with faults; then again on an OAuth API app"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/airflow: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

venv: $(BIN)/airflow

test: venv
	$(BIN)/pytest -q

# Runs every command of docs/try-it-locally.md, in a fresh venv under a throw-away HOME, on ports
# 8080 and 8125; evidence and a transcript in build/tryout/.
tryout: venv
	UV=$(UV) $(BIN)/python -m tests.e2e.tryout.run

# Part of make test too; against a real account only when DROPBOX_SIGN_CONTRACT_API_KEY is set
# (docs/testing.md). Reports: build/contract/<target>.json.
contract: venv
	$(BIN)/pytest -q tests/contract

# Each env is built afresh under build/compat/ from the package index, pinned by .ci/compat/*.txt.
test-compat: venv
	UV=$(UV) $(BIN)/python scripts/compat.py run

compat-lock: venv
	UV=$(UV) $(BIN)/python scripts/compat.py lock

dist: | $(UV)
	rm -rf dist
	$(UV) build --sdist --wheel --out-dir dist

wheel-check: venv dist
	UV=$(UV) $(BIN)/python scripts/check_wheel.py

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

# The growth series (about 20 minutes on 2 cores): the JSON and the images docs/performance.md shows.
bench-growth: venv
	$(BIN)/python -m benchmarks.run --growth --out docs/bench-growth.json
	$(BIN)/python -m benchmarks.plots docs/bench-growth.json --out docs/images

# Not part of .ci/run: about 20 minutes on one core (docs/testing.md).
mutation: venv
	nice -n 19 $(BIN)/python scripts/mutation.py

chaos: venv
	DROPBOX_SIGN_CHAOS=1 $(BIN)/pytest -q -m chaos

# Debian's Chromium drives the UI: Playwright never downloads a browser of its own.
/usr/bin/chromium:
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }

e2e: venv /usr/bin/chromium
	$(BIN)/python -m tests.e2e.single.run
	$(BIN)/python -m tests.e2e.single.tampering

# The distributed run's Python dependencies (Celery, Redis, psycopg2) are the lock file's
# "distributed" group; PostgreSQL and Redis themselves come from Debian (the script installs them).
e2e-distributed: venv
	$(UV) sync --frozen --python $(PYTHON) --group distributed
	$(BIN)/python -m tests.e2e.distributed.run
	$(BIN)/python -m tests.e2e.distributed.run --oauth

clean:
	rm -rf build dist site .pytest_cache .mypy_cache .ruff_cache
