"""Ray Train + DeepSpeed on 2 CPU workers, data and checkpoints on the local S3 server: exact resume and
recovery from a killed worker. (Every stage end to end, ZeRO 0/2/3, runs in test_job_submit.py.)"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from neurolm import storage
from neurolm.config import TokenizerJobConfig, load_config
from neurolm.models.io import load_pretrained
from neurolm.train.checkpoint import TrainState

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]

PRESET = "configs/tokenizer/debug.yaml"


def _tokenizer_cfg(eeg_shards: dict[str, str], text_shards: str, s3_uri: str, name: str, *overrides: str):
    return load_config(TokenizerJobConfig, PRESET, [
        f"data.train=[{eeg_shards['mmidb_train']},{eeg_shards['scp1_train']}]",
        f"data.text={text_shards}", "data.text_seq_len=64",
        f"run.storage_path={storage.join(s3_uri, 'runs')}", f"run.name={name}", "run.wandb=false",
        *overrides,
    ])


def _history(cfg) -> list[dict]:
    text = storage.read_text(storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl"))
    return [json.loads(line) for line in text.splitlines()]


def _state(checkpoint_uri: str) -> TrainState:
    return TrainState.from_json(storage.read_text(storage.join(checkpoint_uri, "state.json")))


def _weights(export_dir: str) -> dict[str, torch.Tensor]:
    return load_pretrained(export_dir).state_dict()


def test_stopped_run_resumes_at_next_step_and_matches_uninterrupted(eeg_shards, text_shards, s3_uri) -> None:
    from neurolm.train.launch import fit_stage

    common = ("train.max_steps=6", "train.checkpoint_every=2", "train.log_every=1", "deepspeed.zero_stage=2")
    whole_cfg = _tokenizer_cfg(eeg_shards, text_shards, s3_uri, "resume-whole", *common)
    whole = fit_stage(whole_cfg)

    stopped_cfg = _tokenizer_cfg(eeg_shards, text_shards, s3_uri, "resume-split", *common, "train.stop_after_steps=3")
    first = fit_stage(stopped_cfg)
    assert first.metrics["step"] == 3
    resumed_cfg = _tokenizer_cfg(eeg_shards, text_shards, s3_uri, "resume-split", *common)
    second = fit_stage(resumed_cfg)

    # The first run ended with a checkpoint at step 3 (reported once, with its metrics); the rerun's first step
    # was 4.
    history = _history(resumed_cfg)
    assert [row["step"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert "train/loss" in history[2] and "train/lr" in history[2]
    state = _state(second.checkpoint)
    assert (state.step, state.resumes) == (6, 1)

    a, b = _weights(whole.export_dir), _weights(second.export_dir)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, f"resumed weights differ from the uninterrupted run by {worst}"
    # The loss history of the resumed run equals the uninterrupted one, step by step.
    whole_loss = {r["step"]: r["train/loss"] for r in _history(whole_cfg) if "train/loss" in r}
    split_loss = {r["step"]: r["train/loss"] for r in _history(resumed_cfg) if "train/loss" in r}
    for step in (4, 5, 6):
        assert split_loss[step] == pytest.approx(whole_loss[step], rel=1e-4, abs=1e-6)


def _train_worker_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, detail=True,
                         filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


def test_killed_worker_restarts_from_last_checkpoint_and_finishes(eeg_shards, text_shards, s3_uri) -> None:
    from neurolm.train.launch import fit_stage

    cfg = _tokenizer_cfg(eeg_shards, text_shards, s3_uri, "fault", "train.max_steps=24", "train.checkpoint_every=2",
                         "train.log_every=2", "run.max_failures=2", "deepspeed.zero_stage=2")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=fit_stage(cfg)), daemon=True)
    thread.start()
    # Once step 8's files exist, every rank has reported the checkpoints of steps 2-6 (reports are synchronous).
    # The controller registers a reported checkpoint a little later, asynchronously: under load (CI, 2 cores, a
    # step every ~0.8 s) a kill right after step 4's files once restarted from scratch. Several reports and a
    # pause later it has a complete checkpoint to restart from. (A kill before that restarts from scratch: a
    # checkpoint only some ranks wrote is never used.)
    later_ckpt = storage.join(cfg.run.storage_path, cfg.run.name, "step_0000008", "state.json")
    deadline = time.monotonic() + 300
    while not storage.exists(later_ckpt):
        assert time.monotonic() < deadline and thread.is_alive(), "no checkpoint appeared"
        time.sleep(0.2)
    time.sleep(2.0)
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    os.kill(pids[-1], signal.SIGKILL)  # a real worker process dies mid-run
    thread.join(timeout=600)
    assert not thread.is_alive()
    done = result["r"]
    assert done.metrics["step"] == 24
    state = _state(done.checkpoint)
    assert state.resumes >= 1 and state.step == 24


def test_zero_stages_train_the_same_weights(eeg_shards, text_shards, s3_uri) -> None:
    """ZeRO-3 partitions parameters, gradients and optimizer state; the math must not change (fp32)."""
    from neurolm.config import PretrainJobConfig
    from neurolm.models.io import save_pretrained
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
    from neurolm.train.launch import fit_stage

    torch.manual_seed(0)
    tokenizer = storage.join(s3_uri, "zero-test-tokenizer")
    save_pretrained(NeuralTokenizer(TokenizerConfig.preset("tiny", kmeans_init=False)), tokenizer)
    exports = {}
    for stage in (0, 3):
        cfg = load_config(PretrainJobConfig, "configs/pretrain/debug.yaml", [
            f"data.train=[{eeg_shards['mmidb_train']},{eeg_shards['scp1_train']}]", f"data.text={text_shards}",
            "data.text_seq_len=64", f"tokenizer={tokenizer}", f"run.storage_path={storage.join(s3_uri, 'runs')}",
            f"run.name=zero{stage}", "run.wandb=false", "train.max_steps=3", "train.checkpoint_every=3",
            f"deepspeed.zero_stage={stage}",
        ])
        exports[stage] = fit_stage(cfg).export_dir
    a, b = _weights(exports[0]), _weights(exports[3])
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, f"ZeRO-3 weights differ from ZeRO-0 by {worst}"
    frozen = load_pretrained(tokenizer).state_dict()
    encoder_keys = [k for k in a if k.startswith("encoder.")]
    assert encoder_keys and all(k in frozen for k in encoder_keys)
    assert all(torch.equal(a[k], frozen[k]) for k in encoder_keys)  # the frozen encoder did not train
