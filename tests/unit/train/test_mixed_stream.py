"""The stage-3 task mixture stream: one task per micro-batch, deterministic, resumable, cycling short tasks."""

from __future__ import annotations

from collections import Counter

import numpy as np

from neurolm.data.mixture import TaskSchedule
from neurolm.train.stages.instruct import MixedTaskStream, _RowStream


class FakeShard:
    """Stands in for a Ray Data shard: ``iter_batches`` over rows whose ``id`` tells task and index."""

    def __init__(self, n: int, offset: int) -> None:
        self.n, self.offset = n, offset
        self.reads = 0

    def iter_batches(self, batch_size, batch_format, local_shuffle_buffer_size=None, local_shuffle_seed=None):
        self.reads += 1
        for start in range(0, self.n, batch_size):
            idx = np.arange(start, min(start + batch_size, self.n))
            yield {"id": idx + self.offset, "label": np.zeros(len(idx), dtype=np.int64)}


SIZES = {"big": 100, "tiny": 10}


def _stream(micro_batch: int, weights: dict[str, float]) -> MixedTaskStream:
    shards = {"big": FakeShard(100, 0), "tiny": FakeShard(10, 1000)}
    return MixedTaskStream(shards, TaskSchedule(weights, 16, seed=3), 8, micro_batch, shuffle_seed=0,
                           shuffle_buffer=0)


def _task(batch) -> str:
    ids = batch["id"].numpy()
    assert (ids >= 1000).all() or (ids < 1000).all(), "a micro-batch mixes tasks"
    return "tiny" if ids[0] >= 1000 else "big"


def test_resume_at_a_micro_batch_gives_the_same_batches() -> None:
    weights = {"big": 0.5, "tiny": 0.5}
    whole = _stream(0, weights)
    batches = [whole.next()["id"].tolist() for _ in range(10)]
    resumed = _stream(4, weights)
    assert [resumed.next()["id"].tolist() for _ in range(6)] == batches[4:]


def test_weights_set_the_share_of_batches_and_short_tasks_cycle() -> None:
    stream = _stream(0, {"big": 0.25, "tiny": 0.75})
    batches = [stream.next() for _ in range(16)]  # one mixture block: exact composition
    assert Counter(_task(b) for b in batches) == {"tiny": 12, "big": 4}
    tiny = [i - 1000 for b in batches if _task(b) == "tiny" for i in b["id"].tolist()]
    assert tiny[:30] == list(range(10)) * 3  # the 10-sample task cycles in order (no shuffle buffer)


def _passes(stream: _RowStream, n_rows: int, passes: int) -> list[np.ndarray]:
    return [np.concatenate([p["id"] for p in stream.take(n_rows)]) for _ in range(passes)]


def test_a_small_task_is_read_once_then_reshuffled_in_memory() -> None:
    shard = FakeShard(100, 0)
    order = _passes(_RowStream(shard, 64, seed=5, shuffle_buffer=0, cache_bytes=1 << 20), 100, 4)
    assert shard.reads == 1  # later passes come from the worker's memory, not a new Ray Data execution
    assert all(sorted(p.tolist()) == list(range(100)) for p in order)  # every pass is every row once
    assert len({tuple(p.tolist()) for p in order[1:]}) == 3  # a new permutation each pass
    again = _passes(_RowStream(FakeShard(100, 0), 64, seed=5, shuffle_buffer=0, cache_bytes=1 << 20), 100, 4)
    assert all((a == b).all() for a, b in zip(order, again, strict=True))  # seeded: resumable


def test_a_task_over_the_budget_streams_every_pass() -> None:
    shard = FakeShard(100, 0)
    order = _passes(_RowStream(shard, 64, seed=5, shuffle_buffer=0, cache_bytes=100), 100, 3)
    assert shard.reads == 3
    assert all(p.tolist() == list(range(100)) for p in order)
