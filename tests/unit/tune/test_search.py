"""The Ray-free parts of the mixing search: space → weights, objectives, concurrency, the best config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurolm.config import ConfigError, InstructJobConfig, TuneJobConfig, load_config
from neurolm.tune.search import (
    best_config_yaml,
    best_instruct_config,
    derive_max_concurrent_trials,
    objective_key,
    objective_value,
    proportional_params,
    search_dimensions,
    task_sizes,
    trial_instruct_config,
    trial_resources,
    validate_search,
    weights_from_params,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
TASKS = ["SelfRegulationSCP1", "Workload", "TUAB"]


def tune_config(tmp_path: Path, *overrides: str, n_tasks: int = 2) -> TuneJobConfig:
    """The debug preset with local task shards of 30, 10 and 60 rows."""
    tasks = []
    for name, rows in list(zip(TASKS, (30, 10, 60), strict=True))[:n_tasks]:
        for split in ("train", "val"):
            d = tmp_path / name / split
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"label": np.zeros(rows if split == "train" else 4, dtype=np.int64)}),
                           d / "part-00000.parquet")  # fmt: skip
        tasks.append(f"{{name: {name}, train: {tmp_path / name / 'train'}, val: {tmp_path / name / 'val'}}}")
    return load_config(TuneJobConfig, REPO_ROOT / "configs/tune/debug.yaml", [
        f"instruct.preset={REPO_ROOT / 'configs/instruct/debug.yaml'}",
        "instruct.config.init=/nowhere/export",
        f"instruct.config.tasks=[{', '.join(tasks)}]",
        f"storage_path={tmp_path / 'tune'}",
        *overrides,
    ])  # fmt: skip


def test_logits_are_a_softmax_with_the_first_task_as_reference() -> None:
    w = weights_from_params("logits", {"logit_Workload": math.log(3.0), "logit_TUAB": 0.0}, TASKS)
    assert list(w) == TASKS
    assert w == pytest.approx({"SelfRegulationSCP1": 0.2, "Workload": 0.6, "TUAB": 0.2})
    huge = weights_from_params("logits", {"logit_Workload": 800.0, "logit_TUAB": -800.0}, TASKS)
    assert huge["Workload"] == pytest.approx(1.0) and all(math.isfinite(v) for v in huge.values())


def test_temperature_interpolates_from_proportional_to_uniform() -> None:
    sizes = {"SelfRegulationSCP1": 30, "Workload": 10}
    assert weights_from_params("temperature", {"temperature": 1.0}, list(sizes), sizes) == pytest.approx(
        {"SelfRegulationSCP1": 0.75, "Workload": 0.25}
    )
    hot = weights_from_params("temperature", {"temperature": 1e6}, list(sizes), sizes)
    assert hot["Workload"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="sizes"):
        weights_from_params("temperature", {"temperature": 2.0}, list(sizes))


def test_proportional_point_reproduces_the_official_mixture(tmp_path: Path) -> None:
    cfg = tune_config(tmp_path)
    sizes = {"SelfRegulationSCP1": 30, "Workload": 10}
    params = proportional_params(cfg, list(sizes), sizes)
    assert set(params) == set(search_dimensions(cfg, list(sizes)))
    assert weights_from_params("logits", params, list(sizes)) == pytest.approx(
        {"SelfRegulationSCP1": 0.75, "Workload": 0.25}
    )
    # A size ratio beyond the bounds is clipped to them.
    clipped = proportional_params(cfg, list(sizes), {"SelfRegulationSCP1": 10_000, "Workload": 1})
    assert clipped == {"logit_Workload": -2.0}
    hot = tune_config(tmp_path, "search.space=temperature", "search.temperature_bounds=[2, 8]")
    assert proportional_params(hot, list(sizes), sizes) == {"temperature": 2.0}
    assert search_dimensions(hot, list(sizes)) == {"temperature": ("loguniform", 2.0, 8.0)}


def test_objectives_reduce_per_task_balanced_accuracy() -> None:
    metrics = {"val/SelfRegulationSCP1/balanced_accuracy": 0.9, "val/Workload/balanced_accuracy": 0.5,
               "val/TUAB/balanced_accuracy": 0.7, "train/loss": 1.0}  # fmt: skip
    assert objective_value(metrics, TASKS, "mean") == pytest.approx(0.7)
    assert objective_value(metrics, TASKS, "worst") == pytest.approx(0.5)
    assert objective_value(metrics, TASKS, "weighted", {"Workload": 3.0}) == pytest.approx(
        (0.9 + 1.5 + 0.7) / 5
    )
    assert objective_value(metrics, TASKS, "weighted", {"Workload": 0.0, "TUAB": 0.0}) == pytest.approx(0.9)
    # A training-only report has no objective; a task without validated samples (NaN) is left out.
    assert objective_value({"train/loss": 1.0, "step": 3}, TASKS, "mean") is None
    metrics["val/TUAB/balanced_accuracy"] = math.nan
    assert objective_value(metrics, TASKS, "mean") == pytest.approx(0.7)
    assert objective_value(metrics, TASKS, "worst") == pytest.approx(0.5)
    assert objective_key("worst") == "val/worst_balanced_accuracy"
    with pytest.raises(ValueError, match="objective"):
        objective_value(metrics, TASKS, "median")


def test_concurrency_leaves_a_cpu_for_ray_data_and_respects_gpus(tmp_path: Path) -> None:
    instruct = tune_config(tmp_path).instruct_config()
    per_trial = trial_resources(instruct, driver_cpus=0.0)
    assert per_trial == {"CPU": 0.5}  # 1 worker x 0.5 CPU
    assert derive_max_concurrent_trials({"CPU": 2.0}, per_trial, data_cpus=1.0) == 2
    assert derive_max_concurrent_trials({"CPU": 8.0}, per_trial, data_cpus=1.0) == 14
    assert derive_max_concurrent_trials({"CPU": 3.0}, {"CPU": 1.01}, data_cpus=1.0) == 1
    with pytest.raises(ConfigError, match="Ray Data"):
        derive_max_concurrent_trials({"CPU": 1.4}, per_trial, data_cpus=1.0)
    gpu = instruct.model_copy(
        update={"scaling": instruct.scaling.model_copy(update={"use_gpu": True, "num_workers": 4})}
    )
    need = trial_resources(gpu, driver_cpus=0.0)
    assert need == {"CPU": 2.0, "GPU": 4.0}  # 4 workers x (0.5 CPU + 1 GPU)
    assert derive_max_concurrent_trials({"CPU": 64.0, "GPU": 8.0}, need) == 2  # GPUs bound it
    assert derive_max_concurrent_trials({"CPU": 5.0, "GPU": 16.0}, need) == 2  # CPUs bound it
    with pytest.raises(ConfigError):
        derive_max_concurrent_trials({"CPU": 64.0}, need)


def test_task_sizes_come_from_parquet_footers(tmp_path: Path) -> None:
    cfg = tune_config(tmp_path, n_tasks=3)
    assert task_sizes(cfg.instruct_config()) == {"SelfRegulationSCP1": 30, "Workload": 10, "TUAB": 60}


def test_validation_names_the_bad_key(tmp_path: Path) -> None:
    assert [t.name for t in validate_search(tune_config(tmp_path)).tasks] == TASKS[:2]
    with pytest.raises(ConfigError, match="at least two tasks"):
        validate_search(tune_config(tmp_path, n_tasks=1))
    # One task: the temperature is moot but the search is valid.
    validate_search(tune_config(tmp_path, "search.space=temperature", n_tasks=1))
    with pytest.raises(ConfigError, match="importance"):
        validate_search(tune_config(tmp_path, "importance={TUSL: 2}"))
    with pytest.raises(ConfigError, match="grace_period"):
        validate_search(tune_config(tmp_path, "grace_period=5", "max_t=4"))
    with pytest.raises(ConfigError, match="eval_every"):
        validate_search(
            tune_config(tmp_path, "instruct.config.train.eval_every=3", "instruct.config.train.log_every=2")
        )
    with pytest.raises(ConfigError, match="no val shards"):
        validate_search(
            tune_config(tmp_path, "instruct.config.tasks=[{name: TUAB, train: /x}, {name: HMC, train: /y}]")
        )
    with pytest.raises(ConfigError, match="instruct.preset"):
        tune_config(tmp_path, "instruct.preset=/no/such.yaml").instruct_config()
    with pytest.raises(ConfigError, match="logit_bounds"):
        tune_config(tmp_path, "search.logit_bounds=[2, -2]")
    with pytest.raises(ConfigError, match="optim.lr"):
        tune_config(tmp_path, "instruct.overrides=[optim.lr=-1]").instruct_config()


def test_trial_config_is_explicit_under_the_experiment_and_stops_at_max_t(tmp_path: Path) -> None:
    cfg = tune_config(tmp_path)
    base = validate_search(cfg)
    trial = trial_instruct_config(base, cfg, {"SelfRegulationSCP1": 0.4, "Workload": 0.6}, "abc_00001")
    assert trial.mixture.kind == "explicit" and trial.mixture.weights == {
        "SelfRegulationSCP1": 0.4,
        "Workload": 0.6,
    }
    assert trial.run.name == "abc_00001"
    assert trial.run.storage_path == str(tmp_path / "tune" / "tune-mixing-debug" / "runs")
    assert not trial.run.export and trial.train.max_steps == cfg.max_t
    by_reports = tune_config(tmp_path, "time_attr=training_iteration")
    assert (
        trial_instruct_config(base, by_reports, {"Workload": 1.0}, "t").train.max_steps
        == base.train.max_steps
    )


def test_best_config_round_trips_through_load_config(tmp_path: Path) -> None:
    cfg = tune_config(tmp_path, "final_overrides=[train.max_steps=null, train.epochs=5]")
    base = validate_search(cfg)
    weights = {"SelfRegulationSCP1": 0.3, "Workload": 0.7}
    best = best_instruct_config(base, cfg, weights)
    path = tmp_path / "best_mixture.yaml"
    path.write_text(best_config_yaml(best, ["Best task mixture.", "Trial x: 0.8"]))
    assert path.read_text().startswith("# Best task mixture.\n# Trial x: 0.8\n")
    loaded = load_config(InstructJobConfig, path)
    assert loaded == best
    assert loaded.mixture.kind == "explicit" and loaded.mixture.weights == weights
    assert loaded.train.epochs == 5 and loaded.train.max_steps is None
    assert loaded.run.name == "tune-mixing-debug-best-mixture" and loaded.init == "/nowhere/export"
    with pytest.raises(ConfigError, match="final_overrides"):
        best_instruct_config(base, tune_config(tmp_path, "final_overrides=[train.epochs=0]"), weights)


def test_search_score_breaks_ties_by_val_loss_without_reordering_accuracies() -> None:
    from neurolm.tune.search import search_score

    tied = [search_score(0.5, {"val/loss": loss}, 1e-3) for loss in (0.69, 0.71)]
    assert tied[0] > tied[1]
    # A better balanced accuracy wins whatever the loss (losses are O(1), accuracy steps O(1 / n_val)).
    assert search_score(0.55, {"val/loss": 5.0}, 1e-3) > search_score(0.5, {"val/loss": 0.1}, 1e-3)
    assert search_score(0.5, {}, 1e-3) == 0.5 and search_score(0.5, {"val/loss": 3.0}, 0.0) == 0.5
