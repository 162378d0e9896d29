"""The worker loop every stage shares: ``train_fn_per_worker`` runs inside each Ray Train worker.

Data: each worker streams its share of the training shards with ``get_dataset_shard("train")`` (Ray's
``streaming_split``; with ``preserve_order`` the split is deterministic, which is what makes resume exact).
Engine: DeepSpeed, built by :mod:`neurolm.train.engine`. Checkpoints: every rank saves and reports
(:mod:`neurolm.train.checkpoint`); a rerun with the same run name resumes from ``ray.train.get_checkpoint()``,
skipping the micro-batches of the interrupted epoch that were already consumed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from neurolm import storage
from neurolm.config import StageConfig, config_hash
from neurolm.models.precision import precision_dtype
from neurolm.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from neurolm.train.engine import build_engine
from neurolm.train.metrics import MetricAccumulator, all_reduce_sum, peak_flops_per_device
from neurolm.train.stage import Stage

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

    def __init__(self, shard, batch_size: int, consumed: int, seed: int) -> None:
        self.shard, self.batch_size, self.seed = shard, batch_size, seed
        self.consumed = 0
        self._passes = 0
        self._it: Iterator[dict[str, torch.Tensor]] = self._new_pass()
        while self.consumed < consumed:
            self.next()

    def _new_pass(self) -> Iterator[dict[str, torch.Tensor]]:
        self._passes += 1
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


def _to_device(batch: dict[str, Any], device: torch.device, float_dtype: torch.dtype) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if v.is_floating_point():
                v = v.to(float_dtype)
        out[k] = v
    return out


def evaluate(
    engine, stage: Stage, shard, cfg: StageConfig, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Validation over this worker's val shard, summed over ranks: returns ``val/<metric>`` means."""
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for i, batch in enumerate(shard.iter_torch_batches(batch_size=cfg.train.micro_batch_size, drop_last=True)):
            if cfg.train.eval_batches is not None and i >= cfg.train.eval_batches:
                break
            for k, v in stage.eval_step(engine.module, _to_device(batch, device, dtype)).items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [float(n)], device)
    count = max(totals[-1], 1.0)
    return {f"val/{k}": v / count for k, v in zip(keys, totals[:-1], strict=True)}


