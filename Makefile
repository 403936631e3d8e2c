# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest-xdist workers: CI's machine has 2 cores. Each worker takes its share of the cores
# (tests/conftest.py); the zoo's giants share one worker so that two never meet in memory.
WORKERS ?= 2
PYTEST  := $(BIN)/pytest -q -n $(WORKERS) --dist loadgroup

.PHONY: setup demo test test-quick bench bench-quick clean

$(BIN)/maskfx: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/maskfx

demo: setup
	$(BIN)/maskfx demo --out maskfx-demo   # report: maskfx-demo/report.md

test: setup
	$(PYTEST)

test-quick: setup
	$(PYTEST) -m "not slow"

# Every suite: benchmarks/results/<suite>.json and BENCHMARKS.md rendered from them.
bench: setup
	$(BIN)/python -m benchmarks

bench-quick: setup
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) build *.egg-info
