"""Evaluation report files: JSON, Markdown table (ours and official side by side), PNG plots, Tune trial plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurolm.eval.report import (
    TaskResult,
    build_report,
    markdown_table,
    plot_confusion_matrix,
    plot_trials,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results() -> list[TaskResult]:
    rng = np.random.default_rng(0)
    tuab_labels = rng.integers(0, 2, size=60)
    tuab_preds = np.where(rng.random(60) < 0.8, tuab_labels, 1 - tuab_labels)
    tuab_preds[:3] = -1  # three answers that could not be parsed
    tuev_labels = rng.integers(0, 6, size=90)
    logits = rng.normal(size=(90, 6))
    logits[np.arange(90), tuev_labels] += 1.5
    tuev_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [
        TaskResult("tuab", "binary", tuab_labels, preds=tuab_preds, class_names=("No", "Yes")),
        TaskResult(
            "tuev", "multiclass", tuev_labels, probs=tuev_probs,
            class_names=("spsw", "gped", "pled", "eyem", "artf", "bckg"),
        ),  # fmt: skip
    ]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_write_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    paths = write_report(_results(), tmp_path / "eval", title="test split", metadata={"checkpoint": "step-100"})
    assert set(paths) == {
        "json", "markdown", "summary", "confusion/tuab", "confusion/tuev", "metrics/tuab", "metrics/tuev",
    }  # fmt: skip
    for key, path in paths.items():
        assert path.parent == tmp_path / "eval"
        if key not in ("json", "markdown"):
            assert _is_png(path), key

    report = json.loads(paths["json"].read_text())
    assert report["metadata"] == {"checkpoint": "step-100"}
    tuab = report["tasks"]["tuab"]
    assert tuab["metrics"]["parse_failures"] == 3 and tuab["metrics"]["n"] == 60
    assert "official/roc_auc" in tuab["metrics"] and "roc_auc" not in tuab["metrics"]  # no probabilities
    assert np.array(tuab["confusion_matrix"])[:, -1].sum() == 3  # the parse-failure column
    assert "roc_auc" in report["tasks"]["tuev"]["metrics"]

    md = paths["markdown"].read_text()
    assert md.startswith("# test split")
    assert "| tuab | 60 | 3 |" in md and "| tuev | 90 | 0 |" in md
    assert "BAcc (official)" in md and "![confusion](confusion_tuab.png)" in md


def test_markdown_shows_ours_and_official_side_by_side() -> None:
    report = build_report(_results()[:1])
    m = report["tasks"]["tuab"]["metrics"]
    row = next(line for line in markdown_table(report).splitlines() if line.startswith("| tuab"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Columns: task, n, failures, then (ours, official) per metric: BAcc, κ, W-F1, AUROC, AUC-PR, Acc.
    assert cells[3:5] == [f"{m['balanced_accuracy']:.4f}", f"{m['official/balanced_accuracy']:.4f}"]
    assert cells[5:7] == [f"{m['cohen_kappa']:.4f}", "–"]  # no official κ for binary tasks (docs/reference.md §1.7)
    assert cells[9:11] == ["–", f"{m['official/roc_auc']:.4f}"]  # no probabilities → no AUROC of ours


def test_undefined_metrics_are_null_in_json_and_na_in_markdown(tmp_path: Path) -> None:
    # All labels one class: our AUROC is undefined, the official one is 0.0 (utils.py:get_metrics guard).
    result = TaskResult("workload", "binary", [1, 1, 1], preds=[1, 0, 1], probs=[[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    paths = write_report([result], tmp_path)
    metrics = json.loads(paths["json"].read_text())["tasks"]["workload"]["metrics"]
    assert metrics["roc_auc"] is None and metrics["official/roc_auc"] == 0.0
    assert "| n/a | 0.0000 |" in paths["markdown"].read_text()


def test_class_names_must_match_the_number_of_classes(tmp_path: Path) -> None:
    bad = TaskResult("seed", "multiclass", [0, 1, 2], preds=[0, 1, 2], probs=np.eye(3), class_names=("pos", "neu"))
    with pytest.raises(ValueError, match="inconsistent number of classes"):
        build_report([bad])
    with pytest.raises(ValueError, match="multi-class"):
        build_report([TaskResult("seed", "multiclass", [0, 1, 2], preds=[0, 1, 2])])
    with pytest.raises(ValueError, match="unique"):
        build_report(_results()[:1] * 2)


def test_confusion_matrix_plot(tmp_path: Path) -> None:
    path = plot_confusion_matrix([0, 1, 2, 2], [0, -1, 2, 1], ["A", "B", "C"], tmp_path / "sub" / "cm.png")
    assert _is_png(path)


def test_plot_trials_marks_the_best_record(tmp_path: Path) -> None:
    records = [
        {"trial_id": "a", "training_iteration": 1, "val/bacc": 0.55},
        {"trial_id": "a", "training_iteration": 2, "val/bacc": 0.61},
        {"trial_id": "b", "training_iteration": 1, "val/bacc": 0.58},
        {"trial_id": "b", "training_iteration": 2, "val/bacc": 0.70},
        {"trial_id": "c", "training_iteration": 1},  # still running: no objective yet
        {"trial_id": "c", "training_iteration": 2, "val/bacc": float("nan")},
    ]
    best = plot_trials(records, "val/bacc", tmp_path / "trials.png")
    assert best == records[3] and _is_png(tmp_path / "trials.png")
    assert plot_trials(records, "val/bacc", tmp_path / "min.png", mode="min") == records[0]
    # Without x_key the shared wall clock ("timestamp") is preferred when every record has it.
    timed = [r | {"timestamp": 1_700_000_000 + i} for i, r in enumerate(records)]
    assert plot_trials(timed, "val/bacc", tmp_path / "timed.png") == timed[3]
    with pytest.raises(ValueError, match="missing"):
        plot_trials(records, "val/bacc", tmp_path / "x.png", x_key="timestamp")
    with pytest.raises(ValueError, match="no record"):
        plot_trials(records, "val/loss", tmp_path / "none.png")
    with pytest.raises(ValueError, match="mode"):
        plot_trials(records, "val/bacc", tmp_path / "x.png", mode="best")
