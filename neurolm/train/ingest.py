"""How shard rows reach a training step (issue 11): Ray Data moves the compact shard rows, the worker lays them out.

The stage's layout (:meth:`neurolm.train.stage.Stage.batch_transform`, a pure function on Arrow or numpy batches)
used to run as a ``map_batches`` step inside the Ray Data pipeline. There it produced a new ~800 KB Arrow tensor
row per 1024-token sample, which Ray Data stored, split and re-collated on the worker, whose local shuffle then
concatenated and copied its buffer again. Now the pipeline is ``read_parquet`` → ``streaming_split`` (no task but
the read; :func:`neurolm.runtime.read_shards`), the worker takes whole blocks without a copy, draws micro-batches
of row views through its own seeded shuffle buffer (:mod:`neurolm.data.batching`) and lays each out straight into
the arrays that become the batch's tensors (``torch.from_numpy``, no copy). Each sample is copied once (twice with a shuffle buffer, which holds copies: :mod:`neurolm.data.batching`).

Every sample reaches the model bit for bit as before; the shuffled order is another permutation, still a pure
function of the seed and the (ordered) block sequence, so the trainer's fast-forward after a resume skips the
same micro-batches (tests/integration/test_ingest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from neurolm.data.batching import shuffled_row_batches
from neurolm.runtime.memory import keep_freed_memory

__all__ = ["torch_batches"]


def torch_batches(
    shard: Any,
    transform: Callable[[Any], dict[str, np.ndarray]] | None,
    *,
    batch_size: int,
    drop_last: bool = True,
    local_shuffle_buffer_size: int | None = None,
    local_shuffle_seed: int | None = None,
    prefetch_batches: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """A worker's torch batches from its dataset shard (a Ray ``DataIterator``).

    With ``transform``, the shard holds shard rows: Ray Data hands over whole blocks (``batch_size=None``, no
    copy; one block fetched ahead unless ``prefetch_batches`` is 0: a block holds many micro-batches, and every
    block a worker holds sits in its node's object store beside Ray Data's own budget, which does not count it),
    :func:`neurolm.data.batching.shuffled_row_batches` draws micro-batches of rows through the seeded local
    shuffle buffer (which holds copies, so that each block is let go once buffered), and ``transform`` lays each out into the
    arrays that become the batch's tensors (``torch.from_numpy``, no copy). Without, the rows are the inputs
    (Ray Data's own batching and shuffle)."""
    if transform is None:
        yield from shard.iter_torch_batches(
            batch_size=batch_size,
            drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
            prefetch_batches=prefetch_batches,
        )
        return
    keep_freed_memory()
    blocks = shard.iter_batches(
        batch_size=None, batch_format="pyarrow", prefetch_batches=min(prefetch_batches, 1)
    )
    rows = shuffled_row_batches(
        blocks,
        batch_size,
        shuffle_buffer=local_shuffle_buffer_size,
        seed=local_shuffle_seed,
        drop_last=drop_last,
    )
    for batch in rows:
        yield {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in transform(batch).items()}
