# Every target sets itself up on a fresh machine: it creates .venv and installs
# the package (editable) with what that target needs, then acts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_STAMP := $(VENV)/.installed-demo

# `make test-pythons` runs the unit suite (pytest, all of tests/) again on each
# CPython in PYTHONS, oldest and newest supported (requires-python >= 3.10): each
# in its own .venv-X.Y, made with the newest X.Y.* that pyenv has (found by
# .ci/python_for.sh, which fails with the `pyenv install X.Y` to run if it is
# missing). CI runs it after `make test`. `make test-python-3.13` runs one of
# them; `make test-pythons PYTHONS="3.11 3.12"` runs others.
PYTHONS ?= 3.10 3.13
# The suite runs on this many pytest-xdist processes: most tests wait (on sleeps,
# subprocesses, sockets) more than they compute, so two share two cores well (three
# were no faster in CI, and made the machine busier).
PYTEST_WORKERS ?= 2
PYV_TESTS := $(PYTHONS:%=test-python-%)
PYV_STAMPS := $(PYTHONS:%=.venv-%/.installed-dev)

.PHONY: test lint typecheck unit demo bench clean test-pythons $(PYV_TESTS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src tests/typing examples

unit: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

test: lint typecheck unit

# .venv-X.Y is made anew whenever pyproject.toml changes, with the X.Y.* pyenv
# has then. test-python-X.Y checks the interpreter first, so a venv left behind
# by a Python since removed fails with the same one-line message.
$(PYV_STAMPS): .venv-%/.installed-dev: pyproject.toml .ci/python_for.sh
	@py=$$(.ci/python_for.sh $*) && \
	  echo "making .venv-$* with $$py" && \
	  rm -rf .venv-$* && \
	  $$py -m venv .venv-$* && \
	  .venv-$*/bin/python -m pip install --quiet --upgrade pip && \
	  .venv-$*/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

$(PYV_TESTS): test-python-%: .venv-%/.installed-dev
	@.ci/python_for.sh $* >/dev/null
	.venv-$*/bin/python -m pytest -n $(PYTEST_WORKERS)

test-pythons: $(PYV_TESTS)

demo: $(DEMO_STAMP)
	$(BIN)/chanflow demo

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .venv-[0-9]* .pytest_cache .mypy_cache .ruff_cache
