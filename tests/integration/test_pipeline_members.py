"""A seed ensemble whose members train side by side (``members_at_once``): the demo pipeline on real EEG (PhysioNet
S001R02 + SelfRegulationSCP1) with two seeds at once on the session's Ray instance and S3 server. Both members'
stages run at the same time, each member's runs and exports are its own, and the ensemble is evaluated."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from neurolm import storage
from neurolm.config import load_config

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_two_members_train_side_by_side_and_are_evaluated_as_an_ensemble(ray_cluster, tmp_path, monkeypatch):
    import neurolm.train.launch as launch
    from neurolm.pipeline import PipelineConfig, run_pipeline
    from neurolm.progress import Console

    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    real_fit_stage = launch.fit_stage

    def timed_fit_stage(cfg, *args, **kwargs):  # the real stage, with its start and end recorded
        t0 = time.monotonic()
        result = real_fit_stage(cfg, *args, **kwargs)
        with lock:
            spans[cfg.run.name] = (t0, time.monotonic())
        return result

    monkeypatch.setattr(launch, "fit_stage", timed_fit_stage)
    one_worker = "[scaling.num_workers=1,train.max_steps=4,train.log_every=2,train.checkpoint_every=4]"
    cfg = load_config(PipelineConfig, REPO / "configs" / "pipeline" / "demo.yaml", [
        "workdir=s3://neurolm/members", f"results_dir={tmp_path / 'results'}", "seeds=[1,2]", "members_at_once=2",
        # The session's Ray instance has 2 CPUs: one 0.5-CPU Train worker per run leaves CPUs for Ray Data's reads.
        f"tokenizer.overrides={one_worker}", f"pretrain.overrides={one_worker}",
        "instruct.overrides=[scaling.cpus_per_worker=0.5,train.max_steps=20,train.eval_every=20,"
        "train.checkpoint_every=20,train.log_every=10]",
    ])  # fmt: skip
    out = run_pipeline(cfg, Console(verbose=True))

    assert list(out["members"]) == ["1", "2"]
    # What the workdir holds at the end (the console says it beside `neurolm runs rm`).
    assert out["workdir_bytes"] == sum(n for _, n in storage.list_file_sizes("s3://neurolm/members")) > 0
    for seed in ("1", "2"):
        for stage in ("tokenizer", "pretrain", "instruct"):
            export = out["members"][seed][stage]["export_dir"]
            assert f"demo-s{seed}-{stage}" in export and storage.exists(storage.join(export, "model.safetensors"))
    # Side by side: each stage of one member overlaps the same stage of the other.
    for stage in ("tokenizer", "pretrain", "instruct"):
        (a0, a1), (b0, b1) = spans[f"demo-s1-{stage}"], spans[f"demo-s2-{stage}"]
        assert a0 < b1 and b0 < a1, (stage, spans)
    report = json.loads(storage.read_text("s3://neurolm/members/eval/metrics.json"))
    scp1 = report["tasks"]["test/SelfRegulationSCP1"]
    assert [m["checkpoint"] for m in scp1["members"]] == [
        out["members"][s]["instruct"]["export_dir"] for s in ("1", "2")
    ]
    assert 0.0 <= scp1["metrics"]["balanced_accuracy"] <= 1.0 and scp1["metrics"]["n"] == 293
