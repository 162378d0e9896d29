"""How shard rows reach a training step (issue 11): Ray Data moves the compact shard rows, the worker lays them out.

The stage's layout (:meth:`neurolm.train.stage.Stage.batch_transform`, a pure function on Arrow or numpy batches)
used to run as a ``map_batches`` step inside the Ray Data pipeline. There it produced ~800 KB of float32 patches
per 1024-token sample as a new Arrow tensor block, which Ray Data serialised into the object store, handed through
``streaming_split`` and turned back into torch tensors on the worker; on 2 cores that pipeline moved ~5x fewer
samples per second than the same layout in one process. Now the pipeline is ``read_parquet`` →
``streaming_split`` (no task besides the read), and the layout runs on the worker as the ``collate_fn`` of
``iter_torch_batches``: in Ray Data's prefetch threads, on the Arrow batch whose signal bytes it reads in place,
straight into the arrays that become the batch's tensors (``torch.from_numpy``, no copy).

The batches are the same: local shuffling permutes rows, and a shard row and its laid-out row are one row, so
the same seed draws the same samples into the same micro-batches, and the trainer's fast-forward after a resume
skips the same ones (tests/integration/test_ingest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

__all__ = ["LayoutCollate", "torch_batches"]


class LayoutCollate(ArrowBatchCollateFn):
    """``iter_torch_batches(collate_fn=...)``: a batch of shard rows (``pyarrow.Table``) → the stage's layout as
    CPU tensors sharing the layout's arrays. Ray Data calls it in its format threads and moves the result to the
    worker's device afterwards (``device``/``pin_memory`` of ``iter_torch_batches``)."""

    def __init__(self, transform: Callable[[pa.Table], dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.transform = transform

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in self.transform(batch).items()}


def torch_batches(
    shard: Any,
    transform: Callable[[pa.Table], dict[str, np.ndarray]] | None,
    *,
    batch_size: int,
    drop_last: bool = True,
    local_shuffle_buffer_size: int | None = None,
    local_shuffle_seed: int | None = None,
    prefetch_batches: int = 1,
) -> Iterable[dict[str, torch.Tensor]]:
    """A worker's torch batches from its dataset shard (a Ray ``DataIterator``): with ``transform``, the shard holds
    raw shard rows and each batch is laid out here (:class:`LayoutCollate`); without, the rows are the inputs."""
    collate = None if transform is None else LayoutCollate(transform)
    return shard.iter_torch_batches(
        batch_size=batch_size,
        drop_last=drop_last,
        local_shuffle_buffer_size=local_shuffle_buffer_size,
        local_shuffle_seed=local_shuffle_seed,
        prefetch_batches=prefetch_batches,
        collate_fn=collate,
    )
