# Everything the project needs is installed by these targets into .venv.
# torch/torchvision are pinned here only (pyproject keeps ranges so the GPU image's torch works):
# these exact builds lie on this machine's disk, and a bare `torch` would pull a multi-GB download.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev,pretrained,serve,export]' $(TORCH_PINS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlab demo

# The checks that keep the code's shape: style, types, and the layer contract (pyproject.toml).
CHECKS = $(BIN)/ruff check src tests bench && $(BIN)/mypy && $(BIN)/lint-imports --no-cache

test: $(STAMP)
	$(CHECKS)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(CHECKS)
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

clean-venv:
	rm -rf $(VENV)

# The Keras peers' environment for bench/augment.py and bench/train.py: Keras 3 + ImageDataGenerator
# (TensorFlow, CPU build) live apart from .venv so they never touch the project's dependencies.
# Optional: without it the benchmarks' Keras rows say "not run: make bench-env" (as in CI).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
.PHONY: bench-env

bench-env: $(BENCH_STAMP)

$(BENCH_STAMP):
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q keras tensorflow-cpu numpy scipy pillow
	touch $(BENCH_STAMP)
