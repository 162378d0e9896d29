"""Micro-batches of shard rows through the worker's seeded shuffle buffer (neurolm.data.batching), without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from neurolm.data.batching import shuffled_row_batches
from neurolm.data.layout import make_layout_fn
from neurolm.data.readers.base import RecordingSamples, RecordingTask
from neurolm.data.shards import samples_to_table

TASK = RecordingTask("tuab", "tuab", "train/normal/01_tcp_ar/x_s001_t000", ("/x.edf",), "x", "train", 0)


def _table(n: int, channels: int = 3, seconds: int = 2, seed: int = 0, version: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    samples = RecordingSamples(
        signals=rng.standard_normal((n, channels, seconds * 200)).astype(np.float32),
        start_s=np.arange(n) * float(seconds),
        labels=np.arange(n),  # the row's index: tells the rows apart
        splits=["train"] * n,
        channel_indices=np.arange(channels, dtype=np.int16) + 10,
        channel_names=tuple(f"c{i}" for i in range(channels)),
        source_sfreq=256.0,
        source_seconds=n * seconds,
    )
    return samples_to_table(TASK, samples, version=version)


def _blocks(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    starts = np.cumsum([0, *sizes])
    return [table.slice(int(a), int(b - a)) for a, b in zip(starts[:-1], starts[1:], strict=True)]


@pytest.mark.parametrize("version", [1, 2])
def test_unshuffled_batches_are_the_rows_in_order_laid_out_as_one_table(version: int) -> None:
    table = _table(23, version=version)
    layout = make_layout_fn(16, targets=True, keep=("label",))
    batches = list(shuffled_row_batches(_blocks(table, [5, 0, 11, 7]), 4))
    assert len(batches) == 5  # 23 rows: the short last batch is dropped
    for i, batch in enumerate(batches):
        expected, got = layout(table.slice(4 * i, 4)), layout(batch)
        assert sorted(expected) == sorted(got)
        for k in expected:
            assert expected[k].dtype == got[k].dtype
            np.testing.assert_array_equal(expected[k], got[k], err_msg=k)
    rows = list(shuffled_row_batches(_blocks(table, [23]), 4, drop_last=False))
    assert [len(b["signal"]) for b in rows] == [4, 4, 4, 4, 4, 3]


def test_shuffle_draws_every_row_once_in_an_order_fixed_by_the_seed() -> None:
    table = _table(40)
    blocks = _blocks(table, [7, 13, 20])

    def order(seed: int, blocks=blocks) -> list[int]:
        return [
            int(x) for b in shuffled_row_batches(blocks, 4, shuffle_buffer=12, seed=seed) for x in b["label"]
        ]

    first = order(5)
    assert sorted(first) == list(range(40))
    assert first == order(5)  # a resumed pass replays it: skipping k batches skips the same rows
    assert first != order(6) and first != list(range(40))
    # The same rows cut into other blocks are another stream; the order depends on the block sequence too,
    # which Ray Data's preserve_order keeps fixed from epoch to epoch.
    assert sorted(order(5, _blocks(table, [40]))) == list(range(40))
    # Batches start once 12 rows are buffered, i.e. after the second block (rows 0-19): a row comes out only after
    # its block arrived.
    assert max(first[:4]) < 20


def test_rows_are_views_on_the_block_buffers() -> None:
    table = _table(6)
    (batch,) = list(shuffled_row_batches([table], 6))
    data = np.frombuffer(table.column("signal").chunk(0).buffers()[2], dtype=np.uint8)
    for row in batch["signal"]:
        assert np.shares_memory(row, data)


def test_shuffled_rows_hold_copies_so_each_block_is_let_go_when_buffered() -> None:
    # Rows drawn at random outlive their block; a view would keep the whole block (in Ray: pinned in the object
    # store) alive. Shuffled batches hold copies with the same values; in-order batches stay views.
    table = _table(12)
    source = [np.frombuffer(buf, dtype=np.uint8) for buf in table.column("signal").chunk(0).buffers() if buf]

    def shares(batch: dict) -> bool:
        return any(np.shares_memory(row, src) for row in batch["signal"] for src in source)

    shuffled = list(shuffled_row_batches([table], 4, shuffle_buffer=8, seed=0))
    assert shuffled and not any(shares(b) for b in shuffled)
    ordered = list(shuffled_row_batches([table], 4))
    assert all(shares(b) for b in ordered)
    layout = make_layout_fn(16, targets=False, keep=("label",))
    for batch in shuffled:
        rows = [int(x) for x in batch["label"]]
        expected = layout(table.take(rows))
        got = layout(batch)
        for k in expected:
            np.testing.assert_array_equal(expected[k], got[k], err_msg=k)
