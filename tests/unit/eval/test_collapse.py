"""Collapse guard (issue 16): in the metrics, the evaluation JSON and the Markdown report."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np

from neurolm.data.tasks import get_task
from neurolm.eval.evaluate import task_metrics_entry, write_evaluation_report
from neurolm.models.collapse import collapse_metrics, is_collapsed, majority_share
from neurolm.train.launch import best_checkpoint


def test_collapse_rule():
    assert majority_share([19, 1]) == 0.95 and is_collapsed([19, 1])
    assert not is_collapsed([18, 2])
    assert is_collapsed([10, 10], float("nan")) and is_collapsed([10, 10], 0.1, math.inf)
    assert not is_collapsed([1, 0])  # one row says nothing
    m = collapse_metrics("val/Blink", np.array([0.0, 40.0]), 0.7)
    assert m == {"val/Blink/collapsed": 1.0, "val/Blink/majority_share": 1.0}


def _rows(probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    return {"label": np.asarray(labels), "probs": probs, "pred": probs.argmax(axis=1), "sample_id": np.arange(n)}


def test_evaluation_flags_a_collapsed_task_and_shows_baselines(tmp_path):
    task = get_task("Blink")
    labels = np.arange(40) % 2
    collapsed = _rows(np.tile([0.6, 0.4], (40, 1)), labels)
    healthy = _rows(np.eye(2)[labels] * 0.8 + 0.1, labels)
    m_bad, m_good = task_metrics_entry(task, collapsed), task_metrics_entry(task, healthy)
    assert m_bad["collapsed"] and m_bad["majority_share"] == 1.0 and m_bad["balanced_accuracy"] == 0.5
    assert not m_good["collapsed"]
    baselines = {"lda/bandpower": {"balanced_accuracy": 0.93, "accuracy": 0.93}, "lda/means": {"error": "x"}}
    entries = [
        {"key": "test/Blink", "task": task, "split": "test", "rows": collapsed, "metrics": m_bad,
         "baselines": baselines},
        {"key": "test/SelfRegulationSCP1", "task": get_task("SelfRegulationSCP1"), "split": "test",
         "rows": healthy, "metrics": task_metrics_entry(get_task("SelfRegulationSCP1"), healthy)},
    ]  # fmt: skip
    files = write_evaluation_report(entries, tmp_path, title="t", metadata={})
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["tasks"]["test/Blink"]["collapsed"] is True
    assert report["tasks"]["test/SelfRegulationSCP1"]["collapsed"] is False
    assert report["tasks"]["test/Blink"]["baselines"]["lda/bandpower"]["balanced_accuracy"] == 0.93
    md = (tmp_path / "report.md").read_text()
    assert "WARNING — collapsed model on test/Blink" in md and "SelfRegulationSCP1**" not in md
    assert "| test/Blink | 0.500 |" in md and "-0.430" in md and "![baselines](baselines.png)" in md
    assert (tmp_path / "baselines.png") in files


def test_export_picks_the_best_validated_checkpoint():
    a, b, c, last = object(), object(), object(), object()
    result = SimpleNamespace(
        checkpoint=last,
        best_checkpoints=[(a, {"v": 0.6, "step": 100}), (b, {"v": 0.8, "step": 200}), (c, {"v": 0.8, "step": 300}),
                          (last, {"step": 400})],
    )  # fmt: skip
    assert best_checkpoint(result, "v", "max") is c  # ties: the later step
    assert best_checkpoint(result, "v", "min") is a
    assert best_checkpoint(result, None, "max") is last
    assert best_checkpoint(SimpleNamespace(checkpoint=last, best_checkpoints=[]), "v", "max") is last
