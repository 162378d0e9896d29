"""The driver side of a training stage: datasets from object storage, a ``TorchTrainer``, and the export.

``fit_stage(cfg)`` is what ``ray_jobs/<stage>.py``, ``neurolm train <stage>`` and the pipeline call. The config
is validated before this runs; storage is checked before Ray resources are requested.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from neurolm import storage
from neurolm.config import (
    ConfigError,
    InstructJobConfig,
    PretrainJobConfig,
    StageConfig,
    TokenizerJobConfig,
    load_config,
)
from neurolm.runtime import ensure_ray, read_shards
from neurolm.train.checkpoint import CheckpointError, content_key, node_local_copy, remove_local_copy
from neurolm.train.stage import Stage, WorkerContext

log = logging.getLogger("neurolm.train")

STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "tokenizer": TokenizerJobConfig,
    "pretrain": PretrainJobConfig,
    "instruct": InstructJobConfig,
}

@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    run_dir: str  # storage_path/name: Ray's run directory (checkpoints, metrics)
    checkpoint: str | None  # URI of the last checkpoint
    export_dir: str | None  # URI of the consolidated safetensors export
    metrics: dict[str, Any]


def ray_worker_context(cfg: StageConfig, dataset_names: list[str]) -> WorkerContext:
    """The :class:`WorkerContext` of a Ray Train worker: its rank, device and dtype, its dataset shards, a
    ``torch.distributed`` all-reduce, and reports and checkpoints through ``ray.train``."""
    import pyarrow.fs
    import ray.train

    from neurolm.train.engine import resolve_precision
    from neurolm.train.metrics import all_reduce_sum

    ray_ctx = ray.train.get_context()
    use_gpu = cfg.scaling.use_gpu
    device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
    dtype = torch.bfloat16 if resolve_precision(cfg.deepspeed, use_gpu) == "bf16" else torch.float32

    def report(metrics: dict[str, Any], checkpoint_dir: str | None = None, name: str | None = None) -> None:
        if checkpoint_dir is None:
            ray.train.report(metrics)
        else:
            ray.train.report(
                metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir), checkpoint_dir_name=name
            )

    @contextlib.contextmanager
    def restore() -> Iterator[str | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
            yield checkpoint.path
            return
        # One download per node, never rewritten while a rank reads it (not Checkpoint.as_directory: see
        # node_local_copy).
        key = content_key(checkpoint.filesystem, checkpoint.path)
        directory = node_local_copy(key, lambda local: checkpoint.to_directory(local))
        yield directory
        # Every rank has loaded: the node's first rank removes the copy.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if ray_ctx.get_local_rank() == 0:
            remove_local_copy(directory)

    return WorkerContext(
        device=device,
        dtype=dtype,
        rank=ray_ctx.get_world_rank(),
        world_size=ray_ctx.get_world_size(),
        shards={name: ray.train.get_dataset_shard(name) for name in dataset_names},
        all_reduce=functools.partial(all_reduce_sum, device=device),
        report=report,
        restore=restore,
    )


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's worker entry point: rebuild the config and the stage, then run the shared trainer."""
    from neurolm.train.loop import Trainer
    from neurolm.train.stages import make_stage

    cfg = STAGE_CONFIGS[config["stage"]].model_validate(config["cfg"])
    ctx = ray_worker_context(cfg, config["datasets"])
    Trainer(make_stage(cfg), cfg, ctx, steps_per_epoch=config["steps_per_epoch"], info=config.get("info")).fit()


