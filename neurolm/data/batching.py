"""Micro-batches of shard rows from a stream of blocks, through a seeded local shuffle buffer, without copying rows.

Ray Data's own local shuffle (``iter_batches(local_shuffle_buffer_size=...)``) concatenates its buffer into one
Arrow table every time it refills (``combine_chunks``: a copy of every buffered ~800 KB signal) and copies each
batch out of it again (``take``); on the ingest path that was over half of a Train worker's CPU (issue 11). Here
the buffer holds references to rows of the blocks it was given (per-row views on their Arrow buffers, from
:func:`neurolm.data.layout.shard_columns`), and a batch is a dict of those views: the layout function that takes
it writes each sample once, into the model's arrays.

The order is a pure function of the seed and of the sequence of blocks (deterministic under Ray Data's
``preserve_order``), so skipping the first k batches of a pass (the trainer's fast-forward after a resume) gives the
rest of the same sequence. Pure: no Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from neurolm.data.layout import shard_columns

__all__ = ["shuffled_row_batches"]


def _gather(blocks: list[Any], rows: list[tuple[int, int]]) -> dict[str, Any]:
    """The columns of ``rows`` (block index, row index) as one batch: lists of per-row objects, numpy arrays."""
    first = blocks[rows[0][0]]
    batch: dict[str, Any] = {}
    for name, column in first.items():
        if column is None:
            batch[name] = None
        elif isinstance(column, list):
            batch[name] = [blocks[b][name][r] for b, r in rows]
        else:
            batch[name] = np.array([blocks[b][name][r] for b, r in rows], dtype=column.dtype)
    return batch


def _detached(columns: dict[str, Any]) -> dict[str, Any]:
    """``columns`` with every array copied out of the block it views, one array per row.

    A row view keeps its whole block alive, and a block that came through Ray's object store stays pinned there
    while any view of it lives. Rows drawn at random from a shuffle buffer leave each block's last rows behind for
    many draws (a 38-row block of a 64-row buffer stays pinned ~4x longer than it takes to buffer it), so the
    store holds several blocks per worker that Ray Data counts as consumed: with 30 MB blocks, a 2-worker run
    on a 477 MB store spilled to disk and fell from ~500 to ~60 samples/s (docs/platform.md, "Ingest"). Copied
    rows release the block as soon as it is buffered, and each row's memory goes when the row is drawn."""
    out: dict[str, Any] = {}
    for name, column in columns.items():
        if isinstance(column, list):
            out[name] = [np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in column]
        elif isinstance(column, np.ndarray):
            out[name] = column.copy()
        else:
            out[name] = column
    return out


def shuffled_row_batches(
    blocks: Iterable[Any],
    batch_size: int,
    *,
    shuffle_buffer: int | None = None,
    seed: int | None = None,
    drop_last: bool = True,
) -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` shard rows from ``blocks`` (``pyarrow.Table`` or numpy dicts of shard rows).

    Without ``shuffle_buffer``: in order. With it: once at least ``max(shuffle_buffer, batch_size)`` rows are
    buffered, each batch draws ``batch_size`` of them uniformly at random (``numpy.random.default_rng(seed)``);
    at the end the buffer drains the same way. A last short batch is dropped with ``drop_last``. Each batch is
    what :func:`neurolm.data.layout.make_layout_fn`'s functions take: ``signal`` and ``channels`` as lists of
    per-row arrays (views), ``n_channels``, ``n_seconds`` (and ``label`` when present) as numpy arrays.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed) if shuffle_buffer else None
    fill = max(shuffle_buffer or 0, batch_size)
    decoded: list[dict[str, Any] | None] = []  # blocks of this pass; rows refer to them by index
    left: list[int] = []  # rows of each block still buffered: a block is let go (None) when it reaches 0
    buffer: list[tuple[int, int]] = []

    def batch(rows: list[tuple[int, int]]) -> dict[str, Any]:
        out = _gather(decoded, rows)
        for b, _ in rows:
            left[b] -= 1
            if not left[b]:
                decoded[b] = None  # its Arrow buffers (in Ray's object store) can be freed
        return out

    def draw() -> list[tuple[int, int]]:
        if rng is None:
            taken = buffer[:batch_size]
            del buffer[:batch_size]
            return taken
        taken = []
        for _ in range(min(batch_size, len(buffer))):  # swap-remove a uniformly drawn row
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            taken.append(buffer.pop())
        return taken

    for block in blocks:
        columns = shard_columns(block)
        if rng is not None:  # rows outlive their block in the buffer: hold copies, not views (see _detached)
            columns = _detached(columns)
        n = len(columns["signal"])
        if not n:
            continue
        decoded.append(columns)
        left.append(n)
        buffer.extend((len(decoded) - 1, r) for r in range(n))
        while len(buffer) >= fill:
            yield batch(draw())
    while len(buffer) >= batch_size:
        yield batch(draw())
    if buffer and not drop_last:
        yield batch(draw())
