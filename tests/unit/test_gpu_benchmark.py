"""``benchmarks/gpu.py``: on a machine without a GPU it says so and exits cleanly; its measurement runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def test_without_a_gpu_it_prints_json_saying_so_and_exits_0() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gpu"] is False and "no CUDA device" in result["reason"]


@pytest.mark.slow
def test_the_measurement_runs_the_training_step_on_the_cpu() -> None:
    done = _run("--device", "cpu", "--tokenizer-preset", "debug", "--steps", "2", "--warmup", "1", "--batch", "2",
                "model.preset=debug", "data.max_tokens=64", "data.text_batch_size=1", "data.text_seq_len=32")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["precision"] == "fp32" and result["micro_batch_size"] == 2
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1 and 0 <= result["data_wait_frac"] < 1
