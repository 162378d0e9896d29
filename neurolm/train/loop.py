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
from neurolm.runtime.flops import count_flops
from neurolm.runtime.memory import keep_freed_memory
from neurolm.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from neurolm.train.engine import build_engine
from neurolm.train.metrics import MetricAccumulator, peak_flops_per_device
from neurolm.train.stage import Stage, StepOutput, WorkerContext

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
    """Cycles over a text shard forever; can fast-forward to a consumed count after a resume.

    With ``stride`` > 1 (elastic runs) the shard is the whole text dataset on every rank and this rank takes the
    batches ``offset, offset + stride, ...`` of its endless sequence of passes, so the global position
    (``consumed x stride``) carries over to any number of workers."""

    def __init__(self, shard: Any, batch_size: int, consumed: int, stride: int = 1, offset: int = 0) -> None:
        self.shard, self.batch_size, self.stride = shard, batch_size, stride
        self.consumed = 0
        self._global = 0  # batches of the endless sequence passed so far (all ranks' included)
        self._it: Iterator[dict[str, torch.Tensor]] = self._new_pass()
        for _ in range(consumed * stride + offset):
            self._next_global()
        self.consumed = consumed

    def _new_pass(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=True))

    def _next_global(self) -> torch.Tensor:
        for _ in range(2):
            try:
                batch = next(self._it)
                self._global += 1
                return batch["tokens"]
            except StopIteration:
                self._it = self._new_pass()
        raise RuntimeError("the text shard of this worker holds fewer rows than one text batch")

    def next(self) -> torch.Tensor:
        tokens = self._next_global()
        for _ in range(self.stride - 1):  # the other ranks' batches
            self._next_global()
        self.consumed += 1
        return tokens


def global_order_batches(
    batches: Iterator[dict[str, Any]], rank: int, world_size: int, start: int
) -> Iterator[dict[str, Any]]:
    """This rank's micro-batches of an epoch read in one global order by every rank: global micro-batch ``g``
    belongs to rank ``g % world_size``; the first ``start`` (a multiple of ``world_size``) were consumed before.

    Whatever the number of workers, the consumed micro-batches are then a prefix of the epoch's order, so a
    checkpoint's position (global micro-batches) resumes on any number of workers (docs/resilience.md)."""
    for g, batch in enumerate(batches):
        if g >= start and g % world_size == rank:
            yield batch


