"""Which floating-point precision a model runs in: one rule for training and inference."""

from __future__ import annotations

import torch

__all__ = ["resolve_precision", "precision_dtype"]


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """``auto`` becomes ``bf16`` on a GPU and ``fp32`` on a CPU (no fp16: its loss scaling is not supported);
    ``fp32``/``bf16`` stay as given."""
    if precision == "auto":
        return "bf16" if on_gpu else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: choose auto, fp32 or bf16")
    return precision


def precision_dtype(precision: str, on_gpu: bool) -> torch.dtype:
    """The torch dtype of :func:`resolve_precision`."""
    return torch.bfloat16 if resolve_precision(precision, on_gpu) == "bf16" else torch.float32
