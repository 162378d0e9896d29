"""Classification metrics for the six instruction-tuning tasks, ours and the official hard-label ones.

Two families live side by side (docs/reference.md §4.3, §5, §8 "report both code-faithful and fixed metrics"):

**Ours** (keys without a prefix) are the metrics a reader expects:

- ``accuracy``, ``balanced_accuracy``, ``cohen_kappa``, ``f1_weighted`` from hard predictions. A parse failure
  (``-1``, docs/reference.md §4.3) is never mapped to a class: it is a wrong answer for the sample's true class and is
  counted in ``parse_failures``.
- ``roc_auc`` and ``pr_auc`` from class probabilities ``(N, K)`` only (e.g. answer log-likelihoods turned into
  probabilities, docs/reference.md §8). Binary tasks use the positive-class column. Multi-class tasks use the one-vs-rest
  **macro** average over classes: it weighs every class equally, like balanced accuracy, so the rare TUEV and
  TUSL classes count as much as background. Classes that are undefined in a split (no positive or no negative
  for AUROC, no positive for AUC-PR) are left out of the average; a metric with no defined class is NaN.

**Official** (keys ``official/<name>``) reproduce ``train_instruction.py:evaluate`` → ``utils.py:get_metrics`` →
pyhealth ``metrics/binary.py:binary_metrics_fn`` / ``metrics/multiclass.py:multiclass_metrics_fn`` at snapshot
``a9e8afe``, hard labels and quirks included, so our numbers can be compared with the paper's (docs/reference.md §5):

- binary (TUAB, Workload): the hard prediction in {-1, 0, 1} is the *score* of AUROC and AUC-PR, so a parse
  failure is a third, lowest score; accuracy and balanced accuracy threshold it at 0.5, so -1 counts as class 0;
  a split whose labels are all one class gives 0.0 for all four metrics.
- multi-class (TUEV, SEED, HMC, TUSL): ``np.eye(K)[pred]`` then ``argmax``, so -1 becomes the **last** class.

Implementation choice: our metrics are written with numpy (a confusion matrix with an extra parse-failure column,
a rank-sum AUROC and a step-wise average precision), because they need semantics scikit-learn does not give
directly: parse failures that are wrong without being a class, NaN instead of an exception when a small split
misses a class, and no warnings. The tests check them against scikit-learn on random inputs. The official
family calls scikit-learn exactly as the official code does, because the official numbers *are* scikit-learn's
output on those inputs (tie handling, classes present only in predictions, and so on).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import sklearn.metrics as skm
from numpy.typing import ArrayLike

from neurolm.models.collapse import balanced_accuracy_of

__all__ = [
    "PARSE_FAILURE",
    "TaskKind",
    "OURS_HARD_METRICS",
    "OFFICIAL_BINARY_METRICS",
    "OFFICIAL_MULTICLASS_METRICS",
    "confusion_matrix",
    "accuracy",
    "balanced_accuracy",
    "cohen_kappa",
    "f1_weighted",
    "binary_roc_auc",
    "binary_average_precision",
    "roc_auc",
    "pr_auc",
    "official_binary_metrics",
    "official_multiclass_metrics",
    "task_metrics",
]

PARSE_FAILURE = -1
"""The prediction of an answer that could not be parsed (official ``get_pred``, docs/reference.md §4.3)."""

TaskKind = Literal["binary", "multiclass"]

OURS_HARD_METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted")
# The metric lists of train_instruction.py:get_instruct_datasets (docs/reference.md §1.7).
OFFICIAL_BINARY_METRICS = ("pr_auc", "roc_auc", "accuracy", "balanced_accuracy")
OFFICIAL_MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted")


# --------------------------------------------------------------------------------------------- validation


def _as_labels(labels: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("labels are empty: a metric needs at least one sample")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integers")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(arr.min())}")
    if num_classes is not None and arr.max() >= num_classes:
        raise ValueError(f"label {int(arr.max())} out of range for {num_classes} classes")
    return arr


def _as_preds(preds: ArrayLike, n: int, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(preds)
    if arr.shape != (n,):
        raise ValueError(f"preds must have shape ({n},) like labels, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("preds must be integers (class index or -1 for a parse failure)")
    arr = arr.astype(np.int64)
    if arr.min() < PARSE_FAILURE:
        raise ValueError(f"preds must be >= -1 (-1 = parse failure), got {int(arr.min())}")
    if num_classes is not None and arr.max() >= num_classes:
        raise ValueError(f"prediction {int(arr.max())} out of range for {num_classes} classes")
    return arr


def _as_probs(probs: ArrayLike, n: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 2:
        raise ValueError(f"probs must have shape ({n}, K) with K >= 2 classes, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("probs contain NaN or inf")
    return arr


def _infer_num_classes(labels: np.ndarray, preds: np.ndarray, num_classes: int | None) -> int:
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        return num_classes
    return max(2, int(labels.max()) + 1, int(preds.max()) + 1)


# ----------------------------------------------------------------------------------- ours: hard labels


def confusion_matrix(labels: ArrayLike, preds: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix with a parse-failure column.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        True classes in ``[0, K)``.
    preds : array_like of int, shape (N,)
        Predicted classes in ``[0, K)`` or ``-1`` for a parse failure (docs/reference.md §4.3).
    num_classes : int, optional
        ``K``; inferred from the largest label or prediction when omitted.

    Returns
    -------
    numpy.ndarray of int64, shape (K, K + 1)
        ``cm[i, j]`` counts samples of true class ``i`` predicted as ``j``; column ``K`` counts parse failures.
    """
    y = _as_labels(labels, num_classes)
    p = _as_preds(preds, y.size, num_classes)
    k = _infer_num_classes(y, p, num_classes)
    col = np.where(p == PARSE_FAILURE, k, p)
    cm = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(cm, (y, col), 1)
    return cm


