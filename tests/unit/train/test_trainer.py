"""The shared trainer in one process without Ray: a real DeepSpeed engine (gloo, world size 1), a small real
stage, and a :class:`WorkerContext` whose report function keeps what the trainer publishes."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from neurolm.config import TokenizerJobConfig, load_config
from neurolm.train.checkpoint import TrainState
from neurolm.train.loop import Trainer
from neurolm.train.stage import Stage, StepOutput, WorkerContext

SLEEP_S = 0.6  # per micro-step: a lower bound on the wall time any flush must report


class RegressionStage(Stage):
    """Least squares on a fixed random problem; each micro-step takes at least ``SLEEP_S``."""

    name = "regression"

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(8, 1)

    def train_stream(
        self, ctx: WorkerContext, info: dict[str, Any], position: int, seed: int
    ) -> Iterator[dict]:
        g = torch.Generator().manual_seed(seed)
        while True:
            x = torch.randn(self.cfg.train.micro_batch_size, 8, generator=g)
            yield {"x": x, "y": x.sum(dim=1, keepdim=True)}

    def train_step(self, model, batch, text, progress) -> StepOutput:
        time.sleep(SLEEP_S)
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return StepOutput(loss=loss, metrics={"loss": float(loss.detach())}, tokens=int(batch["x"].numel()))

    def built_model_config(self, model: nn.Module) -> dict[str, Any]:
        return {"in": 8, "out": 1}

    def export(self, state_dict, out_dir, model_config) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Path(out_dir, "config.json").write_text(json.dumps(model_config))


def _run(tmp_path: Path, name: str, *overrides: str) -> tuple[list[dict[str, Any]], list[float], Path]:
    cfg = load_config(TokenizerJobConfig, "configs/tokenizer/debug.yaml", [
        f"data.train={tmp_path}", f"run.storage_path={tmp_path / 'runs'}", f"run.name={name}", "run.wandb=false",
        "deepspeed.zero_stage=0", "train.grad_accum_steps=2", "train.micro_batch_size=3", "train.max_steps=6",
        "train.log_every=2", "train.checkpoint_every=null", "scaling.num_workers=1", *overrides,
    ])  # fmt: skip
    reports: list[dict[str, Any]] = []
    times: list[float] = []
    saved = tmp_path / name / "checkpoints"

    def report(
        metrics: dict[str, Any], checkpoint_dir: str | None = None, ckpt_name: str | None = None
    ) -> None:
        reports.append(dict(metrics))
        times.append(time.perf_counter())
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, saved / str(ckpt_name))

    threads = torch.get_num_threads()  # the trainer sizes this process's thread pool like a worker's
    try:
        trainer = Trainer(RegressionStage(cfg), cfg, WorkerContext(report=report), steps_per_epoch=6)
        times.append(time.perf_counter())  # flushes measure from here (the start of fit)
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return reports, times[1:], saved


def test_a_stop_after_steps_flush_is_a_normal_flush(
    tmp_path: Path, process_group: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("neurolm.train.loop.peak_flops_per_device", lambda device: 1e9)
    reports, times, saved = _run(tmp_path, "stopped", "train.stop_after_steps=3")
    assert [r["step"] for r in reports] == [2, 3]  # step 2 by log_every; step 3 as the stop, once
    normal, stop = reports
    assert set(stop) == set(normal)  # the same metrics, no internals (_tokens/_samples) leaking out
    assert {"train/loss", "train/lr", "perf/samples_per_s", "perf/tokens_per_s", "perf/mfu"} <= set(stop)
    # MFU from the counted FLOPs of the first micro-step: Linear(8, 1) on 3 rows is 48 FLOPs forward and 48 for
    # the weight's gradient (the input needs none), over its 24 input values counted as tokens.
    for flush in reports:
        assert flush["perf/mfu"] == pytest.approx(96 / 24 * flush["perf/tokens_per_s"] / 1e9, rel=1e-9)
    # Real wall time: the stop flush covers one step (2 micro-steps of >= SLEEP_S each), and no more than the
    # time since the previous report.
    samples_per_flush = 3 * 2
    wall = samples_per_flush / stop["perf/samples_per_s"]
    assert 2 * SLEEP_S <= wall <= times[1] - times[0] + 0.05
    assert 4 * SLEEP_S <= 2 * samples_per_flush / normal["perf/samples_per_s"]
    # The stop step was checkpointed, with the sample and token counters of all three steps.
    state = TrainState.from_json((saved / "step_0000003" / "state.json").read_text())
    assert (state.step, state.samples, state.tokens) == (3, 3 * samples_per_flush, 3 * samples_per_flush * 8)
    assert state.model_config == {"in": 8, "out": 1}
    history = [
        json.loads(line)
        for line in (tmp_path / "runs" / "stopped" / "metrics.jsonl").read_text().splitlines()
    ]
    assert history == reports


def test_checkpoints_land_on_their_steps_whatever_the_log_cadence(
    tmp_path: Path, process_group: None
) -> None:
    reports, _, saved = _run(tmp_path, "cadence", "train.log_every=4", "train.checkpoint_every=3")
    assert [r["step"] for r in reports] == [3, 4, 6]
    assert sorted(p.name for p in saved.iterdir()) == ["step_0000003", "step_0000006"]
    assert all("train/loss" in r for r in reports)
