"""The driver side of a training stage: datasets from object storage, a ``TorchTrainer``, and the export.

``fit_stage(cfg)`` is what ``ray_jobs/<stage>.py``, ``neurolm train <stage>`` and the pipeline call. The config
is validated before this runs; storage is checked before Ray resources are requested.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from neurolm import storage
from neurolm.config import (
    ConfigError,
    InstructJobConfig,
    PretrainJobConfig,
    TokenizerJobConfig,
    _StageConfig,
    load_config,
)

log = logging.getLogger("neurolm.train")

STAGE_CONFIGS: dict[str, type[_StageConfig]] = {
    "tokenizer": TokenizerJobConfig,
    "pretrain": PretrainJobConfig,
    "instruct": InstructJobConfig,
}

WORKER_ENV = ("DS_ACCELERATOR", "WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    run_dir: str  # storage_path/name: Ray's run directory (checkpoints, metrics)
    checkpoint: str | None  # URI of the last checkpoint
    export_dir: str | None  # URI of the consolidated safetensors export
    metrics: dict[str, Any]


def worker_env() -> dict[str, str]:
    """Environment forwarded to Ray workers: S3 settings plus the offline/accelerator switches."""
    env = storage.storage_env()
    env.update({k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)})
    return env


def ensure_ray(address: str | None) -> None:
    """Connect to ``address`` / ``RAY_ADDRESS``, or start a local instance sized for this machine."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": worker_env()}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        init_local_ray(runtime_env["env_vars"])


def init_local_ray(env_vars: dict[str, str], num_cpus: int | None = None, **kwargs: Any) -> None:
    """A fresh local Ray instance (immune to a stale ``ray_current_cluster`` file) with the dashboard on.

    Train V2's placement-group cleaner asks the state API for its controller; with several Ray instances on
    one machine its address auto-detection fails ("Found multiple active Ray instances") and finished runs
    leak their placement groups. Pinning the dashboard port and handing its URL to every worker avoids that.
    """
    import ray

    from neurolm.s3server import free_ports

    port = free_ports(1)[0]
    env = {**env_vars, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=int(1e9), include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=port, runtime_env={"env_vars": env}, **kwargs)


def _uris(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_shards(uris: list[str]):
    """A streaming Ray Dataset over Parquet shards in one or more directories (local or s3://)."""
    import ray.data

    fs, _ = storage.resolve(uris[0])
    paths = []
    for uri in uris:
        files = storage.list_files(uri, suffix=".parquet")
        if not files:
            raise storage.StorageError(f"{uri}: no .parquet shards found")
        paths += [storage.resolve(f)[1] for f in files]
    return ray.data.read_parquet(paths, filesystem=fs, shuffle=None)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's worker entry point: rebuild the config and the stage, then run the shared loop."""
    from neurolm.train.loop import run_worker_loop
    from neurolm.train.stages import make_stage

    cfg = STAGE_CONFIGS[config["stage"]].model_validate(config["cfg"])
    run_worker_loop(make_stage(cfg), cfg, steps_per_epoch=config["steps_per_epoch"], info=config.get("info"))


def build_datasets(cfg: _StageConfig, stage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stage's datasets (mapped into its token layout) and facts for the workers (``rows``: train size).

    Rows are counted from Parquet metadata before any mapping, so counting reads no signal.
    """
    if hasattr(stage, "datasets"):
        datasets, info = stage.datasets(read_shards)
    else:
        transform = stage.batch_transform()
        raw = read_shards(_uris(cfg.data.train))
        info = {"rows": raw.count()}
        # pyarrow batches: the layout reads the signal bytes in place (numpy batches copy each row to bytes).
        datasets = {"train": raw.map_batches(transform, batch_format="pyarrow")}
        if cfg.data.val:
            datasets["val"] = read_shards(_uris(cfg.data.val)).map_batches(transform, batch_format="pyarrow")
    if cfg.data.text and cfg.data.text_batch_size > 0:
        from neurolm.data.text import text_windows

        datasets["text"] = read_shards([cfg.data.text]).map_batches(
            functools.partial(text_windows, seq_len=cfg.data.text_seq_len), batch_format="numpy"
        )
    return datasets, info


def fit_stage(cfg: _StageConfig, callbacks: list[Any] | None = None) -> StageResult:
    """Run one training stage on Ray Train + DeepSpeed and export its consolidated weights.

    ``callbacks`` go to ``RunConfig`` (e.g. Tune's ``TuneReportCallback`` when a Tune trial drives this).
    """
    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from neurolm.train.stages import make_stage

    task_uris = [u for t in getattr(cfg, "tasks", []) for u in (t.train, t.val) if u]  # stage 3
    for uri in _uris(cfg.data.train) + _uris(cfg.data.val) + task_uris + [cfg.run.storage_path]:
        storage.check_reachable(uri)  # before any Ray resources are requested
    if storage.is_s3(cfg.run.storage_path):
        storage.ensure_bucket(cfg.run.storage_path[5:].split("/", 1)[0])
    stage = make_stage(cfg)  # validates model presets and loads nothing heavy on the driver
    ensure_ray(cfg.run.ray_address)

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
                           "info": info},
        scaling_config=ScalingConfig(
            num_workers=world,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        torch_config=TorchConfig(
            backend="nccl" if cfg.scaling.use_gpu else "gloo", timeout_s=cfg.deepspeed.collective_timeout_s
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split="all", execution_options=options),
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
        ),
    )
    result = trainer.fit()
    run_dir = storage.join(cfg.run.storage_path, cfg.run.name)
    ckpt_uri = None
    if result.checkpoint is not None:
        ckpt_uri = ("s3://" + result.checkpoint.path) if storage.is_s3(cfg.run.storage_path) else result.checkpoint.path
    export_dir = None
    if cfg.run.export and result.checkpoint is not None:
        export_dir = storage.join(run_dir, "export")
        export_checkpoint(stage, result.checkpoint, export_dir)
        log.info("exported consolidated weights to %s", export_dir)
    metrics = dict(result.metrics or {})
    storage.write_text(storage.join(run_dir, "final_metrics.json"), json.dumps(metrics, indent=1, default=float))
    return StageResult(run_dir=run_dir, checkpoint=ckpt_uri, export_dir=export_dir, metrics=metrics)


def export_checkpoint(stage, checkpoint, export_uri: str) -> None:
    """Consolidate a (possibly ZeRO-partitioned) checkpoint into safetensors + config at ``export_uri``."""
    from neurolm.train.checkpoint import consolidated_state_dict

    with checkpoint.as_directory() as d:
        state_dict = consolidated_state_dict(d)
    stage.export(state_dict, export_uri)


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
    """Shared body of ``ray_jobs/<stage>.py`` and ``neurolm train``: validate, fit, print the result."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(STAGE_CONFIGS[stage], config, overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    result = fit_stage(cfg)
    print(json.dumps({"run_dir": result.run_dir, "checkpoint": result.checkpoint, "export_dir": result.export_dir,
                      "metrics": result.metrics}, indent=1, default=float))
    return 0
