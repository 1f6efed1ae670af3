# make demo  — fresh machine: venv, install, run the demo
# make test  — fresh machine: venv, install, the whole test suite (compiled where a C compiler
#              exists, plus the compiled modules' own tests in pure Python; see docs/compiled.md)
# make compile — build the mypyc hot path into src/phalanx/_mypyc (optional; pure without it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck sim bench redispy clean compile pure

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phalanx demo

# The whole suite runs on the compiled build (what a node runs where a compiler exists); the
# compiled modules' own tests run again in pure Python (what `make demo` and a developer run).
# CI sets PHALANX_NO_SKIPS=1: there a failed build is an error, not a fallback to pure.
PURE_LAYER_TESTS := tests/resp tests/raft tests/kv tests/placement tests/compiled

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	$(BIN)/python -m phalanx._compile build $(if $(PHALANX_NO_SKIPS),--require)
	$(BIN)/pytest -n 2 tests
	PHALANX_PURE=1 $(BIN)/pytest -n 2 -p no:cacheprovider $(PURE_LAYER_TESTS)

# The mypyc hot path (phalanx/compiled.py): a no-op with a message where no compiler exists.
compile: $(STAMP)
	$(BIN)/python -m phalanx._compile build

# Back to pure Python: remove the compiled build.
pure: $(STAMP)
	$(BIN)/python -m phalanx._compile clean

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/phalanx/_mypyc
