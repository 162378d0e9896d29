"""How shard files become Ray Data blocks (neurolm.runtime.read_tasks) and the worker's allocator setting
(neurolm.runtime.memory.keep_freed_memory, called by the worker's batch stream); the streams themselves: tests/integration/test_ingest.py."""

from __future__ import annotations

import ctypes

import pytest

from neurolm.config import DataSection
from neurolm.runtime import read_tasks
from neurolm.runtime.memory import keep_freed_memory

MB = 2**20


@pytest.mark.parametrize(
    ("sizes", "block", "tasks"),
    [
        ([30 * MB] * 40, None, 40),  # one block per file
        ([30 * MB] * 40, 64 * MB, 20),  # two 30 MB files per block
        ([30 * MB] * 41, 64 * MB, 21),  # the last block holds one file
        ([30 * MB] * 40, 16 * MB, 40),  # a file larger than the target is still one block
        ([1 * MB] * 10, 64 * MB, 1),  # small files: one block for all
        ([], 64 * MB, 0),
    ],
)
def test_files_are_grouped_into_blocks_of_about_the_target(sizes, block, tasks) -> None:
    assert read_tasks(sizes, block) == tasks


def test_block_size_is_validated_configuration() -> None:
    assert DataSection.model_validate({"train": "s3://b/x"}).block_mb == 64
    with pytest.raises(ValueError, match="block_mb"):
        DataSection.model_validate({"train": "s3://b/x", "block_mb": 0})


def test_keep_freed_memory_sets_glibc_thresholds_once() -> None:
    try:
        has_mallopt = hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        has_mallopt = False
    if not has_mallopt:
        pytest.skip("no glibc")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # cached: the process-wide setting is made once