def sample_ledger(run_uri: str) -> dict[int, list[int]]:
    """What ``train.record_samples`` wrote for the run at ``run_uri``: step -> the sample keys of that step over
    all ranks (:func:`neurolm.data.layout.sample_keys`), each step from the last attempt that ran it (a resumed
    run deletes the records after its checkpoint before its first step).

    Raises ``ValueError`` when an attempt's files of a step are not one per rank (a rank's file is missing)."""
    root = storage.join(run_uri, "samples")
    rows = [json.loads(storage.read_text(f)) for f in storage.list_files(root, suffix=".json")]
    last: dict[int, int] = {}
    for r in rows:
        last[r["step"]] = max(last.get(r["step"], -1), r["attempt"])
    steps: dict[int, list[int]] = {}
    for r in sorted(rows, key=lambda r: (r["step"], r["rank"])):
        if r["attempt"] == last[r["step"]]:
            steps.setdefault(r["step"], []).extend(r["keys"])
    for step, attempt in last.items():
        ranks = [r for r in rows if r["step"] == step and r["attempt"] == attempt]
        if len(ranks) != ranks[0]["world_size"]:
            raise ValueError(f"{root}: step {step} (attempt {attempt}) has {len(ranks)} rank files of "
                             f"{ranks[0]['world_size']}")  # fmt: skip
    return steps


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
        keep_freed_memory()  # steps reuse the pages of the last step's tensors (docs/platform.md, "Page faults")
        seed_everything(derived_seed(cfg.train.seed, ctx.rank))

        t = cfg.train
        # Elastic runs (scaling.min_workers) keep the global batch: fewer workers accumulate more micro-batches.
        self.elastic = cfg.scaling.min_workers is not None
        self.accum = cfg.elastic_accum_steps(ctx.world_size)
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
            t.model_copy(update={"grad_accum_steps": self.accum}),
            cfg.scaling.use_gpu,
            total_steps=self.total_steps,
            steps_per_epoch=steps_per_epoch,
        )
        stage.after_engine(self.engine)
        self.state = self._restore()

        self.text = None
        if cfg.data.text and cfg.data.text_batch_size > 0:
            stride, offset = (ctx.world_size, ctx.rank) if self.elastic else (1, 0)
            self.text = ResumableTextStream(
                ctx.shard("text"), cfg.data.text_batch_size, self.state.text_batches, stride, offset
            )
        position = (self.state.epoch * self.micro_per_epoch + self.state.micro_in_epoch) * t.micro_batch_size
        self.stream = stage.train_stream(ctx, info or {}, position, derived_seed(t.seed))

        self.run = init_wandb(cfg, ctx.rank)
        # Every rank measures; the mean keeps MFU consistent across ranks (a CPU measurement is noisy).
        self.peak = ctx.all_reduce([peak_flops_per_device(ctx.device)])[0] / ctx.world_size
        # perf/mfu's work per token: the counted FLOPs of this process's first micro-step (_micro_step)
        self.flops_per_token, self._flops_counted = 0.0, False
        self.acc = MetricAccumulator()
        self.history = None
        if ctx.rank == 0:
            uri = storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl")
            self.history = MetricsHistory(uri, self.state.step)
        self._last_flush = time.perf_counter()
        self._step_samples: list[int] = []
        if cfg.train.record_samples and ctx.rank == 0:
            # Like the metrics history: steps after the checkpoint are run again, so their records go. Done before
            # the first step, which no rank can finish (and record) without rank 0.
            for uri in storage.list_files(self._samples_dir(), suffix=".json"):
                if int(uri.rsplit("/", 1)[-1].split(".", 1)[0].removeprefix("step_")) > self.state.step:
                    storage.delete_tree(uri)

    # -- state -------------------------------------------------------------------------------------------
    def _restore(self) -> TrainState:
        cfg, world = self.cfg, self.ctx.world_size
        state = TrainState(world_size=world, config_hash=config_hash(cfg), config=cfg.model_dump(mode="json"))
        with self.ctx.restore() as directory:
            if directory is not None:
                state = load_checkpoint(self.engine, directory, world, elastic=self.elastic)
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
                self._record_samples()
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
        cfg, rank, world = self.cfg, self.ctx.rank, self.ctx.world_size
        shuffle = cfg.data.local_shuffle_buffer
        # Elastic: every rank reads the whole epoch in the same shuffled order (seeded by the epoch alone).
        seed = derived_seed(cfg.train.seed, epoch) if self.elastic else derived_seed(cfg.train.seed, epoch, rank)
        it = iter(
            self.stage.torch_batches(
                self.ctx.shard("train"),
                batch_size=cfg.train.micro_batch_size,
                drop_last=True,
                local_shuffle_buffer_size=shuffle or None,
                local_shuffle_seed=seed if shuffle else None,
                prefetch_batches=cfg.data.prefetch_batches,
            )
        )
        if self.elastic:
            return global_order_batches(it, rank, world, self.state.micro_in_epoch * world)
        for _ in range(self.state.micro_in_epoch):  # fast-forward to where the checkpoint was taken
            next(it)
        return it

    def _micro_step(self, batch: dict[str, Any], t0: float) -> None:
        state, ctx, seed = self.state, self.ctx, self.cfg.train.seed
        text_tokens = self.text.next().to(ctx.device) if self.text is not None else None
        t1 = time.perf_counter()
        # The step's randomness is a function of (seed, step, micro-step, rank): resume replays it exactly. In an
        # elastic run, of (seed, step, global micro-batch of the step): the same on any number of workers.
        if self.elastic:
            torch.manual_seed(derived_seed(seed, state.step, (state.micro_in_epoch % self.accum) * ctx.world_size
                                           + ctx.rank))  # fmt: skip
        else:
            torch.manual_seed(derived_seed(seed, state.step, state.micro_in_epoch, ctx.rank))
        keys = batch.pop("sample_key", None)
        if keys is not None:
            self._step_samples.extend(int(k) for k in keys)

        def forward_backward() -> StepOutput:
            out = self.stage.train_step(
                self.engine, ctx.to_device(batch), text_tokens, progress=state.step / max(self.total_steps, 1)
            )
            self.engine.backward(out.loss)
            return out

        if self._flops_counted:
            out = forward_backward()
        else:  # once per process: MFU from what the step computes, not from a formula (docs/platform.md §14)
            out, flops = count_flops(forward_backward)
            self.flops_per_token, self._flops_counted = flops["total"] / max(out.tokens, 1), True
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

    def _samples_dir(self) -> str:
        return storage.join(self.cfg.run.storage_path, self.cfg.run.name, "samples")

    def _record_samples(self) -> None:
        """``train.record_samples``: this rank's sample keys of the step just taken, one small JSON file per
        (step, attempt, rank) under ``<run>/samples/``; a resumed run's later attempt supersedes earlier ones."""
        keys, self._step_samples = self._step_samples, []
        if not self.cfg.train.record_samples:
            return
        state, ctx = self.state, self.ctx
        name = f"step_{state.step:07d}.attempt_{state.resumes:02d}.rank_{ctx.rank:03d}.json"
        storage.write_text(
            storage.join(self._samples_dir(), name),
            json.dumps({"step": state.step, "epoch": state.epoch, "rank": ctx.rank, "world_size": ctx.world_size,
                        "attempt": state.resumes, "keys": keys}),
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
