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
	$(BIN)/python -m pip install -q -e '.[dev,pretrained,serve,export,track,sweep]' $(TORCH_PINS)
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

# The GPU path, checked and measured in one command (bench/gpu_check.sh; BENCHMARKS.md, "make
# gpu-check"). Without CUDA it dry-runs its CPU-side steps and exits 0. It needs no .venv: on the
# lent GPU machine the image's python3 runs it, with the wheels of .whl/ and the data of .gpu-data/,
# which gpu-wheels and gpu-data prepare here beforehand.
GPU_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
FETCH_WHEELS := ../shared/gpu/fetch-wheels.sh
GPU_WHEELS = $$(grep -v 'sdist only' bench/gpu_wheels.txt | sed 's/\#.*//')
GPU_SDISTS = $$(grep 'sdist only' bench/gpu_wheels.txt | sed 's/\#.*//')
.PHONY: gpu-check gpu-wheels gpu-data speed-data

gpu-check:
	PYTHON=$(GPU_PYTHON) bash bench/gpu_check.sh

gpu-wheels:
	@test -x $(FETCH_WHEELS) || { echo "gpu-wheels: $(FETCH_WHEELS) is not here (it comes with the workplace's shared/ folder); download the wheels of bench/gpu_wheels.txt into .whl/ by hand (device README)"; exit 2; }
	$(FETCH_WHEELS) $(GPU_WHEELS)
	$(GPU_PYTHON) -m pip wheel -q --no-deps --no-build-isolation -w .whl $(GPU_SDISTS)

gpu-data:
	$(GPU_PYTHON) -m bench.gpu_data

# The complete CIFAR-10 (60 MiB) for the speed recipe (GPU_CHECK_PHASES=speed): too large to
# travel with .whl and .gpu-data, so a device call of its own carries it (BENCHMARKS.md).
speed-data:
	mkdir -p .speed-data/cifar10
	cp ../shared/datasets/cifar10/train.zip ../shared/datasets/cifar10/test.zip .speed-data/cifar10/
