"""Ray Tune search over the instruction-tuning task mixture: Optuna proposes weights, ASHA stops bad trials early.

Each trial is a Tune *function trainable* (:func:`train_driver_fn`, the Train V2 pattern of docs/platform.md §5) that
turns its parameters into explicit task weights and runs one stage-3 ``TorchTrainer`` through
:func:`neurolm.train.launch.fit_stage`. An :class:`ObjectiveReportCallback` forwards the workers' validation
reports to Tune with the objective added (mean, worst or importance-weighted ``val/<task>/balanced_accuracy``).
At the end the best weights are written as a ready-to-use stage-3 config (``mixture.kind: explicit``) next to a
plot of all trials, a CSV of every validation report and a summary::

    summary = run_mixing_search(load_config(TuneJobConfig, "configs/tune/debug.yaml", overrides))
    summary["best"]["weights"]      # {"SelfRegulationSCP1": 0.31, "Workload": 0.69}
    summary["best_config"]          # s3://…/best_mixture.yaml → load_config(InstructJobConfig, that file)

Trial drivers hold no CPU (a tiny ``memory`` bundle instead): Ray Data's tasks ask for whole CPUs, so the
0.01-CPU driver of docs/platform.md §5 leaves 0.99 CPU on a 2-CPU machine and the trial's ingest never starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from neurolm import storage
from neurolm.config import ConfigError, InstructJobConfig, TuneJobConfig, load_config
from neurolm.tune.search import (
    LOGIT_PREFIX,
    SEARCH_METRIC,
    best_config_yaml,
    best_instruct_config,
    derive_max_concurrent_trials,
    objective_key,
    objective_value,
    proportional_params,
    search_dimensions,
    search_score,
    task_names,
    task_sizes,
    trial_instruct_config,
    trial_resources,
    validate_search,
    weights_from_params,
)

__all__ = ["ObjectiveReportCallback", "train_driver_fn", "run_mixing_search", "cli"]

log = logging.getLogger("neurolm.tune")

DRIVER_MEMORY = 64 * 2**20  # the trial driver's bundle: Tune refuses an empty one (docs/platform.md §5)


class ObjectiveReportCallback(TuneReportCallback):
    """A ``TuneReportCallback`` that adds ``objective_key(objective)`` to the workers' validation reports and
    forwards only those (Tune requires the objective in every result it sees; training-only reports lack it)."""

    def __init__(self, tasks: list[str], objective: str, importance: dict[str, float], tie_break_loss: float) -> None:
        super().__init__()
        self.tasks, self.objective, self.importance = tasks, objective, importance
        self.tie_break_loss = tie_break_loss

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        value = objective_value(metrics[0], self.tasks, self.objective, self.importance)
        if value is None:
            return
        first = {**metrics[0], objective_key(self.objective): value,
                 SEARCH_METRIC: search_score(value, metrics[0], self.tie_break_loss)}
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


class EarlyStopRecorder(Callback):
    """Records the trials the scheduler stopped before ``max_t`` (a STOP decision marks the result ``done``;
    a trial that returns on its own ends with a duplicate result that callbacks never see)."""

    def __init__(self, time_attr: str, max_t: int) -> None:
        self.time_attr, self.max_t = time_attr, max_t
        self.stopped: dict[str, float] = {}

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        reached = result.get(self.time_attr)
        if result.get("done") and isinstance(reached, (int, float)) and reached < self.max_t:
            self.stopped[trial.trial_id] = float(reached)


def train_driver_fn(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: parameters → explicit weights → one stage-3 ``TorchTrainer`` run reporting to Tune.

    ``setup`` (bound with ``tune.with_parameters``) holds the tune config, the trials' base stage-3 config (as
    JSON-able dicts) and the tasks' sizes.
    """
    from ray import tune

    from neurolm.train.launch import fit_stage

    cfg = TuneJobConfig.model_validate(setup["tune"])
    base = InstructJobConfig.model_validate(setup["instruct"])
    tasks = task_names(base)
    weights = weights_from_params(cfg.search.space, config, tasks, setup["sizes"])
    trial_id = tune.get_context().get_trial_id()
    instruct = trial_instruct_config(base, cfg, weights, trial_id)
    callback = ObjectiveReportCallback(tasks, cfg.objective, dict(cfg.importance), cfg.tie_break_loss)
    fit_stage(instruct, callbacks=[callback])


