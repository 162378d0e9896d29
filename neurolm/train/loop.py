"""The trainer every stage shares: :class:`Trainer` runs inside each worker, the same on every rank.

It talks to no cluster: the worker entry point (:func:`neurolm.train.launch.train_fn_per_worker`) hands it a
:class:`~neurolm.train.stage.WorkerContext` with this worker's dataset shards (Ray's ``streaming_split``; with
``preserve_order`` the split is deterministic, which is what makes resume exact), an all-reduce, a report
function and the checkpoint to resume from. Engine: DeepSpeed, built by :mod:`neurolm.train.engine`.
Checkpoints: every rank saves and reports (:mod:`neurolm.train.checkpoint`); a resumed run skips the
micro-batches of the interrupted epoch that were already consumed.

After every optimizer step :meth:`Trainer._after_step` alone decides whether to flush metrics, validate,
checkpoint or stop, and :meth:`Trainer._flush` alone turns the accumulated micro-steps into reported metrics.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from neurolm import storage
from neurolm.config import StageConfig, config_hash
from neurolm.runtime import wandb_mode
from neurolm.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from neurolm.train.engine import build_engine
from neurolm.train.metrics import MetricAccumulator, peak_flops_per_device
from neurolm.train.stage import Stage, WorkerContext

log = logging.getLogger("neurolm.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(base: int, *parts: int) -> int:
    """One seed in the config; every other seed is a deterministic function of it (STYLE rule 7)."""
    return int(np.random.SeedSequence([base, *parts]).generate_state(1)[0])


class MetricsHistory:
    """Rank 0 keeps every report in ``<run>/metrics.jsonl`` (rewritten whole: small), trimmed on resume to the
    steps before the checkpoint so a resumed run's history reads as one run."""

    def __init__(self, uri: str, resumed_step: int) -> None:
        self.uri = uri
        self.rows: list[dict[str, Any]] = []
        if storage.exists(uri):
            rows = [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
            self.rows = [r for r in rows if r.get("step", 0) <= resumed_step]

    def append(self, metrics: dict[str, Any]) -> None:
        self.rows.append({k: (float(v) if isinstance(v, np.floating) else v) for k, v in metrics.items()})
        storage.write_text(self.uri, "".join(json.dumps(r) + "\n" for r in self.rows))


class ResumableTextStream:
    """Cycles over this worker's text shard forever; can fast-forward to a consumed count after a resume."""

    def __init__(self, shard: Any, batch_size: int, consumed: int) -> None:
        self.shard, self.batch_size = shard, batch_size
        self.consumed = 0
        self._it: Iterator[dict[str, torch.Tensor]] = self._new_pass()
        while self.consumed < consumed:
            self.next()

    def _new_pass(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=True))

    def next(self) -> torch.Tensor:
        for _ in range(2):
            try:
                batch = next(self._it)
                self.consumed += 1
                return batch["tokens"]
            except StopIteration:
                self._it = self._new_pass()
        raise RuntimeError("the text shard of this worker holds fewer rows than one text batch")


