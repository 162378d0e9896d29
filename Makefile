# Two commands do all set-up on a fresh machine:
#   make demo   installs everything and runs the whole pipeline end to end on the embedded default
#   make test   installs everything and runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# On a machine without an NVIDIA GPU install the CPU build of torch first, so nothing can pull a CUDA build.
# On a GPU machine, pick the CUDA build: `make setup TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>"`.
TORCH_SPEC ?= torch==2.13.0
UV_SPEC ?= uv==0.13.9
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export RAY_DISABLE_USAGE_STATS ?= 1
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# --no-compile: byte-compiling torch's 20k files took 30 of pip's 45 s; Python compiles what it imports.
	$(PIP) install --quiet --no-compile $(TORCH_SPEC)
	@# The rest through uv (~15 s instead of pip's 2-4 min, same pins); torch is already installed, so nothing
	@# pulls another build of it. pip does the same install where uv cannot be had.
	($(PIP) install --quiet --no-compile $(UV_SPEC) && \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[dev]") || \
	  $(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@# DeepSpeed JIT-builds its shared-memory op on first use (~40 s); build it once now.
	$(PY) -c "from deepspeed.accelerator import get_accelerator as g; g().create_op_builder('ShareMemCommBuilder').load()" >/dev/null
	touch $@

demo: setup
	$(PY) ray_jobs/pipeline.py --config configs/pipeline/demo.yaml $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check neurolm ray_jobs tests benchmarks

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b; done

clean:
	rm -rf $(VENV) .cache
