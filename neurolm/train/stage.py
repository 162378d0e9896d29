"""What a training stage plugs into the shared trainer (:mod:`neurolm.train.loop`), and what it gets from it.

A stage knows its model, how shard rows become model inputs, how to compute its loss and how to validate; the
trainer knows DeepSpeed, checkpoints, resume and metrics. Neither talks to Ray: the worker entry point
(:func:`neurolm.train.launch.train_fn_per_worker`) hands both a :class:`WorkerContext` (device, dtype, rank,
dataset shards, an all-reduce, a report function). Stages live in ``neurolm/train/stages/``.

Subclasses implement :meth:`Stage.build_model`, :meth:`Stage.train_step` and :meth:`Stage.export` (abstract); every
other method has a default that fits a stage training on one ``train`` dataset (and validating on ``val``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from neurolm.config import StageConfig
from neurolm.data.shards import count_rows

__all__ = ["Stage", "StepOutput", "WorkerContext", "mean_over_batches"]


@dataclass
class StepOutput:
    """One micro-step's loss (to backpropagate) and scalar metrics (already detached floats)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: int = 0  # tokens processed by this micro-step (EEG + text), for throughput and MFU


def _local_sum(values: list[float]) -> list[float]:
    return list(values)


def _no_report(metrics: dict[str, Any], checkpoint_dir: str | None = None, name: str | None = None) -> None:
    return None


def _no_checkpoint() -> contextlib.AbstractContextManager[str | None]:
    return contextlib.nullcontext(None)


@dataclass
class WorkerContext:
    """Everything a stage and the trainer need from the worker they run on; built from Ray Train's context on a
    Ray worker, or by hand (one process, no Ray) in tests and tools.

    ``shards`` maps dataset names (``train``, ``val``, ``text``, ``train_<task>`` ...) to this worker's share of
    each (anything with Ray's ``DataIterator`` methods). ``all_reduce`` sums a list of floats over all ranks.
    ``report(metrics, checkpoint_dir, name)`` publishes metrics and, with a directory, this rank's checkpoint
    files under ``name``. ``restore()`` is a context manager giving the directory of the checkpoint to resume
    from, or None.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    rank: int = 0
    world_size: int = 1
    shards: Mapping[str, Any] = field(default_factory=dict)
    all_reduce: Callable[[list[float]], list[float]] = _local_sum
    report: Callable[..., None] = _no_report
    restore: Callable[[], contextlib.AbstractContextManager[str | None]] = _no_checkpoint

    def shard(self, name: str) -> Any:
        if name not in self.shards:
            raise KeyError(f"no dataset {name!r} on this worker (have: {sorted(self.shards)})")
        return self.shards[name]

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Tensors to this worker's device; floating-point ones to its compute dtype."""
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        return out


def mean_over_batches(
    batches: Iterator[dict[str, float]], ctx: WorkerContext, prefix: str = "val/"
) -> dict[str, float]:
    """Per-batch metric dicts summed over batches and ranks, then averaged: ``{prefix + key: mean}``.

    Every rank must call it (it all-reduces), also with no batches."""
    sums: dict[str, float] = {}
    n = 0
    for metrics in batches:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    keys = sorted(sums)
    totals = ctx.all_reduce([sums[k] for k in keys] + [float(n)])
    count = max(totals[-1], 1.0)
    return {f"{prefix}{k}": v / count for k, v in zip(keys, totals[:-1], strict=True)}


