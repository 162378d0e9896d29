"""The pure parts of the mixing search: search space ↔ weights, objectives, trial sizing, the best config.

Nothing here imports Ray, so all of it is unit-tested without a cluster; :mod:`neurolm.tune.mixing` wires it into
Ray Tune.

Search spaces (``TuneJobConfig.search.space``):

- ``logits``: one parameter ``logit_<task>`` per task except the first, whose logit is fixed at 0 (softmax is
  invariant to a common shift, so a free first logit would only add a flat direction for the sampler);
  ``w = softmax(logits)``.
- ``temperature``: one parameter ``temperature``; ``w_t ∝ n_t^(1/T)`` over the tasks' training sizes ``n_t``
  (``T = 1`` is the official size-proportional mix of docs/reference.md §4.4, ``T → ∞`` uniform).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from neurolm import storage
from neurolm.config import ConfigError, InstructJobConfig, TuneJobConfig, apply_overrides
from neurolm.data.mixture import mixture_weights
from neurolm.data.shards import count_rows

__all__ = [
    "LOGIT_PREFIX",
    "TEMPERATURE_PARAM",
    "objective_key",
    "SEARCH_METRIC",
    "search_score",
    "task_names",
    "task_sizes",
    "search_dimensions",
    "weights_from_params",
    "proportional_params",
    "objective_value",
    "trial_resources",
    "derive_max_concurrent_trials",
    "validate_search",
    "trial_instruct_config",
    "best_instruct_config",
    "best_config_yaml",
]

LOGIT_PREFIX = "logit_"
TEMPERATURE_PARAM = "temperature"
_BACC = "val/{task}/balanced_accuracy"


SEARCH_METRIC = "tune/score"
"""What Optuna and ASHA rank: the objective minus ``tie_break_loss`` x ``val/loss`` (mean NLL of the true answer).
Balanced accuracy on small validation splits is coarse and ties often (every untrained trial scores 0.5); the
small loss term orders tied trials by how confidently they answer, without reordering different accuracies."""


def search_score(objective: float, metrics: Mapping[str, Any], tie_break_loss: float) -> float:
    """The :data:`SEARCH_METRIC` of one validation report."""
    loss = metrics.get("val/loss")
    if tie_break_loss and isinstance(loss, (int, float)) and math.isfinite(loss):
        return float(objective - tie_break_loss * loss)
    return float(objective)


def objective_key(objective: str) -> str:
    """The metric Tune optimises: ``val/mean_balanced_accuracy``, ``val/worst_…`` or ``val/weighted_…``."""
    return f"val/{objective}_balanced_accuracy"


def task_names(cfg: InstructJobConfig) -> list[str]:
    """Task names in config order (the first one is the logit reference)."""
    return [t.name for t in cfg.tasks]


def task_sizes(cfg: InstructJobConfig) -> dict[str, int]:
    """Training samples per task, from the Parquet footers (reads no signal, needs no Ray)."""
    sizes: dict[str, int] = {}
    for t in cfg.tasks:
        assert t.train is not None  # validate_search checked it
        try:
            sizes[t.name] = count_rows(t.train)
        except storage.StorageError as err:
            raise storage.StorageError(f"{err} (task {t.name})") from None
    return sizes


def search_dimensions(cfg: TuneJobConfig, tasks: Sequence[str]) -> dict[str, tuple[str, float, float]]:
    """Parameter name → (``uniform`` | ``loguniform``, low, high): the space :mod:`neurolm.tune.mixing` hands to
    Tune (Optuna samples it)."""
    s = cfg.search
    if s.space == "temperature":
        return {TEMPERATURE_PARAM: ("loguniform", *s.temperature_bounds)}
    return {f"{LOGIT_PREFIX}{t}": ("uniform", *s.logit_bounds) for t in tasks[1:]}


def weights_from_params(
    space: str, params: Mapping[str, Any], tasks: Sequence[str], sizes: Mapping[str, int] | None = None
) -> dict[str, float]:
    """A trial's parameters → normalised task weights (one per task, in ``tasks`` order, summing to 1).

    ``sizes`` is needed for the temperature space only.
    """
    if space == "logits":
        logits = np.array([0.0] + [float(params[f"{LOGIT_PREFIX}{t}"]) for t in tasks[1:]])
        z = np.exp(logits - logits.max())  # stable softmax
        return {t: float(w) for t, w in zip(tasks, z / z.sum(), strict=True)}
    if space == "temperature":
        if sizes is None:
            raise ValueError("the temperature space needs the tasks' sizes")
        return mixture_weights(
            "temperature", {t: sizes[t] for t in tasks}, temperature=float(params[TEMPERATURE_PARAM])
        )
    raise ValueError(f"unknown search space {space!r}; choose logits or temperature")


def proportional_params(
    cfg: TuneJobConfig, tasks: Sequence[str], sizes: Mapping[str, int]
) -> dict[str, float]:
    """The point of the search space closest to the official size-proportional mix (docs/reference.md §4.4).

    logits: ``log(n_t / n_first)`` clipped to the bounds (exact unless a size ratio exceeds them);
    temperature: ``T = 1`` clipped to the bounds.
    """
    if cfg.search.space == "temperature":
        low, high = cfg.search.temperature_bounds
        return {TEMPERATURE_PARAM: float(min(max(1.0, low), high))}
    low, high = cfg.search.logit_bounds
    ref = max(sizes[tasks[0]], 1)
    return {
        f"{LOGIT_PREFIX}{t}": float(min(max(math.log(max(sizes[t], 1) / ref), low), high)) for t in tasks[1:]
    }


def objective_value(
    metrics: Mapping[str, Any],
    tasks: Sequence[str],
    objective: str,
    importance: Mapping[str, float] | None = None,
) -> float | None:
    """Reduce ``val/<task>/balanced_accuracy`` over tasks; ``None`` when this report holds no validation.

    ``mean`` and ``worst`` ignore NaN tasks (a val split with no labelled sample), as the workers' own
    ``val/mean_balanced_accuracy`` does; ``weighted`` is ``Σ_t a_t·bacc_t / Σ_t a_t`` over the finite tasks with
    importances ``a_t`` (missing tasks count 1). NaN when no task is finite.
    """
    keys = [_BACC.format(task=t) for t in tasks]
    if not any(k in metrics for k in keys):
        return None
    values = np.array([float(metrics.get(k, math.nan)) for k in keys])
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan
    if objective == "mean":
        return float(values[finite].mean())
    if objective == "worst":
        return float(values[finite].min())
    if objective == "weighted":
        a = np.array([float((importance or {}).get(t, 1.0)) for t in tasks])[finite]
        if a.sum() <= 0:
            return math.nan
        return float((a * values[finite]).sum() / a.sum())
    raise ValueError(f"unknown objective {objective!r}; choose mean, worst or weighted")


def trial_resources(instruct: InstructJobConfig, driver_cpus: float) -> dict[str, float]:
    """What one trial holds while it runs: its Train workers plus its driver."""
    s = instruct.scaling
    need = {"CPU": s.num_workers * s.cpus_per_worker + driver_cpus}
    if s.use_gpu:
        need["GPU"] = s.num_workers * s.gpus_per_worker
    return need


def derive_max_concurrent_trials(
    cluster: Mapping[str, float], per_trial: Mapping[str, float], data_cpus: float = 1.0
) -> int:
    """How many trials the cluster runs at once without one waiting for workers another holds.

    ``floor((CPU − data_cpus) / trial CPU)`` and ``floor(GPU / trial GPU)``, whichever is smaller. ``data_cpus``
    stays free for Ray Data: its tasks ask for whole CPUs, and a cluster whose free CPUs are all fractions
    starves the trials' ingest forever (measured: 0.99 free CPU → a map task never starts). At least 1 when
    one trial fits at all.

    Raises
    ------
    ConfigError
        Not even one trial (with ``data_cpus`` left over) fits the cluster.
    """
    counts = []
    for resource, amount in per_trial.items():
        if amount <= 0:
            continue
        free = float(cluster.get(resource, 0.0)) - (data_cpus if resource == "CPU" else 0.0)
        counts.append(math.floor(free / amount + 1e-9))
    fits = min(counts) if counts else 1
    if fits < 1:
        raise ConfigError(
            f"one trial needs {dict(per_trial)} (+ {data_cpus} CPU left for Ray Data) but the cluster has "
            f"{ {k: cluster.get(k, 0.0) for k in per_trial} }: shrink instruct.scaling, lower data_cpus, or set "
            "max_concurrent_trials explicitly on an autoscaling cluster"
        )
    return fits


def validate_search(cfg: TuneJobConfig) -> InstructJobConfig:
    """Check the whole search on the driver before any resource is requested; return the trials' base config."""
    instruct = cfg.instruct_config()
    tasks = task_names(instruct)
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"instruct.tasks: task names must be unique, got {tasks}")
    if len(tasks) < 2 and cfg.search.space == "logits":
        raise ConfigError("instruct.tasks: a search over mixing weights needs at least two tasks")
    no_val = [t.name for t in instruct.tasks if not t.val]
    if no_val:
        raise ConfigError(
            f"instruct.tasks: {no_val} have no val shards; the objective needs every task's val"
        )
    no_train = [t.name for t in instruct.tasks if not t.train]
    if no_train:
        raise ConfigError(f"instruct.tasks: {no_train} have no train shards")
    unknown = sorted(set(cfg.importance) - set(tasks))
    if unknown:
        raise ConfigError(f"importance: unknown tasks {unknown}; tasks: {tasks}")
    if cfg.objective == "weighted" and sum(cfg.importance.get(t, 1.0) for t in tasks) <= 0:
        raise ConfigError("importance: the weighted objective needs a positive total importance")
    if cfg.grace_period > cfg.max_t:
        raise ConfigError(f"grace_period = {cfg.grace_period}: must be <= max_t = {cfg.max_t}")
    if instruct.train.eval_every is None:
        raise ConfigError(
            "instruct train.eval_every: ASHA needs validation during training (set a step count)"
        )
    if (
        instruct.train.log_every > instruct.train.eval_every
        or instruct.train.eval_every % instruct.train.log_every
    ):
        raise ConfigError(
            f"instruct train.eval_every = {instruct.train.eval_every}: must be a multiple of train.log_every = "
            f"{instruct.train.log_every} (validation runs only on logged steps)"
        )
    try:
        apply_overrides(instruct.model_dump(mode="json"), cfg.final_overrides)
    except ConfigError as err:
        raise ConfigError(f"final_overrides: {err}") from None
    return instruct