def accuracy(labels: ArrayLike, preds: ArrayLike) -> float:
    """Fraction of samples whose prediction equals the label; a parse failure is wrong."""
    y = _as_labels(labels)
    p = _as_preds(preds, y.size)
    return float(np.mean(y == p))


def balanced_accuracy(labels: ArrayLike, preds: ArrayLike, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``labels`` (docs/reference.md §1.7 "BAcc").

    Parse failures lower the recall of their true class. Classes absent from ``labels`` are left out, as
    scikit-learn's ``balanced_accuracy_score`` does.
    """
    return balanced_accuracy_of(confusion_matrix(labels, preds, num_classes))


def cohen_kappa(labels: ArrayLike, preds: ArrayLike, num_classes: int | None = None) -> float:
    """Cohen's κ between labels and predictions, with parse failures as an extra, never-true category.

    Returns NaN when κ is undefined (chance agreement is 1: labels and predictions are one and the same
    class everywhere).
    """
    cm = confusion_matrix(labels, preds, num_classes).astype(np.float64)
    n = cm.sum()
    k = cm.shape[0]
    observed = np.trace(cm[:, :k]) / n
    # Marginals over the K+1 categories; the failure category has no true samples, so it adds no chance agreement.
    true_marginal = np.append(cm.sum(axis=1), 0.0) / n
    pred_marginal = cm.sum(axis=0) / n
    expected = float(np.dot(true_marginal, pred_marginal))
    if math.isclose(expected, 1.0):
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


def f1_weighted(labels: ArrayLike, preds: ArrayLike, num_classes: int | None = None) -> float:
    """Per-class F1 averaged with weights equal to each class's support in ``labels`` (docs/reference.md §1.7 "W-F1").

    A parse failure is a false negative of its true class and a false positive of no class.
    """
    cm = confusion_matrix(labels, preds, num_classes)
    k = cm.shape[0]
    tp = np.diag(cm[:, :k]).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # tp + fn (fn includes parse failures)
    predicted = cm[:, :k].sum(axis=0).astype(np.float64)  # tp + fp
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(np.dot(f1, support) / support.sum())


# ------------------------------------------------------------------------------ ours: from probabilities


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores``, ties sharing their average rank."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def binary_roc_auc(is_positive: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n₊ n₋), ties counted as ½).

    Parameters
    ----------
    is_positive : array_like of bool, shape (N,)
    scores : array_like of float, shape (N,)
        Higher means more likely positive.

    Returns
    -------
    float
        NaN when all samples are positive or all negative.
    """
    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_average_precision(is_positive: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, the step-wise area under the precision-recall curve ("AUC-PR").

    ``AP = Σ_k (R_k − R_{k−1}) P_k`` over the distinct score thresholds in decreasing order, the definition of
    scikit-learn's ``average_precision_score`` (no interpolation).

    Returns
    -------
    float
        NaN when there is no positive sample.
    """
    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # The last index of every run of equal scores is a threshold.
    thresholds = np.append(np.flatnonzero(np.diff(s_sorted)), y.size - 1)
    tp = np.cumsum(y_sorted)[thresholds].astype(np.float64)
    precision = tp / (thresholds + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _one_vs_rest_macro(
    labels: np.ndarray,
    probs: np.ndarray,
    binary_metric: Callable[[np.ndarray, np.ndarray], float],
    need_negatives: bool,
) -> float:
    values = []
    for k in range(probs.shape[1]):
        is_k = labels == k
        if not is_k.any() or (need_negatives and is_k.all()):
            continue  # undefined for this class in this split
        values.append(binary_metric(is_k, probs[:, k]))
    return float(np.mean(values)) if values else float("nan")


def roc_auc(labels: ArrayLike, probs: ArrayLike) -> float:
    """AUROC from class probabilities ``(N, K)``.

    Binary (``K == 2``): AUROC of ``probs[:, 1]``. Multi-class: one-vs-rest macro average over the classes that
    have both positives and negatives in ``labels`` (equal to scikit-learn's ``roc_auc_score(...,
    multi_class="ovr", average="macro")`` when every class is present). NaN when no class qualifies.
    """
    y = _as_labels(labels)
    p = _as_probs(probs, y.size)
    if y.max() >= p.shape[1]:
        raise ValueError(f"label {int(y.max())} out of range for probs with {p.shape[1]} columns")
    if p.shape[1] == 2:
        return binary_roc_auc(y == 1, p[:, 1])
    return _one_vs_rest_macro(y, p, binary_roc_auc, need_negatives=True)


def pr_auc(labels: ArrayLike, probs: ArrayLike) -> float:
    """AUC-PR (average precision) from class probabilities ``(N, K)``.

    Binary (``K == 2``): average precision of ``probs[:, 1]`` for class 1. Multi-class: one-vs-rest macro
    average over the classes present in ``labels`` (equal to scikit-learn's ``average_precision_score`` on
    one-hot labels with ``average="macro"`` when every class is present). NaN when no class qualifies.
    """
    y = _as_labels(labels)
    p = _as_probs(probs, y.size)
    if y.max() >= p.shape[1]:
        raise ValueError(f"label {int(y.max())} out of range for probs with {p.shape[1]} columns")
    if p.shape[1] == 2:
        return binary_average_precision(y == 1, p[:, 1])
    return _one_vs_rest_macro(y, p, binary_average_precision, need_negatives=False)


# ------------------------------------------------------------------------------ official: hard labels


def official_binary_metrics(labels: ArrayLike, preds: ArrayLike) -> dict[str, float]:
    """The official binary scoring of hard predictions (TUAB, Workload; docs/reference.md §4.3).

    Reproduces, at official snapshot ``a9e8afe``:

    - ``train_instruction.py:get_pred`` (lines 475–489) returns -1 for any unparsable answer, ``evaluate``
      (lines 511–515) keeps it unchanged for binary tasks, and ``utils.py:get_metrics`` (line 119) passes that
      array to ``binary_metrics_fn`` as ``y_prob``;
    - ``utils.py:get_metrics`` lines 118–130: when ``roc_auc`` is requested and the labels are all 0 or all 1,
      all four metrics are 0.0;
    - ``metrics/binary.py:binary_metrics_fn`` lines 58–59, ``y_pred = y_prob >= 0.5`` (so -1 → 0), used by
      ``accuracy`` and ``balanced_accuracy`` (lines 70, 73); lines 64 and 67, ``average_precision_score`` and
      ``roc_auc_score`` on ``y_prob`` itself (so -1 is a third score below 0).

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        0 or 1.
    preds : array_like of int, shape (N,)
        0, 1 or -1 (parse failure).

    Returns
    -------
    dict
        ``pr_auc``, ``roc_auc``, ``accuracy``, ``balanced_accuracy``.
    """
    y = _as_labels(labels, 2)
    score = _as_preds(preds, y.size, 2)
    n_pos = int(y.sum())
    if n_pos * (y.size - n_pos) == 0:
        return {name: 0.0 for name in OFFICIAL_BINARY_METRICS}
    hard = np.where(score >= 0.5, 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "pr_auc": float(skm.average_precision_score(y, score)),
            "roc_auc": float(skm.roc_auc_score(y, score)),
            "accuracy": float(skm.accuracy_score(y, hard)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, hard)),
        }


def official_multiclass_metrics(labels: ArrayLike, preds: ArrayLike, num_classes: int) -> dict[str, float]:
    """The official multi-class scoring of hard predictions (TUEV, SEED, HMC, TUSL; docs/reference.md §4.3).

    Reproduces, at official snapshot ``a9e8afe``:

    - ``train_instruction.py:evaluate`` line 514, ``pred = np.eye(num_classes)[pred]``: negative indexing turns
      a parse failure (-1) into the one-hot of the **last** class (TUEV background, SEED Negative, HMC REM,
      TUSL slowing);
    - ``metrics/multiclass.py:multiclass_metrics_fn`` line 94, ``y_pred = argmax(y_prob)``, then scikit-learn's
      ``accuracy_score`` (line 119), ``balanced_accuracy_score`` (122), ``f1_score(average="weighted")`` (131)
      and ``cohen_kappa_score`` (149).

    Parameters
    ----------
    labels : array_like of int, shape (N,)
    preds : array_like of int, shape (N,)
        Class index or -1 (parse failure).
    num_classes : int
        ``K`` of the task (the official ``dataset_info['num_classes']``).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``cohen_kappa``, ``f1_weighted``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    y = _as_labels(labels, num_classes)
    p = _as_preds(preds, y.size, num_classes)
    one_hot = np.eye(num_classes)[p]  # (N, K); row -1 is the last class, as in the official code
    hard = np.argmax(one_hot, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": float(skm.accuracy_score(y, hard)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, hard)),
            "cohen_kappa": float(skm.cohen_kappa_score(y, hard)),
            "f1_weighted": float(skm.f1_score(y, hard, average="weighted")),
        }


# --------------------------------------------------------------------------------------------- both


def task_metrics(
    task_kind: TaskKind,
    probs: ArrayLike | None,
    preds: ArrayLike | None,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
) -> dict[str, float | int]:
    """All metrics of one task's evaluation split, ours and official, with namespaced keys.

    Parameters
    ----------
    task_kind : {"binary", "multiclass"}
        Binary tasks (TUAB, Workload) and multi-class tasks (TUEV, SEED, HMC, TUSL) are scored differently by
        the official code (docs/reference.md §1.7, §4.3).
    probs : array_like of float, shape (N, K), optional
        Class probabilities (e.g. from constrained answer scoring). Needed for ``roc_auc`` and ``pr_auc``;
        without them these two keys are absent (a hard-label AUROC is only reported as the official one).
    preds : array_like of int, shape (N,), optional
        Parsed answers, ``-1`` for a parse failure (generation, docs/reference.md §4.3). When omitted, ``argmax(probs)``.
    labels : array_like of int, shape (N,)
    num_classes : int, optional
        ``K``. Taken from ``probs`` when given, 2 for binary tasks; required for a multi-class task without
        ``probs``.

    Returns
    -------
    dict
        ``n``, ``parse_failures``; ours ``accuracy``, ``balanced_accuracy``, ``cohen_kappa``, ``f1_weighted``
        (+ ``roc_auc``, ``pr_auc`` with ``probs``); official ``official/<name>`` for the task kind's official
        metric list (binary: ``pr_auc``, ``roc_auc``, ``accuracy``, ``balanced_accuracy``; multi-class:
        ``accuracy``, ``balanced_accuracy``, ``cohen_kappa``, ``f1_weighted``). Undefined values are NaN.
    """
    if task_kind not in ("binary", "multiclass"):
        raise ValueError(f"task_kind must be 'binary' or 'multiclass', got {task_kind!r}")
    y = _as_labels(labels)
    p_arr = None if probs is None else _as_probs(probs, y.size)
    if p_arr is not None:
        if num_classes is not None and num_classes != p_arr.shape[1]:
            raise ValueError(f"num_classes={num_classes} but probs have {p_arr.shape[1]} columns")
        num_classes = p_arr.shape[1]
    elif num_classes is None:
        if task_kind == "multiclass":
            raise ValueError("a multi-class task needs num_classes (or probs) to score parse failures")
        num_classes = 2
    if task_kind == "binary" and num_classes != 2:
        raise ValueError(f"a binary task has 2 classes, got {num_classes}")
    if preds is None:
        if p_arr is None:
            raise ValueError("give preds, probs or both")
        preds = np.argmax(p_arr, axis=1)
    y = _as_labels(y, num_classes)
    hard = _as_preds(preds, y.size, num_classes)

    out: dict[str, float | int] = {"n": int(y.size), "parse_failures": int(np.sum(hard == PARSE_FAILURE))}
    out["accuracy"] = accuracy(y, hard)
    out["balanced_accuracy"] = balanced_accuracy(y, hard, num_classes)
    out["cohen_kappa"] = cohen_kappa(y, hard, num_classes)
    out["f1_weighted"] = f1_weighted(y, hard, num_classes)
    if p_arr is not None:
        out["roc_auc"] = roc_auc(y, p_arr)
        out["pr_auc"] = pr_auc(y, p_arr)
    official = (
        official_binary_metrics(y, hard)
        if task_kind == "binary"
        else official_multiclass_metrics(y, hard, num_classes)
    )
    out.update({f"official/{name}": value for name, value in official.items()})
    return out
