"""Ray Train elastic scaling across nodes: a pre-training run with one worker per node (2 of each node's 3 logical
CPUs, the third for its data tasks) loses a node, continues on 1 worker from the last checkpoint (2 -> 1), gets the
node back and grows to 2 workers again (1 -> 2) — and still sees every sample of its epoch once, step by step the
samples of an uninterrupted run, and ends with its weights."""

from __future__ import annotations

import time

import pytest
import torch

from neurolm import storage
from neurolm.config import PretrainJobConfig, load_config
from neurolm.data.shards import count_rows
from neurolm.train.checkpoint import TrainState

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]

MICRO = 8


def _cfg(eeg_shards, text_shards, s3_uri, tokenizer: str, name: str, *overrides: str) -> PretrainJobConfig:
    return load_config(PretrainJobConfig, "configs/pretrain/debug.yaml", [
        f"data.train=[{eeg_shards['mmidb_train']},{eeg_shards['scp1_train']}]", f"data.text={text_shards}",
        "data.text_seq_len=64", f"tokenizer={tokenizer}", f"run.storage_path={storage.join(s3_uri, 'multinode-runs')}",
        f"run.name={name}", "run.wandb=false", "train.max_steps=null", "train.epochs=1", "train.checkpoint_every=2",
        "train.log_every=1", f"train.micro_batch_size={MICRO}", "deepspeed.zero_stage=2", "train.record_samples=true",
        "scaling.num_workers=2", "scaling.min_workers=1", "scaling.cpus_per_worker=2", "scaling.resize_check_s=5",
        "scaling.placement_strategy=SPREAD", "run.max_failures=4", *overrides,
    ])  # fmt: skip


def _world_sizes(cfg) -> dict[int, int]:
    """Checkpoint step -> the number of workers that wrote it."""
    run = storage.join(cfg.run.storage_path, cfg.run.name)
    out = {}
    for f in storage.list_files(run, suffix="/state.json"):
        state = TrainState.from_json(storage.read_text(f))
        out[state.step] = state.world_size
    return out


@pytest.mark.timeout(3600)
def test_a_run_shrinks_to_one_node_and_grows_back_without_losing_or_repeating_samples(
    multinode_cluster, mn, eeg_shards, text_shards, s3_uri
) -> None:  # fmt: skip
    from neurolm.models.io import save_pretrained
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
    from neurolm.train.launch import fit_stage
    from neurolm.train.loop import sample_ledger

    torch.manual_seed(0)
    tokenizer = save_pretrained(NeuralTokenizer(TokenizerConfig.preset("tiny", kmeans_init=False)),
                                storage.join(s3_uri, "multinode-elastic-tokenizer"))  # fmt: skip
    rows = count_rows(eeg_shards["mmidb_train"]) + count_rows(eeg_shards["scp1_train"])
    steps = rows // (2 * MICRO)
    tag = int(time.time())
    whole_cfg = _cfg(eeg_shards, text_shards, s3_uri, tokenizer, f"elastic-whole-{tag}")
    whole = fit_stage(whole_cfg)
    reference = sample_ledger(storage.join(whole_cfg.run.storage_path, whole_cfg.run.name))
    assert set(_world_sizes(whole_cfg).values()) == {2}

    cfg = _cfg(eeg_shards, text_shards, s3_uri, tokenizer, f"elastic-nodes-{tag}")
    thread, out = mn.in_thread(lambda: fit_stage(cfg))
    try:
        mn.wait_for_checkpoint(cfg, 4, thread)  # step 2's checkpoint is registered once step 4's files appear
        assert multinode_cluster.kill_node("127.0.0.3")
        # One node left: the group restarts with 1 worker from the last checkpoint and writes checkpoints alone.
        deadline = time.monotonic() + 1200
        while 1 not in _world_sizes(cfg).values():
            assert thread.is_alive(), out.get("error")
            assert time.monotonic() < deadline, "no checkpoint written by a single worker after the node loss"
            time.sleep(1.0)
    finally:
        multinode_cluster.add_node("127.0.0.3")  # the node comes back: the run grows to 2 workers again
    thread.join(timeout=1800)
    assert not thread.is_alive(), "the run did not finish"
    assert "error" not in out, out.get("error")
    done = out["result"]
    sizes = _world_sizes(cfg)
    final = TrainState.from_json(storage.read_text(storage.join(done.checkpoint, "state.json")))
    assert final.step == steps and final.resumes >= 2, (final, sizes)
    assert final.world_size == 2, sizes  # shrank (seen above), then grew back

    ledger = sample_ledger(storage.join(cfg.run.storage_path, cfg.run.name))
    assert sorted(ledger) == list(range(1, steps + 1))
    seen = [k for s in sorted(ledger) for k in ledger[s]]
    assert len(seen) == len(set(seen)) == steps * 2 * MICRO  # nothing twice, nothing skipped
    for s in reference:
        assert sorted(ledger[s]) == sorted(reference[s]), f"step {s} saw other samples than the uninterrupted run"
    worst = mn.max_abs_diff(mn.weights(whole.export_dir), mn.weights(done.export_dir))
    assert worst < 1e-4, f"weights after shrinking and growing differ from the uninterrupted run by {worst}"