def run_worker_loop(stage: Stage, cfg: StageConfig, steps_per_epoch: int, info: dict[str, Any] | None = None) -> None:
    """Train one stage on this worker. Called by every rank with the same arguments."""
    import ray.train
    from ray.train import Checkpoint

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s")
    use_gpu = cfg.scaling.use_gpu
    device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
    if not use_gpu:
        # Two workers share this machine's cores; oversubscribed intra-op threads only slow both down.
        torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)) if cfg.scaling.cpus_per_worker >= 1 else 1)
    seed_everything(derived_seed(cfg.train.seed, rank))

    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    model = stage.build_model()
    engine = build_engine(
        model, cfg.deepspeed, cfg.optim, cfg.train, use_gpu, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
    if hasattr(stage, "after_engine"):
        stage.after_engine(engine)
    dtype = precision_dtype(cfg.deepspeed.precision, use_gpu)

    state = TrainState(world_size=world, config_hash=config_hash(cfg), config=cfg.model_dump(mode="json"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_checkpoint(engine, d, world)
        state.resumes += 1
        log.info("resumed from step %d (epoch %d, micro-batch %d)", state.step, state.epoch, state.micro_in_epoch)
        if state.config_hash != config_hash(cfg):
            log.warning("resuming a run whose config changed (hash %s -> %s)", state.config_hash, config_hash(cfg))
            state.config_hash, state.config = config_hash(cfg), cfg.model_dump(mode="json")

    info = info or {}
    train_shard = None if hasattr(stage, "train_stream") else ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if getattr(cfg.data, "val", None) else None
    text = None
    if cfg.data.text and cfg.data.text_batch_size > 0:
        text = ResumableTextStream(
            ray.train.get_dataset_shard("text"), cfg.data.text_batch_size, state.text_batches, cfg.train.seed
        )

    run = _init_wandb(cfg, rank)
    # Every rank measures; the mean keeps MFU consistent across ranks (a CPU measurement is noisy).
    peak = all_reduce_sum([peak_flops_per_device(device)], device)[0] / world
    flops_per_token = stage.flops_per_token(model)
    acc = MetricAccumulator()
    accum = cfg.train.grad_accum_steps

    history = MetricsHistory(storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl"), state.step) \
        if rank == 0 else None

    def report(metrics: dict[str, float], with_checkpoint: bool) -> None:
        metrics = {**metrics, "step": state.step, "epoch": state.epoch}
        if run is not None:
            run.log(metrics, step=state.step)
        if history is not None:
            history.append(metrics)
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(engine, tmp, state, rank)
            ray.train.report(
                metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=f"step_{state.step:07d}"
            )

    micro_per_epoch = steps_per_epoch * accum  # equal on every rank: the split is equal, drop_last
    mixed = None
    if hasattr(stage, "train_stream"):  # stage 3: a task mixture over several datasets
        position = (state.epoch * micro_per_epoch + state.micro_in_epoch) * cfg.train.micro_batch_size
        mixed = stage.train_stream(info, position, rank, derived_seed(cfg.train.seed))

    def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        if mixed is not None:
            while True:
                yield mixed.next()
        it = iter(
            train_shard.iter_torch_batches(
                batch_size=cfg.train.micro_batch_size,
                drop_last=True,
                local_shuffle_buffer_size=cfg.data.local_shuffle_buffer or None,
                local_shuffle_seed=derived_seed(cfg.train.seed, epoch, rank) if cfg.data.local_shuffle_buffer else None,
                prefetch_batches=cfg.data.prefetch_batches,
            )
        )
        for _ in range(state.micro_in_epoch):  # fast-forward to where the checkpoint was taken
            next(it)
        yield from it

    def validate() -> dict[str, float]:
        engine.eval()
        try:
            if hasattr(stage, "evaluate"):
                with torch.no_grad():
                    return stage.evaluate(engine.module, device, dtype)
            if val_shard is not None:
                return evaluate(engine, stage, val_shard, cfg, device, dtype)
            return {}
        finally:
            engine.train()

    done = state.step >= total_steps
    while not done and state.epoch < cfg.train.epochs:
        batches = epoch_batches(state.epoch)
        last_report = time.perf_counter()
        while state.micro_in_epoch < micro_per_epoch:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            text_tokens = text.next().to(device) if text is not None else None
            t1 = time.perf_counter()
            # The step's randomness is a function of (seed, step, micro-step, rank): resume replays it exactly.
            torch.manual_seed(derived_seed(cfg.train.seed, state.step, state.micro_in_epoch, rank))
            out = stage.train_step(
                engine, _to_device(batch, device, dtype), text_tokens, progress=state.step / max(total_steps, 1)
            )
            engine.backward(out.loss)
            engine.step()
            state.micro_in_epoch += 1
            state.text_batches = text.consumed if text is not None else 0
            acc.add(out.metrics, tokens=out.tokens, samples=cfg.train.micro_batch_size,
                    data_s=t1 - t0, step_s=time.perf_counter() - t0)
            if state.micro_in_epoch % accum:
                continue
            state.step += 1
            if state.step % cfg.train.log_every == 0 or state.step == total_steps:
                metrics = acc.summary(world, flops_per_token, peak, time.perf_counter() - last_report, device, accum)
                state.samples += int(metrics.pop("_samples"))
                state.tokens += int(metrics.pop("_tokens"))
                metrics["train/lr"] = engine.get_lr()[0]
                eval_now = cfg.train.eval_every is not None and state.step % cfg.train.eval_every == 0
                if eval_now or state.step == total_steps:
                    metrics.update(validate())
                ckpt_now = cfg.train.checkpoint_every is not None and state.step % cfg.train.checkpoint_every == 0
                if rank == 0:
                    log.info("step %d/%d %s", state.step, total_steps, _fmt(metrics))
                report(metrics, with_checkpoint=ckpt_now or state.step == total_steps)
                last_report = time.perf_counter()
            if state.step >= total_steps:
                done = True
                break
            if cfg.train.stop_after_steps is not None and state.step >= cfg.train.stop_after_steps:
                if state.step % cfg.train.log_every:  # make sure this step is checkpointed
                    report(acc.summary(world, flops_per_token, peak, 1.0, device, accum), with_checkpoint=True)
                elif not ckpt_now and state.step != total_steps:
                    report({}, with_checkpoint=True)
                log.info("stopping after step %d as configured (train.stop_after_steps)", state.step)
                done = True
                break
        if done:
            break
        state.epoch += 1
        state.micro_in_epoch = 0
        epoch_metrics = acc.summary(world, flops_per_token, peak, time.perf_counter() - last_report, device, accum)
        state.samples += int(epoch_metrics.pop("_samples"))
        state.tokens += int(epoch_metrics.pop("_tokens"))
        epoch_metrics.update(validate())
        if rank == 0:
            log.info("epoch %d done: %s", state.epoch, _fmt(epoch_metrics))
        report(epoch_metrics, with_checkpoint=cfg.train.checkpoint_every is None)
    if run is not None:
        run.finish()


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, float | int))


def _init_wandb(cfg: StageConfig, rank: int):
    """Rank 0 logs to Weights & Biases: online with an API key, else offline (sync later with `wandb sync`)."""
    if not cfg.run.wandb or rank != 0:
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return wandb.init(
        project=cfg.run.wandb_project,
        name=cfg.run.name,
        id=cfg.run.name.replace("/", "-"),
        resume="allow",
        config=cfg.model_dump(mode="json"),
        mode=mode,
        dir=os.environ.get("WANDB_DIR", tempfile.gettempdir()),
    )
