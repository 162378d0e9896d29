"""Memory settings of a training or scoring process (docs/platform.md, "Page faults").

A training step, or a scoring batch, allocates and frees the same large tensors every time: activations, the
output head's logits, gradients (tens to hundreds of MB each at NeuroLM-B size). glibc serves every allocation
above a moving threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it when it is freed, and it returns a
freed heap top to the OS; each such tensor's pages are then faulted in again on first touch (~7 µs per 4 KB page
on our machines: a fresh 460 MB logits tensor costs ~0.8 s before any arithmetic). Served from the heap, and with
freed memory kept, the steps after the first few reuse the pages of the steps before. PyTorch allocates with
``posix_memalign``, which leaves gaps while the heap grows: the heap settles at a few times the largest tensor
(a 64 MB tensor allocated in a loop: after 2-13 rounds; tests/unit/test_memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # malloc.h
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the largest, ~2 GB of free heap top kept
_TOP_PAD = 256 << 20  # the heap grows in steps of at least 256 MB: fewer brk calls


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc serve this process's allocations from its heap and keep freed memory for the next ones (once
    per process; False where there is no glibc, e.g. macOS, and nothing changes).

    The process's resident memory then stays near its peak instead of falling between steps; a training
    process (or a scoring actor) needs that peak at every step anyway."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(
        bool(mallopt(param, value))
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    )
