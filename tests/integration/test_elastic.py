"""Elastic resume on Ray Train + DeepSpeed (ZeRO-2, 2 CPU workers, local S3): a pre-training run checkpointed by
2 workers continues on 1 and then on 2 again. The global batch is kept (fewer workers accumulate more),
every rank reads the epoch in one global order, so each optimizer step sees the samples of the uninterrupted run,
no sample of the epoch is seen twice or skipped, and the final weights equal the uninterrupted run's."""

from __future__ import annotations

import pytest
import torch

from neurolm import storage
from neurolm.config import PretrainJobConfig, load_config
from neurolm.data.layout import sample_keys
from neurolm.data.shards import count_rows, read_shards
from neurolm.models.io import load_pretrained
from neurolm.train.checkpoint import TrainState

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]

MICRO = 8
GLOBAL_MICRO = 2  # micro-batches per optimizer step: 2 workers x 1, or 1 worker x 2


@pytest.fixture(scope="module")
def tokenizer(s3_uri: str) -> str:
    from neurolm.models.io import save_pretrained
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig

    torch.manual_seed(0)
    return save_pretrained(NeuralTokenizer(TokenizerConfig.preset("tiny", kmeans_init=False)),
                           storage.join(s3_uri, "elastic-tokenizer"))  # fmt: skip


def _cfg(eeg_shards, text_shards, s3_uri, tokenizer, name: str, workers: int, *overrides: str) -> PretrainJobConfig:
    return load_config(PretrainJobConfig, "configs/pretrain/debug.yaml", [
        f"data.train=[{eeg_shards['mmidb_train']},{eeg_shards['scp1_train']}]", f"data.text={text_shards}",
        "data.text_seq_len=64", f"tokenizer={tokenizer}", f"run.storage_path={storage.join(s3_uri, 'runs')}",
        f"run.name={name}", "run.wandb=false", "train.max_steps=null", "train.epochs=1", "train.checkpoint_every=2",
        "train.log_every=1", f"train.micro_batch_size={MICRO}", "deepspeed.zero_stage=2", "train.record_samples=true",
        f"scaling.num_workers={workers}", "scaling.min_workers=1", f"train.grad_accum_steps={GLOBAL_MICRO // workers}",
        *overrides,
    ])  # fmt: skip


def _ledger(cfg) -> dict[int, list[int]]:
    from neurolm.train.loop import sample_ledger

    return sample_ledger(storage.join(cfg.run.storage_path, cfg.run.name))


def _weights(export_dir: str) -> dict[str, torch.Tensor]:
    return load_pretrained(export_dir).state_dict()


@pytest.mark.timeout(2400)
def test_runs_resume_on_another_number_of_workers_with_the_uninterrupted_samples_and_weights(
    eeg_shards, text_shards, s3_uri, tokenizer
) -> None:  # fmt: skip
    from neurolm.train.launch import fit_stage

    shards = [eeg_shards["mmidb_train"], eeg_shards["scp1_train"]]
    rows = sum(count_rows(u) for u in shards)
    steps = rows // (MICRO * GLOBAL_MICRO)
    assert steps >= 6, rows
    every_key = set(sample_keys([s for u in shards for s in read_shards(u).column("sample_id").to_pylist()]))
    assert len(every_key) == rows

    args = (eeg_shards, text_shards, s3_uri, tokenizer)
    whole_cfg = _cfg(*args, "elastic-whole", 2)
    whole = fit_stage(whole_cfg)
    reference = _ledger(whole_cfg)
    assert sorted(reference) == list(range(1, steps + 1))
    seen = [k for s in sorted(reference) for k in reference[s]]
    assert len(seen) == len(set(seen)) == steps * MICRO * GLOBAL_MICRO and set(seen) <= every_key

    # One run in three invocations: 2 workers, then 1 (2 -> 1), then 2 again (1 -> 2); each stops at a checkpoint.
    third = steps // 3 - (steps // 3) % 2  # even steps: checkpoints
    cfg = None
    for workers, stop in ((2, third), (1, 2 * third), (2, None)):
        cfg = _cfg(*args, "elastic-2-1-2", workers, *([f"train.stop_after_steps={stop}"] if stop else []))
        done = fit_stage(cfg)
        assert done.metrics["step"] == (stop or steps)
    state = TrainState.from_json(storage.read_text(storage.join(done.checkpoint, "state.json")))
    assert (state.step, state.resumes, state.world_size) == (steps, 2, 2)
    ledger = _ledger(cfg)
    # Every step took the uninterrupted run's samples (as a set: the ranks interleave them differently).
    assert sorted(ledger) == sorted(reference)
    for s in reference:
        assert sorted(ledger[s]) == sorted(reference[s]), f"step {s} saw other samples"
    a, b = _weights(whole.export_dir), _weights(done.export_dir)
    diffs = sorted(((float((a[k].float() - b[k].float()).abs().max()),
                     float((a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp_min(1e-12)), k)
                    for k in a), reverse=True)  # fmt: skip
    print("largest weight differences to the uninterrupted run (max abs, relative norm, tensor):", diffs[:5])
    worst = diffs[0][0]
    assert worst < 1e-4, f"weights differ from the uninterrupted run by {worst}"
