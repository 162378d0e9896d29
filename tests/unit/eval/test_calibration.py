"""Decision calibration on the validation split (neurolm.eval.calibration, issue 16)."""

from __future__ import annotations

import numpy as np

from neurolm.eval.calibration import apply_class_bias, fit_class_bias


def _bacc(probs, labels):
    preds = probs.argmax(axis=1)
    return np.mean([np.mean(preds[labels == c] == c) for c in np.unique(labels)])


def test_a_shifted_binary_decision_is_moved_back_and_the_ranking_kept():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    odds = 2.0 * (labels - 0.5) + rng.normal(0, 0.6, 400) + 1.5  # well ranked, decision shifted toward class 1
    probs = np.stack([1 / (1 + np.exp(odds)), 1 / (1 + np.exp(-odds))], axis=1)
    val, test = slice(0, 100), slice(100, None)
    bias = fit_class_bias(probs[val], labels[val])
    assert bias[0] == 0 and -2.5 < bias[1] < -0.5
    after = apply_class_bias(probs[test], bias)
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    assert _bacc(after, labels[test]) > _bacc(probs[test], labels[test]) + 0.1
    # the ranking (log-odds order) is unchanged
    assert (np.argsort(after[:, 1] - after[:, 0], kind="stable") == np.argsort(odds[test], kind="stable")).all()


def test_a_calibrated_model_keeps_a_zero_bias():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    np.testing.assert_array_equal(fit_class_bias(probs, labels), [0.0, 0.0])


def test_multiclass_bias_improves_validation_balanced_accuracy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    logits = np.eye(3)[labels] * 2.0 + rng.normal(0, 0.7, (300, 3))
    logits[:, 2] += 1.5  # class 2 over-predicted
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bias = fit_class_bias(probs, labels)
    assert bias[0] == 0 and bias[2] < 0
    assert _bacc(apply_class_bias(probs, bias), labels) > _bacc(probs, labels) + 0.05


def test_nothing_to_fit_on_gives_a_zero_bias():
    assert fit_class_bias(np.zeros((0, 2)), np.zeros(0)).tolist() == [0.0, 0.0]
    assert fit_class_bias(np.array([[np.nan, 0.5]]), np.array([0])).tolist() == [0.0, 0.0]
