"""Model vs baseline with a paired bootstrap interval (issue 16): the statistic, the row matching, the
evaluation's entry and the report."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from neurolm.config import PreprocessConfig
from neurolm.data.readers import ts
from neurolm.data.samples import fetch_sample
from neurolm.data.tasks import get_task
from neurolm.eval.baselines import run_baselines
from neurolm.eval.compare import align_by_id, paired_difference
from neurolm.eval.evaluate import task_metrics_entry, versus_baseline, write_evaluation_report


def _predictions(labels: np.ndarray, accuracy: float, rng: np.random.Generator, k: int = 2) -> np.ndarray:
    wrong = rng.random(len(labels)) > accuracy
    return np.where(wrong, (labels + rng.integers(1, k, len(labels))) % k, labels)


def test_the_difference_is_that_of_the_balanced_accuracies_and_identical_readers_differ_by_zero():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a, b = _predictions(labels, 0.8, rng, 3), _predictions(labels, 0.6, rng, 3)
    out = paired_difference(labels, a, b, num_classes=3)
    assert out["diff"] == pytest.approx(
        balanced_accuracy_score(labels, a) - balanced_accuracy_score(labels, b)
    )
    assert out["low"] <= out["diff"] <= out["high"] and out["n"] == 100 and out["resamples"] == 2000
    same = paired_difference(labels, a, a, num_classes=3)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["share_below_zero"] == 0.0
    assert paired_difference(labels, a, b, num_classes=3) == out  # seeded: the same interval every time


def test_a_large_test_split_separates_readers_a_small_one_cannot():
    rng = np.random.default_rng(1)
    big = np.arange(600) % 2
    out = paired_difference(big, _predictions(big, 0.9, rng), _predictions(big, 0.7, rng), num_classes=2)
    assert out["low"] > 0.1 and out["share_below_zero"] == 0.0
    small = np.arange(30) % 2  # 0.05 apart on 30 rows: well within the noise
    a, b = small.copy(), small.copy()
    a[:4] = 1 - a[:4]
    b[4:6] = 1 - b[4:6]
    out = paired_difference(small, a, b, num_classes=2)
    assert out["diff"] < 0 and out["low"] < 0 < out["high"]


def test_pairing_narrows_the_interval_when_both_readers_fail_on_the_same_rows():
    rng = np.random.default_rng(2)
    labels = np.arange(200) % 2
    a = _predictions(labels, 0.75, rng)
    b = a.copy()
    b[np.flatnonzero(a == labels)[:6]] ^= 1  # b = a, wrong on 6 more rows
    out = paired_difference(labels, a, b, num_classes=2)
    assert out["low"] > 0  # 0.03 apart on 200 rows is resolved, because the other errors are shared
    assert out["high"] - out["low"] < 0.06


def test_a_class_with_one_row_and_absent_classes_are_handled():
    labels = np.array([0, 0, 0, 1])  # class 2 absent, class 1 a single row: in every stratified resample
    out = paired_difference(labels, np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), num_classes=3)
    assert out["diff"] == pytest.approx(0.5) and out["low"] == out["high"] == pytest.approx(0.5)


def test_refusals():
    with pytest.raises(ValueError, match="rows differ"):
        paired_difference(np.zeros(3), np.zeros(3), np.zeros(2), 2)
    with pytest.raises(ValueError, match="no rows"):
        paired_difference(np.zeros(0), np.zeros(0), np.zeros(0), 2)
    with pytest.raises(ValueError, match="level"):
        paired_difference(np.zeros(2), np.zeros(2), np.zeros(2), 2, level=1.5)


def test_align_by_id_reorders_and_refuses_missing_or_repeated_ids():
    ids = np.array(["b", "c", "a"], dtype=object)
    assert align_by_id(ids, np.array([2, 3, 1]), np.array(["a", "b", "c"])).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="1 rows have no baseline prediction .*'d'"):
        align_by_id(ids, np.array([2, 3, 1]), np.array(["a", "d"]))
    with pytest.raises(ValueError, match="not unique"):
        align_by_id(np.array(["a", "a"]), np.array([0, 1]), np.array(["a"]))


def test_the_evaluation_compares_the_model_with_the_best_baseline_of_real_scp1_trials(tmp_path, caplog):
    """Real SelfRegulationSCP1: the baselines' test predictions, read in another order than the model's rows,
    are matched by sample id; the interval lands in metrics.json and the report's table."""
    cfg = PreprocessConfig(corpus="ts", input=str(fetch_sample("SelfRegulationSCP1")), output="/unused")
    train, test = (ts.read_recording(t, cfg) for t in ts.list_recordings(cfg))
    keep = np.asarray(train.splits) == "train"
    predictions: dict[str, np.ndarray] = {}
    baselines = run_baselines(
        train.signals[keep], train.labels[keep], test.signals, test.labels, 2, predictions=predictions
    )
    assert set(predictions) == set(baselines) and all(len(p) == 293 for p in predictions.values())
    assert (
        balanced_accuracy_score(test.labels, predictions["lda/means"])
        == baselines["lda/means"]["balanced_accuracy"]
    )
    ids = np.array([f"SCP1/test/{i:06d}" for i in range(len(test.labels))], dtype=object)
    predictions["sample_id"] = ids
    # A model right on 90 % of the rows; its rows sorted otherwise than the shards (as the evaluation's are).
    rng = np.random.default_rng(3)
    order = rng.permutation(len(ids))
    labels = np.asarray(test.labels)[order]
    pred = _predictions(labels, 0.9, rng)
    task = get_task("SelfRegulationSCP1")
    rows = {"label": labels, "pred": pred, "probs": np.eye(2)[pred], "sample_id": ids[order]}
    entry = {"key": "test/SelfRegulationSCP1", "task": task, "split": "test", "rows": rows,
             "metrics": task_metrics_entry(task, rows), "baselines": baselines}  # fmt: skip
    vs = versus_baseline(entry, "lda/means", predictions)
    assert vs["baseline"] == "lda/means"
    assert vs["diff"] == pytest.approx(
        entry["metrics"]["balanced_accuracy"] - baselines["lda/means"]["balanced_accuracy"]
    )
    entry["vs_best_baseline"] = vs
    write_evaluation_report([entry], tmp_path, title="t", metadata={})
    saved = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["test/SelfRegulationSCP1"][
        "vs_best_baseline"
    ]
    assert saved["low"] == pytest.approx(vs["low"]) and saved["baseline"] == "lda/means"
    md = (tmp_path / "report.md").read_text()
    assert f"[{vs['low']:+.3f}, {vs['high']:+.3f}]" in md and "paired, class-stratified bootstrap" in md
    # Rows the baselines did not predict: no comparison, one warning.
    with caplog.at_level(logging.WARNING, logger="neurolm"):
        bad = dict(predictions, sample_id=np.array([f"other/{i}" for i in range(len(ids))], dtype=object))
        assert versus_baseline(entry, "lda/means", bad) is None
    assert "not compared" in caplog.text


def test_a_large_test_split_is_resampled_in_bounded_chunks(monkeypatch):
    """Resamples drawn in chunks (a 100k-row split needs no more than ~4M drawn rows at a time) give the same
    difference and, up to resampling noise, the same interval as drawn at once."""
    import neurolm.eval.compare as compare

    rng = np.random.default_rng(4)
    labels = np.arange(3000) % 2
    a, b = _predictions(labels, 0.8, rng), _predictions(labels, 0.75, rng)
    whole = paired_difference(labels, a, b, num_classes=2, resamples=300)
    monkeypatch.setattr(compare, "_DRAWS_PER_CHUNK", 3000 * 7)  # chunks of 7 resamples
    chunked = paired_difference(labels, a, b, num_classes=2, resamples=300)
    assert chunked["diff"] == whole["diff"] and chunked["low"] > 0
    assert abs(chunked["low"] - whole["low"]) < 0.01 and abs(chunked["high"] - whole["high"]) < 0.01