class Stage(ABC):
    """The stage-specific half of a training job. ``cfg`` is the validated stage config."""

    name: ClassVar[str] = "stage"

    def __init__(self, cfg: StageConfig) -> None:
        self.cfg = cfg

    # -- driver side ---------------------------------------------------------------------------------------
    def batch_transform(self) -> Callable[[Any], dict[str, np.ndarray]] | None:
        """A pure function turning a batch of shard rows (a ``pyarrow.Table``, or a dict of numpy arrays) into
        model inputs, run on the worker as batches are drawn (:meth:`torch_batches`); None: the rows are the
        inputs."""
        return None

    def datasets(self, read_shards: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Ray datasets every worker gets a share of, and facts for the workers (``info["rows"]``: the
        training samples, which size an epoch). Default: ``train`` and, when configured, ``val``, as shard rows:
        Ray Data moves the compact rows and each worker lays them out with :meth:`batch_transform` (issue 11:
        laying out in a ``map_batches`` step made Ray Data move, store and re-collate the 5x larger layout)."""
        # From the Parquet footers of the files read_shards lists: no Ray Data execution (3-5 s per stage).
        train = self.cfg.data.train
        info = {"rows": sum(count_rows(uri) for uri in ([train] if isinstance(train, str) else train))}
        block = self.cfg.data.block_mb << 20  # fewer, larger blocks: less Ray work per sample (read_tasks)
        datasets = {"train": read_shards(train, block_bytes=block)}
        if self.cfg.data.val:
            datasets["val"] = read_shards(self.cfg.data.val, block_bytes=block)
        return datasets, info

    def torch_batches(self, shard: Any, **kwargs: Any) -> Iterable[dict[str, torch.Tensor]]:
        """This worker's micro-batches of one of :meth:`datasets` (``shard``: its ``DataIterator``), laid out by
        :meth:`batch_transform` on the way (``kwargs``: ``iter_torch_batches``'s batching, shuffling and
        prefetching arguments)."""
        from neurolm.train.ingest import torch_batches  # Ray Data's collate API: imported on the worker only

        return torch_batches(shard, self.batch_transform(), **kwargs)

    # -- worker side ---------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the model on the worker (weights loaded, frozen parts frozen)."""

    def after_engine(self, engine: Any) -> None:
        """Fix-ups after ``deepspeed.initialize`` (e.g. keep EMA codebooks in fp32 under bf16). Default: none."""
        return None

    def train_stream(
        self, ctx: WorkerContext, info: dict[str, Any], position: int, seed: int
    ) -> Iterator[dict[str, Any]] | None:
        """Micro-batches replacing the trainer's own pass over the ``train`` shard, starting ``position``
        samples into the run, or None for the default (stage 3: the task mixture). ``info`` is what
        :meth:`datasets` returned; ``seed`` is the run's seed, the same on every rank."""
        return None

    @abstractmethod
    def train_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], text: torch.Tensor | None, progress: float
    ) -> StepOutput:
        """Forward one micro-batch; ``progress`` in [0, 1] is the share of training done (DANN schedule)."""

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation metrics of one batch. Default: the training objective's metrics without the text loss."""
        return dict(self.train_step(model, batch, None, progress=1.0).metrics)

    def evaluate(self, model: nn.Module, ctx: WorkerContext) -> dict[str, float]:
        """Validation metrics, namespaced ``val/...`` and reduced over ranks (every rank calls this, under
        ``torch.no_grad``). Default: the mean of :meth:`eval_step` over the ``val`` shard, if there is one."""
        if "val" not in ctx.shards:
            return {}
        cap = self.cfg.train.eval_batches

        def batches() -> Iterator[dict[str, float]]:
            it = self.torch_batches(
                ctx.shards["val"], batch_size=self.cfg.train.micro_batch_size, drop_last=True
            )
            for i, batch in enumerate(it):
                if cap is not None and i >= cap:
                    return
                yield self.eval_step(model, ctx.to_device(batch))

        return mean_over_batches(batches(), ctx)

    # -- after training ------------------------------------------------------------------------------------
    @abstractmethod
    def export(self, state_dict: dict[str, torch.Tensor], out_dir: str, model_config: dict[str, Any]) -> None:
        """Write consolidated weights (safetensors + config JSON) loadable without DeepSpeed or Ray.

        ``model_config`` is what :meth:`built_model_config` returned on the workers (saved with the checkpoint), so
        the driver rebuilds nothing to learn it."""

    def built_model_config(self, model: nn.Module) -> dict[str, Any]:
        """The built model's config as JSON, stored in every checkpoint's ``state.json`` for the export.
        Default: ``model.config.to_dict()``."""
        return model.config.to_dict()