def trial_instruct_config(
    base: InstructJobConfig, cfg: TuneJobConfig, weights: Mapping[str, float], trial_id: str
) -> InstructJobConfig:
    """One trial's stage-3 config: explicit weights, its own run under the experiment, no export, no W&B
    from the workers (the Tune loggers record every validation of every trial)."""
    tree = base.model_dump(mode="json")
    tree["mixture"].update(kind="explicit", weights=dict(weights), temperature=1.0)
    if cfg.time_attr == "step":
        tree["train"]["max_steps"] = cfg.max_t  # the trial ends where ASHA would stop it, with a checkpoint
    tree["run"].update(
        name=trial_id,
        storage_path=storage.join(cfg.storage_path, cfg.name, "runs"),
        export=False,
        wandb=False,
        num_to_keep=1,
        ray_address=None,
    )
    return InstructJobConfig.model_validate(tree)


def best_instruct_config(
    base: InstructJobConfig, cfg: TuneJobConfig, weights: Mapping[str, float]
) -> InstructJobConfig:
    """The ready-to-use stage-3 config: the trials' base config with the best weights (``kind: explicit``) and a
    run name of its own, then ``final_overrides``."""
    tree = base.model_dump(mode="json")
    tree["mixture"].update(
        kind="explicit", weights={t: float(w) for t, w in weights.items()}, temperature=1.0
    )
    tree["run"]["name"] = f"{cfg.name}-best-mixture"
    apply_overrides(tree, cfg.final_overrides)
    try:
        return InstructJobConfig.model_validate(tree)
    except Exception as err:  # pydantic's ValidationError: name the source
        raise ConfigError(f"final_overrides give an invalid stage-3 config: {err}") from None


def best_config_yaml(instruct: InstructJobConfig, header: Sequence[str]) -> str:
    """YAML of a stage-3 config, with ``header`` lines as comments on top (loadable by ``load_config``)."""
    body = yaml.safe_dump(instruct.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" for line in header) + body
