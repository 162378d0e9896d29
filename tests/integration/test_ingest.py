"""Ingest (issue 11): Ray Data moves shard rows from S3 and the worker lays them out (``Stage.torch_batches``).

What a stage's ``train_step`` receives must be what the previous path gave (the layout as a ``map_batches`` step
over Ray Data's default Parquet reader, then ``iter_torch_batches``), and the shuffled order must stay a pure
function of the seed, so that the trainer's fast-forward after a resume lands on the same micro-batches.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from neurolm.data.layout import make_layout_fn
from neurolm.runtime import read_shards, shard_paths
from neurolm.train.ingest import torch_batches

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BATCH = 2


def _previous_path(uri: str, transform):
    """The path before issue 11: Ray Data's default Parquet reader + the layout as a map_batches step."""
    import ray.data

    fs, paths = shard_paths(uri)
    return ray.data.read_parquet(paths, filesystem=fs, shuffle=None).map_batches(
        transform, batch_format="pyarrow"
    )


def _ordered(ds):
    ds.context.execution_options.preserve_order = True  # as DataConfig(execution_options=...) in fit_stage
    return ds


def _numpy(batches) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy().copy() for k, v in b.items()} for b in batches]


def _sample_digests(batches: list[dict[str, np.ndarray]]) -> list[str]:
    """One digest per sample over every array the model gets."""
    out = []
    for b in batches:
        for i in range(len(b["x"])):
            h = hashlib.sha256()
            for k in sorted(b):
                h.update(k.encode() + np.ascontiguousarray(b[k][i]).tobytes())
            out.append(h.hexdigest())
    return out


@pytest.mark.parametrize("targets", [False, True], ids=["pretrain", "tokenizer"])
def test_worker_layout_gives_the_previous_batches(eeg_shards: dict[str, str], targets: bool) -> None:
    uri = eeg_shards["mmidb_train"]
    transform = make_layout_fn(1024, targets=targets, keep=(), truncate=True)  # Pretrain/TokenizerStage's
    before = _numpy(
        _ordered(_previous_path(uri, transform)).iter_torch_batches(batch_size=BATCH, drop_last=True)
    )
    after = _numpy(torch_batches(_ordered(read_shards(uri)), transform, batch_size=BATCH, drop_last=True))
    assert len(before) == len(after) >= 4
    for old, new in zip(before, after, strict=True):  # in order, batch by batch, bit for bit
        assert sorted(old) == sorted(new)
        for k in old:
            assert old[k].dtype == new[k].dtype and old[k].shape == new[k].shape, k
            np.testing.assert_array_equal(old[k], new[k], err_msg=k)
    assert after[0]["x"].dtype == np.float32 and after[0]["input_mask"].any()

    # Shuffled: as many batches, each sample laid out identically (which rows the dropped last partial batch
    # would have held depends on the permutation, so: every shuffled sample is one of the epoch's samples).
    shuffled = dict(batch_size=BATCH, drop_last=True, local_shuffle_buffer_size=6, local_shuffle_seed=7)
    old_shuffled = _numpy(_ordered(_previous_path(uri, transform)).iter_torch_batches(**shuffled))
    new_shuffled = _numpy(torch_batches(_ordered(read_shards(uri)), transform, **shuffled))
    every = Counter(
        _sample_digests(_numpy(_ordered(_previous_path(uri, transform)).iter_torch_batches(batch_size=1)))
    )
    assert len(new_shuffled) == len(old_shuffled)
    assert not Counter(_sample_digests(new_shuffled)) - every
    assert not Counter(_sample_digests(old_shuffled)) - every


def test_shuffled_order_is_a_function_of_the_seed_and_resumes(eeg_shards: dict[str, str]) -> None:
    """Two passes with one seed give the same micro-batches; skipping k of them (the trainer's fast-forward after
    a resume) gives the rest of the same sequence; another seed gives another order."""
    ds = _ordered(read_shards(eeg_shards["mmidb_train"]))
    transform = make_layout_fn(1024, targets=False, keep=(), truncate=True)

    def epoch(seed: int, skip: int = 0) -> list[dict[str, np.ndarray]]:
        it = iter(torch_batches(ds, transform, batch_size=BATCH, drop_last=True, local_shuffle_buffer_size=6,
                                local_shuffle_seed=seed, prefetch_batches=2))  # fmt: skip
        for _ in range(skip):
            next(it)
        return _numpy(it)

    first, again, resumed, other = epoch(3), epoch(3), epoch(3, skip=3), epoch(4)
    assert len(first) == len(again) > 3
    assert _sample_digests(first) == _sample_digests(again)
    assert _sample_digests(resumed) == _sample_digests(first[3:])
    assert _sample_digests(other) != _sample_digests(first)
    assert all(isinstance(v, np.ndarray) for v in first[0].values())
    assert torch.from_numpy(first[0]["x"]).dtype == torch.float32


def test_local_shards_read_memory_mapped_give_the_same_batches(eeg_shards: dict[str, str], tmp_path) -> None:
    """The same shards copied to a local directory (read through memory maps, ``neurolm.storage.resolve``) reach
    the worker exactly as from S3, in order and shuffled."""
    from neurolm import storage

    uri = eeg_shards["mmidb_train"]
    local = str(tmp_path / "train")
    for f in storage.list_files(uri, suffix=".parquet"):
        storage.write_bytes(storage.join(local, f[len(uri) :].lstrip("/")), storage.read_bytes(f))
    fs, _ = shard_paths(local)
    assert fs.equals(pafs.LocalFileSystem(use_mmap=True))
    transform = make_layout_fn(1024, targets=False, keep=(), truncate=True)
    for kwargs in ({}, {"local_shuffle_buffer_size": 6, "local_shuffle_seed": 5}):
        s3, mapped = (
            _numpy(torch_batches(_ordered(read_shards(u)), transform, batch_size=BATCH, drop_last=True, **kwargs))
            for u in (uri, local)
        )
        assert len(s3) == len(mapped) >= 4
        assert _sample_digests(s3) == _sample_digests(mapped)
