"""Collapse guard (issue 16): a classifier that answers one class for almost every row, or whose loss is not
finite, is reported as collapsed instead of as a plain number.

Used by stage 3's validation (``val/<task>/collapsed``, ``val/<task>/majority_share``) and by the evaluation
(``collapsed`` and ``majority_share`` per task in ``metrics.json``, a warning in ``report.md`` and the log).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["COLLAPSE_SHARE", "balanced_accuracy_of", "collapse_metrics", "is_collapsed", "majority_share"]

log = logging.getLogger("neurolm.collapse")

COLLAPSE_SHARE = 0.95
"""A model whose most frequent answer covers at least this share of the rows is collapsed."""


def balanced_accuracy_of(confusion: np.ndarray) -> float:
    """Mean recall over the true classes present in a ``(K, K)`` or ``(K, K + 1)`` confusion matrix (rows = true
    class; an extra last column counts parse failures, which lower their true class's recall). NaN when empty.

    The one implementation behind stage 3's validation and the evaluation's ``balanced_accuracy``
    (docs/reference.md §1.7 "BAcc"); classes absent from the labels are left out, as scikit-learn does.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm[:, :k])[present] / support[present]))


def majority_share(predicted_counts: Sequence[float] | np.ndarray) -> float:
    """Share of rows given the most frequent answer (NaN for no rows)."""
    counts = np.asarray(predicted_counts, dtype=np.float64)
    total = counts.sum()
    return float(counts.max() / total) if total > 0 else float("nan")


def is_collapsed(
    predicted_counts: Sequence[float] | np.ndarray, *losses: float, share: float = COLLAPSE_SHARE
) -> bool:
    """One answer for ≥ ``share`` of the rows (with at least two rows), or any non-finite loss."""
    if any(not math.isfinite(float(loss)) for loss in losses):
        return True
    counts = np.asarray(predicted_counts, dtype=np.float64)
    return bool(counts.sum() >= 2 and majority_share(counts) >= share)


def collapse_metrics(
    prefix: str, predicted_counts: Sequence[float] | np.ndarray, *losses: float
) -> dict[str, float]:
    """``<prefix>/collapsed`` (1.0 or 0.0) and ``<prefix>/majority_share``; logs a warning when collapsed."""
    collapsed = is_collapsed(predicted_counts, *losses)
    share = majority_share(predicted_counts)
    if collapsed:
        log.warning(
            "COLLAPSED: %s answers one class for %.0f%% of %d rows (losses %s)",
            prefix,
            100 * share,
            int(np.sum(predicted_counts)),
            [round(float(x), 4) for x in losses],
        )
    return {f"{prefix}/collapsed": float(collapsed), f"{prefix}/majority_share": share}
