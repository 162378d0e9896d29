"""Whole shard files as Ray Data blocks (``neurolm.runtime.read_shards(files=True)``; issue 11, docs/platform.md §4).

A Ray Data ``Datasource`` of our own because the point is what the read task does not do: it reads each file of
its group whole (from a local file's memory map without a copy, or from S3 in one request through the retrying
file system of :mod:`neurolm.storage`) and hands the bytes to the object store, one copy; decoding the Parquet
happens on the Train worker that takes the block. The groups are those Ray Data's own Parquet reader makes for
the same number of read tasks (consecutive files, ``numpy.array_split``), so a block decodes to the rows the
default path's block holds, in the same order, and a shuffle seeded alike draws the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from neurolm.data.shards import FILE_COLUMN, PATH_COLUMN, shard_files_table

__all__ = ["ShardFiles"]

_SCHEMA = pa.schema([(PATH_COLUMN, pa.string()), (FILE_COLUMN, pa.large_binary())])


def _read_group(filesystem: Any, paths: list[str]) -> Iterator[pa.Table]:
    buffers = []
    for path in paths:
        with filesystem.open_input_file(path) as f:
            buffers.append(f.read_buffer())  # a memory-mapped file: a view of the mapping, which it keeps alive
    yield shard_files_table(paths, buffers)


class ShardFiles(Datasource):
    """``paths`` (sizes in bytes) on ``filesystem`` in ``num_tasks`` read tasks of consecutive files, one block
    each."""

    def __init__(self, filesystem: Any, paths: list[str], sizes: list[int], num_tasks: int) -> None:
        super().__init__()
        self._fs = filesystem
        self.groups = [list(map(int, g)) for g in np.array_split(np.arange(len(paths)), max(1, num_tasks)) if len(g)]
        self._paths, self._sizes = paths, sizes

    def estimate_inmemory_data_size(self) -> int:
        return int(sum(self._sizes))

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        # One task per group whatever ``parallelism`` asks: the groups fix the block sequence, and with it the
        # shuffled order that an exact resume replays.
        tasks = []
        for group in self.groups:
            paths = [self._paths[i] for i in group]
            meta = BlockMetadata(num_rows=len(paths), size_bytes=int(sum(self._sizes[i] for i in group)),
                                 input_files=paths, exec_stats=None)  # fmt: skip
            tasks.append(ReadTask(functools.partial(_read_group, self._fs, paths), meta, schema=_SCHEMA))
        return tasks
