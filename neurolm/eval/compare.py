"""Is the model better or worse than a baseline on these rows, or is the difference noise? (issue 16)

A test split of a few dozen to a few hundred trials gives a balanced accuracy with a standard error of 0.02–0.08:
EyesOpenShut's 42 test trials cannot tell 0.55 from 0.50, Blink's 450 can tell 0.93 from 0.98. The report
therefore gives, beside "model − best baseline", a confidence interval of that difference from a **paired,
class-stratified bootstrap** of the test rows: each resample draws, within each class, as many rows as the class
has (with replacement), and scores the model and the baseline on the *same* drawn rows. Pairing removes the
rows' shared difficulty from the spread (both readers err on the same hard trials); stratifying keeps every
class in every resample, so a balanced accuracy is always defined and the class shares stay those of the split.

    cmp = paired_difference(labels, model_pred, baseline_pred, num_classes=2)
    cmp["diff"], cmp["low"], cmp["high"]      # model − baseline and its 95 % interval

The interval covers the row sampling of this test split only (not the training seeds; docs/recipe.md §13 for
those).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "align_by_id", "paired_difference"]

BOOTSTRAP_RESAMPLES = 2000
_DRAWS_PER_CHUNK = 4_000_000


def _balanced_accuracy(correct_by_class: list[np.ndarray]) -> np.ndarray:
    """Balanced accuracy per resample from each present class's (resamples x rows) correctness."""
    return np.mean([c.mean(axis=-1) for c in correct_by_class], axis=0)


def paired_difference(
    labels: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    num_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy of ``pred_a`` minus that of ``pred_b`` on the same rows, with a ``level`` percentile
    interval from a paired, class-stratified bootstrap (``resamples`` draws, seeded: the same inputs give the
    same interval).

    Returns ``{"diff", "low", "high", "level", "resamples", "n", "share_below_zero"}``: ``share_below_zero`` is
    the share of resamples in which ``a`` scored below ``b``. Classes absent from ``labels`` are left out, as
    balanced accuracy leaves them out."""
    labels = np.asarray(labels, dtype=np.int64)
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    if not (len(labels) == len(pred_a) == len(pred_b)):
        raise ValueError(f"rows differ: {len(labels)} labels, {len(pred_a)} and {len(pred_b)} predictions")
    if len(labels) == 0:
        raise ValueError("no rows to compare")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    right_a, right_b = pred_a == labels, pred_b == labels
    present = [c for c in range(num_classes) if np.any(labels == c)]
    diff = float(_balanced_accuracy([right_a[labels == c] for c in present])
                 - _balanced_accuracy([right_b[labels == c] for c in present]))  # fmt: skip
    rng = np.random.default_rng(seed)
    # Resamples in chunks of ~4M drawn rows: a test split of 100k rows (TUAB) would otherwise need 2000 x 100k
    # indices at once (1.6 GB).
    chunk = max(1, min(resamples, _DRAWS_PER_CHUNK // len(labels)))
    rows_of = [np.flatnonzero(labels == c) for c in present]
    diffs = np.empty(resamples)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        draws_a, draws_b = [], []
        for rows in rows_of:
            pick = rows[rng.integers(0, len(rows), size=(k, len(rows)))]
            draws_a.append(right_a[pick])
            draws_b.append(right_b[pick])
        diffs[start : start + k] = _balanced_accuracy(draws_a) - _balanced_accuracy(draws_b)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {
        "diff": diff,
        "low": float(low),
        "high": float(high),
        "level": level,
        "resamples": resamples,
        "n": int(len(labels)),
        "share_below_zero": float(np.mean(diffs < 0)),
    }


def align_by_id(ids: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values`` (one per entry of ``ids``) in the order of ``order``; every id of ``order`` must be in ``ids``
    exactly once (the model's rows and a baseline's test trials are the same samples, read in different
    orders)."""
    ids, order = np.asarray(ids).astype(str), np.asarray(order).astype(str)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError("sample ids are not unique")
    index = {s: i for i, s in enumerate(ids.tolist())}
    missing = [s for s in order.tolist() if s not in index]
    if missing:
        raise ValueError(f"{len(missing)} rows have no baseline prediction (e.g. {missing[0]!r})")
    return np.asarray(values)[[index[s] for s in order.tolist()]]