def _param_space(cfg: TuneJobConfig, tasks: list[str]) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for name, (kind, low, high) in search_dimensions(cfg, tasks).items():
        space[name] = tune.loguniform(low, high) if kind == "loguniform" else tune.uniform(low, high)
    return space


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _callbacks(cfg: TuneJobConfig) -> list[Any]:
    callbacks: list[Any] = []
    if cfg.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if cfg.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        from neurolm.runtime import wandb_mode

        callbacks.append(WandbLoggerCallback(project=cfg.wandb_project, group=cfg.name, mode=wandb_mode()))
    return callbacks


def _max_concurrent(cfg: TuneJobConfig, base: InstructJobConfig) -> int:
    if cfg.max_concurrent_trials is not None:
        return cfg.max_concurrent_trials
    import ray

    return derive_max_concurrent_trials(
        ray.cluster_resources(), trial_resources(base, cfg.driver_cpus), data_cpus=cfg.data_cpus
    )


def _trial_summaries(
    results: Any, cfg: TuneJobConfig, tasks: list[str], sizes: dict[str, int], stopped: dict[str, float]
) -> list[dict]:
    """One row per trial: parameters, weights, last and best search score, how far it got, its last checkpoint."""
    key = SEARCH_METRIC
    rows = []
    for result in results:
        params = {
            k: v for k, v in (result.config or {}).items() if k.startswith(LOGIT_PREFIX) or k == "temperature"
        }
        history = result.metrics_dataframe
        records = [] if history is None else history.to_dict("records")
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        ckpts = [r["checkpoint_path"] for r in records if isinstance(r.get("checkpoint_path"), str)]
        last = records[-1] if records else {}
        reached = last.get(cfg.time_attr)
        trial_id = (result.metrics or {}).get("trial_id") or last.get("trial_id")
        rows.append(
            {
                "trial_id": trial_id,
                "params": params,
                "weights": weights_from_params(cfg.search.space, params, tasks, sizes) if params else None,
                "objective_last": values[-1] if values else None,
                "objective_best": max(values) if values else None,
                "reached": reached,
                "stopped_early": trial_id in stopped,
                "error": None if result.error is None else repr(result.error)[:500],
                "checkpoint": ckpts[-1] if ckpts else None,
                "records": records,
            }
        )
    return rows


def _export_best(cfg: TuneJobConfig, base: InstructJobConfig, checkpoint_path: str, out_uri: str) -> str:
    """Consolidate the best trial's last checkpoint into a safetensors export at ``out_uri``."""
    from ray.train import Checkpoint

    from neurolm.train.launch import export_checkpoint
    from neurolm.train.stages import make_stage

    fs = storage.ray_storage(cfg.storage_path)[1]
    export_checkpoint(make_stage(base), Checkpoint(checkpoint_path, filesystem=fs), out_uri)
    return out_uri


