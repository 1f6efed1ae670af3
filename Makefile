# make demo  — fresh machine: venv, install, run the demo
# make test  — fresh machine: venv, install, the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck sim bench redispy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phalanx demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	$(BIN)/pytest -n 2 tests

sim: $(STAMP)
	$(BIN)/phalanx sim --seeds 2000

# Benchmarks side by side with the peers installed here (see benchmarks/README.md); minutes.
bench: $(STAMP)
	$(BIN)/phalanx bench

# redis-py's own test suite against phalanx and a redis-server (benchmarks/README.md); minutes.
redispy: $(STAMP)
	$(BIN)/python benchmarks/redispy_suite.py

lint: $(STAMP)
	$(BIN)/ruff check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
