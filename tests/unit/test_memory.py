"""A training process keeps freed memory for its next allocations (neurolm.runtime.memory)."""

import ctypes
import json
import subprocess
import sys

import pytest

_PROBE = r"""
import json, resource, sys
import torch
if sys.argv[1] == "keep":
    from neurolm.runtime.memory import keep_freed_memory
    assert keep_freed_memory()
def touched():  # a 64 MB tensor, written once, as a step's activations are
    a = torch.empty(16 << 20, dtype=torch.float32)
    a.fill_(1.0)
    return a
for _ in range(40):  # the first steps: the heap grows to its working size (posix_memalign leaves gaps; 2-13 rounds seen)
    a = touched(); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    a = touched(); del a  # the next steps'
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["faults"]


def test_reallocations_reuse_the_pages_of_freed_tensors() -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("no glibc")
    pages = 3 * (64 << 20) // 4096
    assert _faults("default") > pages // 2  # glibc maps each 64 MB tensor afresh: every page faults again
    assert _faults("keep") < pages // 20  # with the setting, the pages are reused
