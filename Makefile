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
# Python writes .pyc files of what it imports (uv installs none): with PYTHONDONTWRITEBYTECODE set, every Ray
# process would compile torch, Ray and the rest again on each start.
unexport PYTHONDONTWRITEBYTECODE
define WARM_UP
import matplotlib.pyplot, mne, pyarrow.parquet, ray.data, ray.train.torch, ray.tune, scipy.signal, sklearn.linear_model
import transformers, wandb
import neurolm.eval.evaluate, neurolm.pipeline, neurolm.train.launch, neurolm.train.stages
from deepspeed.accelerator import get_accelerator
get_accelerator().create_op_builder("ShareMemCommBuilder").load()
import torch._dynamo, deepspeed.runtime.zero.muon.muon_optimizer
endef
export WARM_UP

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# --no-compile: byte-compiling all of torch took 30 of pip's 45 s; the warm-up below compiles what is used.
	$(PIP) install --quiet --no-compile $(TORCH_SPEC)
	@# The rest through uv (~15 s instead of pip's 2-4 min, same pins); torch is already installed, so nothing
	@# pulls another build of it. pip does the same install where uv cannot be had.
	($(PIP) install --quiet --no-compile $(UV_SPEC) && \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[dev]") || \
	  $(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@# Warm-up: DeepSpeed JIT-builds its shared-memory op on first use (~40 s), built once now; the imports write
	@# the .pyc files of what the pipeline's Ray processes import, once, instead of in the ~8 processes that start
	@# at once in a stage (torch._dynamo and DeepSpeed's Muon module: imported by every Train worker's engine,
	@# ~1,400 modules, 4-5 s of compiling per process without their .pyc files).
	$(PY) -c "$$WARM_UP" >/dev/null
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