def run_mixing_search(cfg: TuneJobConfig) -> dict[str, Any]:
    """Run the search and write its results; the Python API of ``neurolm tune`` (the pipeline calls this).

    Returns
    -------
    dict
        ``experiment`` (URI of the Tune experiment), ``objective`` (metric key), ``best`` (trial id, params,
        weights, objective), ``best_config`` (URI of the stage-3 YAML), ``plot``, ``trials_csv``,
        ``export_dir`` (or None), ``trials`` (per-trial rows without their history), ``num_trials``,
        ``stopped_early``, ``errors``, ``max_concurrent_trials``, ``wall_s``.

    Raises
    ------
    ConfigError
        Invalid search (checked before any resource is requested), or no trial reported a finite objective.
    """
    import time

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from neurolm.eval.report import plot_trials
    from neurolm.runtime import ensure_ray

    start = time.perf_counter()
    base = validate_search(cfg)
    tasks = task_names(base)
    for uri in [t.train for t in base.tasks] + [t.val for t in base.tasks] + [cfg.storage_path]:
        storage.check_reachable(str(uri))
    if storage.is_s3(cfg.storage_path):
        storage.ensure_bucket(storage.bucket_of(cfg.storage_path))
    sizes = task_sizes(base)
    ensure_ray(cfg.ray_address or base.run.ray_address)
    concurrent = _max_concurrent(cfg, base)
    key = SEARCH_METRIC  # the objective with a small loss tie-break (search.SEARCH_METRIC)
    log.info(
        "mixing search %s: tasks %s (sizes %s), %d trials, %d at a time, objective %s",
        cfg.name,
        tasks,
        sizes,
        cfg.num_samples,
        concurrent,
        key,
    )

    points = [proportional_params(cfg, tasks, sizes)] if cfg.search.include_proportional else None
    searcher = OptunaSearch(points_to_evaluate=points, seed=cfg.seed)
    scheduler = ASHAScheduler(
        time_attr=cfg.time_attr,
        max_t=cfg.max_t,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )
    setup = {"tune": cfg.model_dump(mode="json"), "instruct": base.model_dump(mode="json"), "sizes": sizes}
    resources: dict[str, float] = (
        {"CPU": cfg.driver_cpus} if cfg.driver_cpus > 0 else {"CPU": 0, "memory": DRIVER_MEMORY}
    )
    trainable = tune.with_resources(tune.with_parameters(train_driver_fn, setup=setup), resources)
    storage_path, storage_fs = storage.ray_storage(cfg.storage_path)
    recorder = EarlyStopRecorder(cfg.time_attr, cfg.max_t)
    tuner = tune.Tuner(
        trainable,
        param_space=_param_space(cfg, tasks),
        tune_config=tune.TuneConfig(
            metric=key,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            callbacks=[recorder, *_callbacks(cfg)],
            failure_config=tune.FailureConfig(max_failures=cfg.trial_max_failures),
            verbose=1,
        ),
    )
    results = tuner.fit()

    rows = _trial_summaries(results, cfg, tasks, sizes, recorder.stopped)
    scored = [r for r in rows if r["objective_best"] is not None]
    if not scored:
        errors = [r["error"] for r in rows if r["error"]]
        raise ConfigError(f"no trial reported a finite {key}; trial errors: {errors[:3]}")
    best = max(scored, key=lambda r: (r["objective_best"], r["reached"] or 0))
    out = cfg.output or storage.join(cfg.storage_path, cfg.name)

    best_cfg = best_instruct_config(base, cfg, best["weights"])
    header = [
        f"Best task mixture of the Ray Tune search {cfg.name!r} ({len(rows)} trials, Optuna + ASHA).",
        f"Trial {best['trial_id']}: {key} = {best['objective_best']:.4f} (search space: {cfg.search.space}, "
        f"params {json.dumps(best['params'])}).",
        "Train with: python ray_jobs/instruct.py --config best_mixture.yaml",
    ]
    best_uri = storage.join(out, "best_mixture.yaml")
    storage.write_text(best_uri, best_config_yaml(best_cfg, header))

    records = [{**rec, "trial_id": r["trial_id"]} for r in rows for rec in r["records"]]
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "trials.png"
        plot_trials(records, key, png, mode="max")
        plot_uri = storage.join(out, "trials.png")
        storage.write_bytes(plot_uri, png.read_bytes())
    csv_uri = storage.join(out, "trials.csv")
    storage.write_text(csv_uri, _records_csv(records, tasks, key, cfg.time_attr))

    export_dir = None
    if cfg.export_best and best["checkpoint"]:
        export_dir = _export_best(cfg, base, best["checkpoint"], storage.join(out, "best_export"))

    summary = {
        "experiment": storage.join(cfg.storage_path, cfg.name),
        "objective": key,
        "best": {
            k: best[k] for k in ("trial_id", "params", "weights", "objective_best", "reached", "checkpoint")
        },
        "best_config": best_uri,
        "plot": plot_uri,
        "trials_csv": csv_uri,
        "export_dir": export_dir,
        "sizes": sizes,
        "trials": [{k: v for k, v in r.items() if k != "records"} for r in rows],
        "num_trials": len(rows),
        "stopped_early": sum(r["stopped_early"] for r in rows),
        "errors": sum(r["error"] is not None for r in rows),
        "max_concurrent_trials": concurrent,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=1, default=str))
    log.info("best mixture %s (%s = %.4f) -> %s", best["weights"], key, best["objective_best"], best_uri)
    return summary


def _records_csv(records: list[dict[str, Any]], tasks: list[str], key: str, time_attr: str) -> str:
    columns = ["trial_id", time_attr, key] + [f"val/{t}/balanced_accuracy" for t in tasks] + ["val/loss"]
    lines = [",".join(columns)]
    for rec in records:
        if key in rec:
            lines.append(",".join("" if rec.get(c) is None else str(rec.get(c)) for c in columns))
    return "\n".join(lines) + "\n"


def cli(argv: list[str] | None = None) -> int:
    """``neurolm tune --config configs/tune/debug.yaml [key=value ...]``: run the search, print the summary."""
    parser = argparse.ArgumentParser(
        prog="neurolm tune",
        description="Ray Tune (Optuna + ASHA) search over instruction-tuning task mixing weights.",
    )
    parser.add_argument("--config", required=True, help="YAML preset, e.g. configs/tune/debug.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_samples=16 objective=worst")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(TuneJobConfig, args.config, args.overrides)
    validate_search(cfg)
    summary = run_mixing_search(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1, default=str))
    return 0