class Trainer:
    """One stage's training on this worker. Every rank builds one with the same arguments and calls :meth:`fit`."""

    def __init__(
        self,
        stage: Stage,
        cfg: StageConfig,
        ctx: WorkerContext,
        steps_per_epoch: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.stage, self.cfg, self.ctx = stage, cfg, ctx
        logging.basicConfig(
            level=logging.INFO if ctx.rank == 0 else logging.WARNING, format="%(asctime)s %(message)s"
        )
        if ctx.device.type == "cpu":
            # Workers share this machine's cores; oversubscribed intra-op threads only slow them all down.
            torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
        seed_everything(derived_seed(cfg.train.seed, ctx.rank))

        t = cfg.train
        self.accum = t.grad_accum_steps
        # Equal on every rank: the split is equal and drops the last partial batch.
        self.micro_per_epoch = steps_per_epoch * self.accum
        self.total_steps = (
            steps_per_epoch * t.epochs
            if t.max_steps is None
            else min(steps_per_epoch * t.epochs, t.max_steps)
        )
        self.model = stage.build_model()
        self.engine = build_engine(
            self.model,
            cfg.deepspeed,
            cfg.optim,
            t,
            cfg.scaling.use_gpu,
            total_steps=self.total_steps,
            steps_per_epoch=steps_per_epoch,
        )
        stage.after_engine(self.engine)
        self.state = self._restore()

        self.text = None
        if cfg.data.text and cfg.data.text_batch_size > 0:
            self.text = ResumableTextStream(
                ctx.shard("text"), cfg.data.text_batch_size, self.state.text_batches
            )
        position = (self.state.epoch * self.micro_per_epoch + self.state.micro_in_epoch) * t.micro_batch_size
        self.stream = stage.train_stream(ctx, info or {}, position, derived_seed(t.seed))

        self.run = init_wandb(cfg, ctx.rank)
        # Every rank measures; the mean keeps MFU consistent across ranks (a CPU measurement is noisy).
        self.peak = ctx.all_reduce([peak_flops_per_device(ctx.device)])[0] / ctx.world_size
        self.flops_per_token = stage.flops_per_token(self.model)
        self.acc = MetricAccumulator()
        self.history = None
        if ctx.rank == 0:
            uri = storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl")
            self.history = MetricsHistory(uri, self.state.step)
        self._last_flush = time.perf_counter()

    # -- state -------------------------------------------------------------------------------------------
    def _restore(self) -> TrainState:
        cfg, world = self.cfg, self.ctx.world_size
        state = TrainState(world_size=world, config_hash=config_hash(cfg), config=cfg.model_dump(mode="json"))
        with self.ctx.restore() as directory:
            if directory is not None:
                state = load_checkpoint(self.engine, directory, world)
                state.resumes += 1
                log.info(
                    "resumed from step %d (epoch %d, micro-batch %d)",
                    state.step,
                    state.epoch,
                    state.micro_in_epoch,
                )
                if state.config_hash != config_hash(cfg):
                    log.warning(
                        "resuming a run whose config changed (hash %s -> %s)",
                        state.config_hash,
                        config_hash(cfg),
                    )
                    state.config_hash, state.config = config_hash(cfg), cfg.model_dump(mode="json")
        # What the export rebuilds the model from: the config of the model actually built here.
        state.model_config = self.stage.built_model_config(self.model)
        return state

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Train until the schedule's end (or ``train.stop_after_steps``); returns the final counters."""
        state, epochs = self.state, self.cfg.train.epochs
        done = state.step >= self.total_steps
        self._last_flush = time.perf_counter()
        while not done and state.epoch < epochs:
            batches = self._epoch_batches(state.epoch)
            while state.micro_in_epoch < self.micro_per_epoch:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                self._micro_step(batch, t0)
                if state.micro_in_epoch % self.accum:
                    continue
                state.step += 1
                if self._after_step():
                    done = True
                    break
            if not done:
                self._end_of_epoch()
        if self.run is not None:
            self.run.finish()
        return state

    def _epoch_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        if self.stream is not None:
            return self.stream
        cfg, rank = self.cfg, self.ctx.rank
        shuffle = cfg.data.local_shuffle_buffer
        it = iter(
            self.stage.torch_batches(
                self.ctx.shard("train"),
                batch_size=cfg.train.micro_batch_size,
                drop_last=True,
                local_shuffle_buffer_size=shuffle or None,
                local_shuffle_seed=derived_seed(cfg.train.seed, epoch, rank) if shuffle else None,
                prefetch_batches=cfg.data.prefetch_batches,
            )
        )
        for _ in range(self.state.micro_in_epoch):  # fast-forward to where the checkpoint was taken
            next(it)
        return it

    def _micro_step(self, batch: dict[str, Any], t0: float) -> None:
        state, ctx, seed = self.state, self.ctx, self.cfg.train.seed
        text_tokens = self.text.next().to(ctx.device) if self.text is not None else None
        t1 = time.perf_counter()
        # The step's randomness is a function of (seed, step, micro-step, rank): resume replays it exactly.
        torch.manual_seed(derived_seed(seed, state.step, state.micro_in_epoch, ctx.rank))
        out = self.stage.train_step(
            self.engine, ctx.to_device(batch), text_tokens, progress=state.step / max(self.total_steps, 1)
        )
        self.engine.backward(out.loss)
        self.engine.step()
        state.micro_in_epoch += 1
        state.text_batches = self.text.consumed if self.text is not None else 0
        self.acc.add(
            out.metrics,
            tokens=out.tokens,
            samples=self.cfg.train.micro_batch_size,
            data_s=t1 - t0,
            step_s=time.perf_counter() - t0,
        )

    # -- decisions and reports ---------------------------------------------------------------------------
    def _after_step(self) -> bool:
        """After an optimizer step: flush, validate, checkpoint as the schedule says. True ends this invocation.

        A checkpoint or validation step is always also a metrics step, so each step is reported at most once.
        """
        t, step = self.cfg.train, self.state.step
        last = step >= self.total_steps
        stop = not last and t.stop_after_steps is not None and step >= t.stop_after_steps
        checkpoint = last or stop or (t.checkpoint_every is not None and step % t.checkpoint_every == 0)
        validate = last or (t.eval_every is not None and step % t.eval_every == 0)
        if checkpoint or validate or step % t.log_every == 0:
            self._publish(
                self._flush(),
                validate=validate,
                checkpoint=checkpoint,
                what=f"step {step}/{self.total_steps}",
            )
        if stop:
            log.info("stopping after step %d as configured (train.stop_after_steps)", step)
        return last or stop

    def _end_of_epoch(self) -> None:
        self.state.epoch += 1
        self.state.micro_in_epoch = 0
        self._publish(
            self._flush(),
            validate=True,
            checkpoint=self.cfg.train.checkpoint_every is None,
            what=f"epoch {self.state.epoch} done:",
        )

    def _flush(self) -> dict[str, float]:
        """The one place accumulated micro-steps become metrics: means over ranks, ``perf/*`` over the real wall
        time since the last flush, and the run's sample and token counters advanced."""
        now = time.perf_counter()
        ctx = self.ctx
        metrics = self.acc.summary(
            ctx.world_size, self.flops_per_token, self.peak, now - self._last_flush, ctx.device, self.accum
        )
        self._last_flush = now
        self.state.samples += int(metrics.pop("_samples"))
        self.state.tokens += int(metrics.pop("_tokens"))
        metrics["train/lr"] = self.engine.get_lr()[0]
        return metrics

    def _validate(self) -> dict[str, float]:
        self.engine.eval()
        try:
            with torch.no_grad():
                return self.stage.evaluate(self.engine.module, self.ctx)
        finally:
            self.engine.train()

    def _publish(self, metrics: dict[str, float], validate: bool, checkpoint: bool, what: str) -> None:
        """Validation (every rank), then one report with or without this rank's checkpoint files."""
        if validate:
            metrics.update(self._validate())
        metrics = {**metrics, "step": self.state.step, "epoch": self.state.epoch}
        rank = self.ctx.rank
        if rank == 0:
            log.info("%s %s", what, _fmt(metrics))
        if self.run is not None:
            self.run.log(metrics, step=self.state.step)
        if self.history is not None:
            self.history.append(metrics)
        if checkpoint:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(self.engine, tmp, self.state, rank)
                self.ctx.report(metrics, tmp, f"step_{self.state.step:07d}")
        else:
            self.ctx.report(metrics)
        self._last_flush = time.perf_counter()  # throughput excludes validation and checkpointing


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, float | int))


def init_wandb(cfg: StageConfig, rank: int):
    """Rank 0 logs to Weights & Biases in :func:`neurolm.runtime.wandb_mode` (offline without an API key)."""
    if not cfg.run.wandb or rank != 0:
        return None
    import os

    import wandb

    return wandb.init(
        project=cfg.run.wandb_project,
        name=cfg.run.name,
        id=cfg.run.name.replace("/", "-"),
        resume="allow",
        config=cfg.model_dump(mode="json"),
        mode=wandb_mode(),
        dir=os.environ.get("WANDB_DIR", tempfile.gettempdir()),
    )
