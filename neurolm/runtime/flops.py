"""Counted floating-point operations of a piece of work: what a step or a generation call asks of the arithmetic
units, as opposed to how long it takes (docs/platform.md §14).

:func:`count_flops` runs a callable under PyTorch's ``FlopCounterMode`` and groups the counts by kind: matrix
products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), attention (the fused SDPA kernels) and convolutions. PyTorch
has no formula for the CPU flash-attention kernels (``_scaled_dot_product_flash_attention_for_cpu`` and its
backward), which are what every fused attention call runs on a CPU; they get the formulas of the other fused
kernels here, so a CPU count and a GPU count of the same work agree. A kernel called with ``is_causal`` computes
only the lower triangle of its scores and is counted so (PyTorch's formulas count every score); a mask passed as
a tensor is counted dense, because the kernels compute every score it closes.

Two counts of the same work on identical shapes tell how far apart two implementations are in arithmetic alone;
the ratio of their times over the ratio of their counts is how much better one uses the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["count_flops"]

T = TypeVar("T")
aten = torch.ops.aten

_MATMUL = {"mm", "addmm", "bmm", "baddbmm"}
_CONV = {"convolution", "convolution_backward", "_convolution"}


def _causal_share(query_shape: Any, key_shape: Any, is_causal: bool) -> float:
    """The share of a query x key score block an ``is_causal`` kernel computes (top-left aligned, as SDPA's)."""
    s_q, s_k = int(query_shape[2]), int(key_shape[2])
    if not is_causal or s_k == 0:
        return 1.0
    kept = sum(min(i + 1, s_k) for i in range(s_q))
    return kept / (s_q * s_k)


def _cpu_flash(query: Any, key: Any, value: Any, dropout_p: float = 0.0, is_causal: bool = False, *args: Any,
               out_shape: Any = None, **kwargs: Any) -> int:  # fmt: skip
    return int(sdpa_flop_count(query, key, value) * _causal_share(query, key, is_causal))


def _cpu_flash_backward(grad_out: Any, query: Any, key: Any, value: Any, out: Any, logsumexp: Any,
                        dropout_p: float = 0.0, is_causal: bool = False, *args: Any, out_shape: Any = None,
                        **kwargs: Any) -> int:  # fmt: skip
    return int(sdpa_backward_flop_count(grad_out, query, key, value) * _causal_share(query, key, is_causal))


_CPU_KERNELS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def _kind(op: str) -> str:
    if op in _MATMUL:
        return "matmul"
    if "attention" in op:
        return "attention"
    if op in _CONV:
        return "convolution"
    return "other"


def count_flops(fn: Callable[[], T]) -> tuple[T, dict[str, int]]:
    """Run ``fn()`` once, counting its floating-point operations (an add and a multiply are two), forward and
    backward alike. Returns its result and ``{"total", "matmul", "attention", "convolution", "other"}``."""
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_KERNELS)
    with counter:
        result = fn()
    counts = dict.fromkeys(("total", "matmul", "attention", "convolution", "other"), 0)
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        counts[_kind(str(op).removeprefix("aten.").split(".")[0])] += int(n)
        counts["total"] += int(n)
    return result, counts
