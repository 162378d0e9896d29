"""scripts/seed_study.py: the per-run figures read from an evaluation's outputs, and the seed ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def study(load_script):
    return load_script("seed_study")


def _write_run(
    d: Path, probs: list[tuple[float, float]], labels: list[int], ids: list[str], bacc: float
) -> Path:
    """An evaluation output folder as the pipeline's ``results_dir`` holds it (the columns the study reads)."""
    d.mkdir(parents=True)
    report = {"tasks": {"test/Blink": {
        "task": "Blink", "split": "test", "collapsed": False,
        "metrics": {"balanced_accuracy": bacc, "calibrated/balanced_accuracy": bacc, "roc_auc": 0.9},
        "baselines": {"lda/means": {"balanced_accuracy": 0.43}, "lda/bandpower": {"balanced_accuracy": 0.70}},
    }}}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(report))
    lines = ["sample_id,label,pred,p_long_blink,p_short_blink,gen_pred,generated"]
    lines += [
        f"{i},{y},{int(p[1] > p[0])},{p[0]},{p[1]},0,A)" for i, y, p in zip(ids, labels, probs, strict=True)
    ]
    (d / "predictions_test_Blink.csv").write_text("\n".join(lines) + "\n")
    (d / "wall_s.txt").write_text("300.0\n")
    return d


def test_figures_read_the_model_the_best_baseline_and_the_target(study, tmp_path: Path) -> None:
    run = _write_run(tmp_path / "blink-s1", [(0.9, 0.1), (0.2, 0.8)], [0, 1], ["a", "b"], 0.69)
    fig = study.figures(run, 1)
    assert (fig["best_baseline_name"], fig["best_baseline"], fig["target"]) == ("lda/bandpower", 0.70, 0.68)
    assert fig["met"] is True and fig["balanced_accuracy"] == 0.69 and fig["wall_s"] == 300.0
    assert (
        study.figures(_write_run(tmp_path / "blink-s2", [(0.9, 0.1)], [0], ["a"], 0.679), 2)["met"] is False
    )


def test_the_ensemble_averages_probabilities_row_by_sample_id(study, tmp_path: Path) -> None:
    labels = [0, 0, 1, 1]
    # Seed 1 is right on rows a, c; seed 2 (rows written in another order) on b, d; both are confident where
    # they are right and only mildly wrong elsewhere, so their mean answers all four rows correctly.
    one = _write_run(
        tmp_path / "s1", [(0.9, 0.1), (0.4, 0.6), (0.1, 0.9), (0.6, 0.4)], labels, list("abcd"), 0.5
    )
    two = _write_run(tmp_path / "s2", [(0.2, 0.8), (0.6, 0.4), (0.95, 0.05), (0.45, 0.55)],
                     [1, 1, 0, 0], list("dcba"), 0.5)  # fmt: skip
    runs = [study.figures(one, 1), study.figures(two, 2)]
    assert study.ensemble(runs) == 1.0
    assert study.ensemble(runs[:1]) is None
    assert "| Blink (blink) | 0.680 | 1 / 2 | 0.500 / 0.500 |" in study.table(
        {"presets": {"blink": {"runs": runs, "mean": 0.5, "met": 0, "ensemble": 1.0}}}
    )


def test_the_ensemble_refuses_runs_of_different_test_rows(study, tmp_path: Path) -> None:
    one = _write_run(tmp_path / "s1", [(0.9, 0.1), (0.4, 0.6)], [0, 1], ["a", "b"], 0.5)
    two = _write_run(tmp_path / "s2", [(0.9, 0.1), (0.4, 0.6)], [0, 1], ["a", "z"], 0.5)
    with pytest.raises(SystemExit, match="not those of"):
        study.ensemble([study.figures(one, 1), study.figures(two, 2)])


def test_seeds_go_to_the_chosen_stages_after_the_presets_overrides(study) -> None:
    preset = {"instruct": {"overrides": ["train.max_steps=400"]}}
    assert (
        study._stage_overrides(preset, "instruct", 7, ["a=1"])
        == "instruct.overrides=[train.max_steps=400,a=1,train.seed=7]"
    )
    assert study._stage_overrides(preset, "tokenizer", None, []) == "tokenizer.overrides=[]"
