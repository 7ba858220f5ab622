# Developer tasks. `make all` runs everything: lint, type check, tests.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install fmt lint typecheck test all bench serve

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'

fmt:
	$(PY) -m ruff format .

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy

test:
	$(PY) -m pytest

all: lint typecheck test

bench:
	$(PY) bench/stream_bench.py
	$(PY) bench/relay_bench.py
	$(PY) bench/search_bench.py
	$(PY) bench/amplification_bench.py
	$(PY) bench/cluster_bench.py
	$(PY) bench/scale_bench.py

serve:
	$(VENV)/bin/research-service serve $(ARGS)