def build_datasets(cfg: StageConfig, stage: Stage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stage's datasets (shard rows, laid out on the workers; stage 3: its task layouts), the text windows
    for the LM loss, and facts for the workers (``rows``: train size)."""
    datasets, info = stage.datasets(read_shards)
    if cfg.data.text and cfg.data.text_batch_size > 0:
        from neurolm.data.text import text_windows

        datasets["text"] = read_shards([cfg.data.text]).map_batches(
            functools.partial(text_windows, seq_len=cfg.data.text_seq_len), batch_format="numpy"
        )
    return datasets, info


def check_block_memory(cfg: StageConfig) -> None:
    """Warn when the blocks the Train workers of a node hold (up to ~3 each: one fetched ahead, one being taken
    apart, one arriving) would not fit beside Ray Data's share of that node's object store (half of it): the
    store then spills to disk, and ingest slows down ~10x (docs/platform.md, "Ingest")."""
    import ray

    block = getattr(cfg.data, "block_mb", None)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("object_store_memory")]
    if not block or not nodes:
        return
    per_node = math.ceil(cfg.scaling.num_workers / len(nodes))
    store_mb = min(n["Resources"]["object_store_memory"] for n in nodes) / 2**20
    if store_mb / 2 < 3 * block * per_node:
        log.warning(
            "data.block_mb=%d: %d Train workers per node may hold ~%d MB of blocks beside Ray Data's %d MB in a "
            "%d MB object store; lower data.block_mb or enlarge the object store to avoid spilling",
            block, per_node, 3 * block * per_node, store_mb / 2, store_mb,
        )


def split_datasets(cfg: StageConfig, datasets: dict[str, Any]) -> list[str]:
    """The datasets each worker gets a split of (``streaming_split``). In an elastic run the epoch's ``train``
    stream and the ``text`` stream are read whole by every rank in one global order, each rank taking its slice
    (:func:`neurolm.train.loop.global_order_batches`): that is what lets a checkpoint resume on another number of
    workers, at the cost of every worker reading the whole stream."""
    if cfg.scaling.min_workers is None:
        return sorted(datasets)
    return sorted(name for name in datasets if name not in ("train", "text"))


def fit_stage(cfg: StageConfig, callbacks: list[Any] | None = None) -> StageResult:
    """Run one training stage on Ray Train + DeepSpeed and export its consolidated weights.

    ``callbacks`` go to ``RunConfig`` (e.g. Tune's ``TuneReportCallback`` when a Tune trial drives this).
    """
    # Every input (shards, exports, storage) is checked before Ray is imported, started or asked for anything.
    from neurolm.train.inputs import check_stage_inputs

    check_stage_inputs(cfg)

    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from neurolm.train.stages import make_stage

    for uri in [*cfg.shard_uris(), cfg.run.storage_path]:
        storage.check_reachable(uri)  # before any Ray resources are requested
    if storage.is_s3(cfg.run.storage_path):
        storage.ensure_bucket(storage.bucket_of(cfg.run.storage_path))
    stage = make_stage(cfg)  # validates model presets and loads nothing heavy on the driver
    ensure_ray(cfg.run.ray_address)
    check_block_memory(cfg)

    datasets, info = build_datasets(cfg, stage)
    world = cfg.scaling.num_workers
    rows = info["rows"]
    micro_per_step = cfg.train.micro_batch_size * cfg.train.grad_accum_steps
    steps_per_epoch = (rows // world) // micro_per_step
    if steps_per_epoch < 1:
        raise ConfigError(
            f"train shards hold {rows} samples: fewer than one step of {world} workers x "
            f"{cfg.train.micro_batch_size} micro-batch x {cfg.train.grad_accum_steps} accumulation"
        )
    log.info("%s: %d training samples, %d steps/epoch on %d workers", cfg.stage, rows, steps_per_epoch, world)

    options = ExecutionOptions(preserve_order=True)  # a deterministic split is what makes resume exact
    if cfg.data.object_store_memory_mb:
        options.resource_limits = ExecutionResources(object_store_memory=cfg.data.object_store_memory_mb * 2**20)
    storage_path, storage_fs = storage.ray_storage(cfg.run.storage_path)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"stage": cfg.stage, "cfg": cfg.model_dump(mode="json"), "steps_per_epoch": steps_per_epoch,
                           "info": info, "datasets": sorted(datasets)},
        scaling_config=ScalingConfig(
            # Elastic (scaling.min_workers): Ray Train starts as many workers as fit, down to min_workers, and
            # restarts the group larger when resources come back; each start resumes from the last checkpoint.
            num_workers=world if cfg.scaling.min_workers is None else (cfg.scaling.min_workers, world),
            elastic_resize_monitor_interval_s=cfg.scaling.resize_check_s,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        torch_config=TorchConfig(
            backend="nccl" if cfg.scaling.use_gpu else "gloo", timeout_s=cfg.deepspeed.collective_timeout_s
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=split_datasets(cfg, datasets), execution_options=options),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.run.num_to_keep,
                checkpoint_score_attribute=cfg.run.score_attribute,
                checkpoint_score_order=cfg.run.score_order,
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=callbacks,
            # The run's retry budget is this driver's, also where the job's environment says otherwise; the
            # pickled file systems above carry it already (docs/resilience.md, "The retry budget").
            worker_runtime_env={"env_vars": {storage.RETRY_BUDGET_ENV: f"{storage.retry_budget_s():g}"}},
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:
        cause = storage.unreachable_cause(err)
        if cause is None:
            raise
        # Ray's error holds every worker's traceback; what the user needs is one line (docs/resilience.md).
        raise storage.outage_error(f"run {cfg.run.name!r}", cause) from err
    run_dir = storage.join(cfg.run.storage_path, cfg.run.name)
    ckpt_uri = None
    if result.checkpoint is not None:
        ckpt_uri = ("s3://" + result.checkpoint.path) if storage.is_s3(cfg.run.storage_path) else result.checkpoint.path
    export_dir = None
    if cfg.run.export and result.checkpoint is not None:
        export_dir = storage.join(run_dir, "export")
        best = best_checkpoint(result, cfg.run.score_attribute, cfg.run.score_order)
        if best is not result.checkpoint:
            log.info("exporting the best checkpoint by %s: %s", cfg.run.score_attribute, best.path)
        export_checkpoint(stage, best, export_dir)
        log.info("exported consolidated weights to %s", export_dir)
    metrics = dict(result.metrics or {})
    storage.write_text(storage.join(run_dir, "final_metrics.json"), json.dumps(metrics, indent=1, default=float))
    return StageResult(run_dir=run_dir, checkpoint=ckpt_uri, export_dir=export_dir, metrics=metrics)


def best_checkpoint(result: Any, attribute: str | None, order: str):
    """The kept checkpoint with the best finite ``attribute`` (ties: the later one), else the last checkpoint:
    with ``run.score_attribute`` set (e.g. ``val/mean_balanced_accuracy``) the export is the best-validated
    model, not the last one (issue 16)."""
    if not attribute:
        return result.checkpoint
    scored = []
    for checkpoint, metrics in getattr(result, "best_checkpoints", None) or []:
        value = (metrics or {}).get(attribute)
        if isinstance(value, int | float) and math.isfinite(value):
            scored.append((value if order == "max" else -value, (metrics or {}).get("step", 0), checkpoint))
    if not scored:
        return result.checkpoint
    return max(scored, key=lambda item: (item[0], item[1]))[2]


def export_checkpoint(stage: Stage, checkpoint: Any, export_uri: str) -> None:
    """Consolidate a (possibly ZeRO-partitioned) checkpoint into safetensors + config at ``export_uri``.

    The model config is the one the ranks built and saved in the checkpoint's ``state.json``: the driver
    loads no tokenizer, GPT-2 or earlier export to learn it."""
    from neurolm.train.checkpoint import consolidated_state_dict, validate_checkpoint_dir

    with checkpoint.as_directory() as d:
        model_config = validate_checkpoint_dir(d).model_config
        if not model_config:
            raise CheckpointError(f"{checkpoint.path}: state.json holds no model_config (written before exports "
                                  "read it); export it with this version by resuming the run for one step")
        state_dict = consolidated_state_dict(d)
    stage.export(state_dict, export_uri, model_config)


def cli(argv: list[str] | None = None) -> int:
    """``neurolm train {tokenizer,pretrain,instruct} --config YAML [key=value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGE_CONFIGS:
        print(f"usage: neurolm train {{{','.join(STAGE_CONFIGS)}}} --config YAML [key=value ...]", file=sys.stderr)
        return 2
    return job_main(argv[0], argv[1:])


def job_main(stage: str, argv: list[str] | None = None) -> int:
    """Body of ``ray_jobs/<stage>.py`` and ``neurolm train <stage>``: parse, validate, fit, print."""
    parser = argparse.ArgumentParser(prog=f"{stage}", description=f"Train the {stage} stage on Ray + DeepSpeed.")
    parser.add_argument("--config", required=True, help=f"YAML preset, e.g. configs/{stage}/debug.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=10")
    args = parser.parse_args(argv)
    return run_stage_main(stage, args.config, args.overrides)


def run_stage_main(stage: str, config: str, overrides: list[str]) -> int:
    """Shared body of ``ray_jobs/<stage>.py`` and ``neurolm train``: validate, fit, print the result (config
    errors propagate to :func:`neurolm.cli.run_command`, which prints them in one line)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(STAGE_CONFIGS[stage], config, overrides)
    result = fit_stage(cfg)
    print(json.dumps({"run_dir": result.run_dir, "checkpoint": result.checkpoint, "export_dir": result.export_dir,
                      "metrics": result.metrics}, indent=1, default=float))
    return 0
