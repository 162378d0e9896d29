"""The README's cluster workflow for real: `ray start --head` (cluster/local/up.sh), `ray job submit` of the
whole pipeline (cluster/local/submit.sh), then checks of what it left on the S3 server, and `down.sh`.

The pipeline is `make demo`'s (configs/pipeline/demo.yaml: real EEG, every stage on DeepSpeed) with instruction
tuning cut to 40 steps: this test proves the cluster workflow, not the demo's accuracy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from neurolm import storage

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]


def _exports(text: str) -> dict[str, str]:
    """``KEY=value`` of the ``export KEY=value`` lines of a shell snippet."""
    return {
        line.removeprefix("export ").partition("=")[0]: line.partition("=")[2]
        for line in text.splitlines() if line.startswith("export ")
    }


def _losses(history_uri: str, key: str) -> list[float]:
    rows = [json.loads(line) for line in storage.read_text(history_uri).splitlines()]
    return [r[key] for r in rows if key in r]


def test_pipeline_submitted_to_a_local_head_leaves_exports_and_metrics_on_s3(tmp_path, monkeypatch) -> None:
    short = uuid.uuid4().hex[:6]
    env = dict(
        os.environ,
        NEUROLM_LOCAL_STATE=str(tmp_path / "state"),
        NEUROLM_CLUSTER_ENV=str(tmp_path / "cluster.env"),
        NEUROLM_S3_DIR=str(tmp_path / "s3"),
        NEUROLM_RAY_TEMP_DIR=f"/tmp/nlt-{short}",  # short: Ray's socket paths must stay < 107 chars
        NUM_CPUS="2",
        PYTHON=sys.executable,
    )
    env.pop("RAY_ADDRESS", None)
    up = subprocess.run(["bash", "cluster/local/up.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        cluster = _exports((tmp_path / "cluster.env").read_text())
        assert cluster["RAY_API_SERVER_ADDRESS"].startswith("http://127.0.0.1:")
        job = subprocess.run(
            ["bash", "cluster/local/submit.sh", "ray_jobs/pipeline.py", "--config", "configs/pipeline/demo.yaml",
             "workdir=s3://neurolm/submitted",
             "instruct.overrides=[train.max_steps=40,train.log_every=10,train.checkpoint_every=40,train.eval_every=40]"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
        )
        assert job.returncode == 0, job.stdout[-5000:] + job.stderr[-3000:]
        assert "succeeded" in (job.stdout + job.stderr)
    finally:
        down = subprocess.run(["bash", "cluster/local/down.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, cluster[key])
    server = subprocess.run([env["PYTHON"], "-m", "neurolm.runtime.s3server", "start", "--dir", env["NEUROLM_S3_DIR"]],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert server.returncode == 0, server.stderr
        for key, value in _exports(server.stdout).items():
            monkeypatch.setenv(key, value)  # the restarted server picks a new port; the data persisted
        runs = "s3://neurolm/submitted/runs"
        for stage in ("tokenizer", "pretrain", "instruct"):
            export = storage.join(runs, f"demo-{stage}", "export")
            assert storage.exists(storage.join(export, "model.safetensors")), export
            assert storage.exists(storage.join(export, "config.json"))

        # The instruction export records what its task's training data went through (for `neurolm predict`).
        meta = json.loads(storage.read_text(storage.join(runs, "demo-instruct", "export", "config.json")))
        trained = meta["extra"]["preprocessing"]["SelfRegulationSCP1"]
        assert (trained["corpus"], trained["dataset"], trained["h_freq"], trained["normalize"]) == (
            "ts", "SelfRegulationSCP1", 75.0, "none")

        def history(stage: str) -> str:
            return storage.join(runs, f"demo-{stage}", "metrics.jsonl")

        # The demo's tokenizer runs at lr 0 (configs/tokenizer/small-task.yaml: its weights stay at their
        # initialisation and only the k-means/EMA codebook fits), so its loss only moves with the batch: what it
        # must show is a fitted codebook in use, not a falling loss.
        assert set(_losses(history("tokenizer"), "train/lr")) == {0.0}
        usage = _losses(history("tokenizer"), "train/code_usage")
        assert len(usage) >= 2 and min(usage) > 16, usage
        assert all(math.isfinite(v) for v in _losses(history("tokenizer"), "train/loss"))
        for stage, loss_key in (("pretrain", "train/eeg_loss"), ("instruct", "train/answer_loss")):
            losses = _losses(history(stage), loss_key)
            assert len(losses) >= 2 and losses[-1] < losses[0], (stage, losses)
        summary = json.loads(storage.read_text("s3://neurolm/submitted/pipeline.json"))
        assert set(summary["stages"]) == {"tokenizer", "pretrain", "instruct"}
        # The evaluation: the model beside the linear baselines, and its margin over the best of them with the
        # paired bootstrap interval (issue 16).
        scp1 = json.loads(storage.read_text("s3://neurolm/submitted/eval/metrics.json"))["tasks"][
            "test/SelfRegulationSCP1"]
        best = max(scp1["baselines"], key=lambda k: scp1["baselines"][k].get("balanced_accuracy", -1))
        vs = scp1["vs_best_baseline"]
        assert vs["baseline"] == best and vs["low"] <= vs["diff"] <= vs["high"] and vs["n"] == scp1["metrics"]["n"]
        margin = scp1["metrics"]["balanced_accuracy"] - scp1["baselines"][best]["balanced_accuracy"]
        assert abs(vs["diff"] - margin) < 1e-9
    finally:
        subprocess.run([env["PYTHON"], "-m", "neurolm.runtime.s3server", "stop", "--dir", env["NEUROLM_S3_DIR"]],
                       cwd=REPO, env=env, timeout=60)

