"""Decision calibration on the validation split (issue 16; docs/recipe.md §6).

Constrained scoring ranks trials well but can put the decision in the wrong place: SelfRegulationSCP1 (test ROC AUC
0.964, balanced accuracy 0.833: 41 of 147 negatives answered "positivity") and Blink (AUC 0.863, balanced
accuracy 0.71). A per-class bias ``b`` on the answer log-probabilities, fitted on the task's validation split to
maximise its balanced accuracy, moves the decision without touching the ranking: ``argmax(log p + b)``. The bias
comes from labelled validation rows only; test rows never inform it. It is reported beside the raw metrics
(``calibrated/*`` keys), never instead of them.
"""

from __future__ import annotations

import numpy as np

from neurolm.eval.metrics import balanced_accuracy

__all__ = ["fit_class_bias", "apply_class_bias"]

_GRID = np.linspace(-6.0, 6.0, 241)


def fit_class_bias(probs: np.ndarray, labels: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """The bias ``(K,)`` (``b[0] = 0``) maximising the balanced accuracy of ``argmax(log probs + b)`` on
    labelled rows; among equally good biases the one closest to 0 (no change when nothing is gained).

    Binary: an exact search over the thresholds between the rows' log-odds. More classes: coordinate ascent
    over a grid of [-6, 6] per class, ``sweeps`` times."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"need probs (N, K) and labels (N,), got {probs.shape} and {labels.shape}")
    k = probs.shape[1]
    bias = np.zeros(k)
    if len(labels) == 0 or not np.isfinite(probs).all():
        return bias
    logp = np.log(np.clip(probs, 1e-300, None))
    if k == 2:
        odds = logp[:, 1] - logp[:, 0]  # answer 1 when odds + b > 0
        cuts = np.unique(odds)
        candidates = np.concatenate([[0.0], -(cuts[:-1] + cuts[1:]) / 2, [-cuts[0] + 1e-6, -cuts[-1] - 1e-6]])
        scored = [(balanced_accuracy(labels, (odds + b > 0).astype(np.int64), 2), -abs(b), b) for b in candidates]
        bias[1] = max(scored)[2]
        return bias
    best = balanced_accuracy(labels, logp.argmax(axis=1), k)
    for _ in range(sweeps):
        for c in range(1, k):
            for b in _GRID:
                trial = bias.copy()
                trial[c] = b
                score = balanced_accuracy(labels, (logp + trial).argmax(axis=1), k)
                if score > best + 1e-12 or (abs(score - best) <= 1e-12 and abs(b) < abs(bias[c])):
                    best, bias = score, trial
    return bias


def apply_class_bias(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``softmax(log probs + bias)`` row-wise (rows of the result sum to 1)."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) + np.asarray(bias)[None, :]
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)
