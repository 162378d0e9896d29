"""Our metrics agree with scikit-learn; the official ones reproduce the official hard-label scoring (docs/reference.md §4.3)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from sklearn.preprocessing import label_binarize

from neurolm.eval.metrics import (
    accuracy,
    balanced_accuracy,
    binary_average_precision,
    binary_roc_auc,
    cohen_kappa,
    confusion_matrix,
    f1_weighted,
    official_binary_metrics,
    official_multiclass_metrics,
    pr_auc,
    roc_auc,
    task_metrics,
)


def _random_probs(rng: np.random.Generator, n: int, k: int, decimals: int | None = None) -> np.ndarray:
    logits = rng.normal(size=(n, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:  # coarse values create ties, the hard case for rank metrics
        probs = np.round(probs, decimals)
        probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)
    return probs


def _sk(fn, *args, **kwargs) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args, **kwargs))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1])
def test_binary_probability_metrics_match_sklearn(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, 2, size=n)
    labels[:2] = [0, 1]
    probs = _random_probs(rng, n, 2, decimals)
    assert roc_auc(labels, probs) == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]), abs=1e-12)
    assert pr_auc(labels, probs) == pytest.approx(skm.average_precision_score(labels, probs[:, 1]), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [3, 6])
@pytest.mark.parametrize("decimals", [None, 1])
def test_multiclass_probability_metrics_are_one_vs_rest_macro(seed: int, k: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 300))
    labels = rng.integers(0, k, size=n)
    labels[:k] = np.arange(k)
    probs = _random_probs(rng, n, k, decimals)
    expected_auc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    expected_ap = skm.average_precision_score(label_binarize(labels, classes=range(k)), probs, average="macro")
    assert roc_auc(labels, probs) == pytest.approx(expected_auc, abs=1e-12)
    assert pr_auc(labels, probs) == pytest.approx(expected_ap, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_hard_label_metrics_match_sklearn_with_parse_failures_as_wrong(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    labels = rng.integers(0, k, size=n)
    # Mostly right, some wrong, some parse failures (-1).
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(-1, k, size=n))
    assert accuracy(labels, preds) == pytest.approx(skm.accuracy_score(labels, preds))
    assert balanced_accuracy(labels, preds, k) == pytest.approx(_sk(skm.balanced_accuracy_score, labels, preds))
    assert cohen_kappa(labels, preds, k) == pytest.approx(_sk(skm.cohen_kappa_score, labels, preds))
    assert f1_weighted(labels, preds, k) == pytest.approx(
        _sk(skm.f1_score, labels, preds, average="weighted", labels=list(range(k)))
    )


def test_parse_failure_is_a_miss_for_its_true_class_not_a_class() -> None:
    labels = [0, 0, 1, 1]
    preds = [0, -1, 1, 1]
    cm = confusion_matrix(labels, preds, 2)
    assert cm.tolist() == [[1, 0, 1], [0, 2, 0]]  # last column: parse failures
    assert accuracy(labels, preds) == 0.75
    assert balanced_accuracy(labels, preds, 2) == 0.75
    # Class 1 is predicted only when right: its F1 is 1; class 0 has recall 1/2 and precision 1.
    assert f1_weighted(labels, preds, 2) == pytest.approx(0.5 * (2 / 3) + 0.5 * 1.0)


def test_undefined_metrics_are_nan_not_errors() -> None:
    assert math.isnan(binary_roc_auc([True, True], [0.2, 0.9]))
    assert math.isnan(binary_average_precision([False, False], [0.2, 0.9]))
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1], 2))
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert math.isnan(roc_auc([0, 0], probs))


def test_multiclass_auc_skips_classes_absent_from_the_split() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=50)  # class 2 of 3 never occurs
    labels[:2] = [0, 1]
    probs = _random_probs(rng, 50, 3)
    per_class_auc = [skm.roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)]
    per_class_ap = [skm.average_precision_score(labels == c, probs[:, c]) for c in (0, 1)]
    assert roc_auc(labels, probs) == pytest.approx(np.mean(per_class_auc))
    assert pr_auc(labels, probs) == pytest.approx(np.mean(per_class_ap))


# ------------------------------------------------------------------------------------- official


def test_official_binary_scores_hard_labels_with_parse_failure_as_lowest_score() -> None:
    labels = np.array([1, 1, 0, 0])
    preds = np.array([1, -1, 0, -1])
    got = official_binary_metrics(labels, preds)
    # AUROC over the scores {1, -1} (positives) vs {0, -1} (negatives): win, win, loss, tie → 2.5 / 4.
    # Were -1 mapped to 0 first it would be 3 / 4: the -1 is a third, lower score.
    assert got["roc_auc"] == pytest.approx(0.625)
    # Thresholds 1, 0, -1: (R, P) = (1/2, 1), (1/2, 1/2), (1, 1/2) → AP = 1/2·1 + 0 + 1/2·1/2.
    assert got["pr_auc"] == pytest.approx(0.75)
    # Accuracy and BAcc threshold at 0.5, so -1 is class 0: predictions [1, 0, 0, 0].
    assert got["accuracy"] == pytest.approx(0.75)
    assert got["balanced_accuracy"] == pytest.approx(0.75)


def test_official_binary_auroc_equals_bacc_without_parse_failures() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=200)
    preds = np.where(rng.random(200) < 0.7, labels, 1 - labels)
    got = official_binary_metrics(labels, preds)
    assert got["roc_auc"] == pytest.approx(got["balanced_accuracy"])  # docs/reference.md §4.3


def test_official_binary_single_class_split_gives_zeros() -> None:
    # utils.py:get_metrics guards roc_auc_score's error by returning 0.0 for all four metrics.
    got = official_binary_metrics([1, 1, 1], [1, 1, 0])
    assert got == {"pr_auc": 0.0, "roc_auc": 0.0, "accuracy": 0.0, "balanced_accuracy": 0.0}


def test_official_multiclass_maps_parse_failure_to_last_class() -> None:
    labels = np.array([2, 0, 1, 2])
    preds = np.array([-1, 0, 1, -1])  # both failures land on class 2 = the truth here
    got = official_multiclass_metrics(labels, preds, 3)
    assert got["accuracy"] == 1.0
    assert got["balanced_accuracy"] == 1.0
    assert got["cohen_kappa"] == pytest.approx(1.0)
    assert got["f1_weighted"] == pytest.approx(1.0)
    assert accuracy(labels, preds) == 0.5  # ours: the failures are wrong


@pytest.mark.parametrize("seed", range(4))
def test_official_multiclass_equals_ours_after_the_official_mapping(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 5
    labels = rng.integers(0, k, size=120)
    preds = np.where(rng.random(120) < 0.5, labels, rng.integers(-1, k, size=120))
    mapped = np.where(preds == -1, k - 1, preds)
    got = official_multiclass_metrics(labels, preds, k)
    assert got["accuracy"] == pytest.approx(accuracy(labels, mapped))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy(labels, mapped, k))
    assert got["cohen_kappa"] == pytest.approx(cohen_kappa(labels, mapped, k))
    assert got["f1_weighted"] == pytest.approx(f1_weighted(labels, mapped, k))


# ---------------------------------------------------------------------------------- task_metrics


def test_task_metrics_binary_returns_both_families() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    preds = np.array([1, -1, 0, 0, 1, 1])
    got = task_metrics("binary", probs, preds, labels)
    assert set(got) == {
        "n", "parse_failures", "accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted", "roc_auc", "pr_auc",
        "official/pr_auc", "official/roc_auc", "official/accuracy", "official/balanced_accuracy",
    }  # fmt: skip
    assert got["n"] == 6 and got["parse_failures"] == 1
    assert got["accuracy"] == pytest.approx(4 / 6)  # the -1 is wrong
    assert got["official/accuracy"] == pytest.approx(4 / 6)  # -1 → 0, but the truth is 1: also wrong here
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]))
    assert got["official/roc_auc"] == pytest.approx(official_binary_metrics(labels, preds)["roc_auc"])


def test_task_metrics_multiclass_without_probs_needs_num_classes() -> None:
    labels = [0, 1, 2, 2]
    preds = [0, 1, -1, 2]
    with pytest.raises(ValueError, match="num_classes"):
        task_metrics("multiclass", None, preds, labels)
    got = task_metrics("multiclass", None, preds, labels, num_classes=3)
    assert "roc_auc" not in got and "official/cohen_kappa" in got and "official/roc_auc" not in got
    assert got["parse_failures"] == 1
    assert got["official/accuracy"] == 1.0 and got["accuracy"] == 0.75


def test_task_metrics_preds_default_to_argmax_of_probs() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=80)
    probs = _random_probs(rng, 80, 4)
    got = task_metrics("multiclass", probs, None, labels)
    assert got["parse_failures"] == 0
    assert got["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert got["official/accuracy"] == got["accuracy"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_kind": "regression", "probs": None, "preds": [0], "labels": [0]}, "task_kind"),
        ({"task_kind": "binary", "probs": None, "preds": [2, 0], "labels": [0, 1]}, "out of range"),
        ({"task_kind": "binary", "probs": None, "preds": [-2, 0], "labels": [0, 1]}, ">= -1"),
        ({"task_kind": "binary", "probs": None, "preds": [0], "labels": [0, 1]}, "shape"),
        ({"task_kind": "binary", "probs": np.ones((2, 3)) / 3, "preds": None, "labels": [0, 1]}, "2 classes"),
        ({"task_kind": "binary", "probs": None, "preds": None, "labels": [0, 1]}, "preds, probs"),
        ({"task_kind": "binary", "probs": None, "preds": [], "labels": []}, "empty"),
    ],
)
def test_task_metrics_rejects_bad_input_clearly(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        task_metrics(**kwargs)
