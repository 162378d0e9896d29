"""What a training stage plugs into the shared worker loop (:mod:`neurolm.train.loop`).

A stage knows its model, how Ray Data batches become model inputs, and how to compute its loss; the loop knows
DeepSpeed, checkpoints, resume, metrics and Ray. Stages live in ``neurolm/train/stages/``.

Optional hooks, used when a stage defines them:

- ``after_engine(engine)``: fix-ups after ``deepspeed.initialize`` (e.g. keep EMA codebooks in fp32 under bf16);
- ``datasets(read_shards) -> (datasets, info)``: the driver builds several datasets itself (stage 3: one per
  task) instead of the default ``train``/``val``; ``info`` reaches every worker (``info["rows"]`` sizes an epoch);
- ``train_stream(info, position, rank, seed)``: an object whose ``next()`` gives micro-batches, replacing the
  default iteration of the ``train`` shard (stage 3: the task mixture), resumable at ``position`` samples;
- ``evaluate(model, device, dtype) -> dict``: validation metrics (already namespaced and rank-reduced) instead of
  the default mean of :meth:`Stage.eval_step` over the ``val`` shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class StepOutput:
    """One micro-step's loss (to backpropagate) and scalar metrics (already detached floats)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: int = 0  # tokens processed by this micro-step (EEG + text), for throughput and MFU


class Stage(Protocol):
    """The stage-specific half of a training job."""

    name: str

    def build_model(self) -> nn.Module:
        """Build the model on the worker (weights loaded, frozen parts frozen)."""

    def batch_transform(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A pure numpy function for ``Dataset.map_batches`` turning shard rows into model inputs."""

    def train_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], text: torch.Tensor | None, progress: float
    ) -> StepOutput:
        """Forward one micro-batch; ``progress`` in [0, 1] is the share of training done (DANN schedule)."""

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation metrics of one batch (summed by the loop over batches and ranks, then averaged)."""

    def flops_per_token(self, model: nn.Module) -> float:
        """Training FLOPs per token (forward + backward) for MFU."""

    def export(self, state_dict: dict[str, torch.Tensor], out_dir: str) -> None:
        """Write consolidated weights (safetensors + config JSON) loadable without DeepSpeed or Ray."""

    def config_dict(self) -> dict[str, Any]:
        """The model config, stored with checkpoints and exports."""
