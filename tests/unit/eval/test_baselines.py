"""Linear baselines (issue 14 item 5): features, fitting on train only, and real problems."""

from __future__ import annotations

import numpy as np
import pytest

from neurolm.config import PreprocessConfig
from neurolm.data.readers import ts
from neurolm.data.samples import fetch_sample
from neurolm.eval.baselines import (
    BASELINES,
    band_power_features,
    best_baseline,
    mean_features,
    run_baselines,
    waveform_features,
)


def test_band_power_finds_alpha_and_means_find_offsets():
    t = np.arange(200) / 200.0
    alpha = np.sin(2 * np.pi * 10 * t)[None, None, :].repeat(2, axis=1)
    beta = np.sin(2 * np.pi * 20 * t)[None, None, :].repeat(2, axis=1)
    feats = band_power_features(np.concatenate([alpha, beta])).reshape(2, 2, 5)
    assert feats[0, 0].argmax() == 2 and feats[1, 0].argmax() == 3  # alpha, beta
    assert mean_features(np.ones((3, 4, 50)) * 2).tolist() == [[2.0] * 4] * 3


def test_waveform_features_are_bin_means_of_each_channel():
    x = np.arange(2 * 3 * 50, dtype=float).reshape(2, 3, 50)
    feats = waveform_features(x, sfreq=100.0, bin_s=0.2)  # bins of 20 samples: 2 whole bins, 10 samples dropped
    assert feats.shape == (2, 6)
    np.testing.assert_allclose(feats.reshape(2, 3, 2), np.stack([x[:, :, :20].mean(2), x[:, :, 20:40].mean(2)], 2))
    assert waveform_features(np.ones((1, 2, 5)), bin_s=0.1).shape == (1, 2)  # shorter than a bin: one bin


def test_a_time_course_is_read_by_the_waveform_baseline_and_not_by_channel_means():
    """A class in the shape of the trial (a rise across it, the trial mean unchanged): the bin means see it, the
    channel means do not."""
    rng = np.random.default_rng(1)
    y = np.arange(160) % 2
    x = rng.normal(scale=0.3, size=(160, 2, 200))
    x[y == 1, 0] += np.linspace(-1, 1, 200)  # zero mean
    res = run_baselines(x[:120], y[:120], x[120:], y[120:], num_classes=2)
    assert res["lda/waveform"]["balanced_accuracy"] > 0.9 and res["logreg/waveform"]["balanced_accuracy"] > 0.9
    assert res["lda/means"]["balanced_accuracy"] < 0.75
    assert res["lda/waveform"]["features"] == 2 * 10


def test_baselines_learn_a_separable_problem_and_report_chance_on_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 200))
    y = np.arange(120) % 2
    x[y == 1, 0] += 0.5  # class in channel 0's mean
    res = run_baselines(x[:80], y[:80], x[80:], y[80:], num_classes=2)
    assert set(res) == set(BASELINES)
    assert res["lda/means"]["balanced_accuracy"] > 0.9 and res["logreg/means"]["balanced_accuracy"] > 0.9
    assert res["lda/means"]["n_train"] == 80 and res["lda/means"]["n_test"] == 40
    assert best_baseline(res)[1] == max(r["balanced_accuracy"] for r in res.values())
    noise = run_baselines(x[:80], rng.integers(0, 2, 80), x[80:], rng.integers(0, 2, 40), num_classes=2)
    assert all(r["balanced_accuracy"] < 0.8 for r in noise.values())
    one_class = run_baselines(x[:80], np.zeros(80, int), x[80:], y[80:], num_classes=2)
    assert all("error" in r for r in one_class.values()) and best_baseline(one_class) is None


def test_baselines_refuse_trials_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        run_baselines([np.zeros((2, 200)), np.zeros((3, 200))], [0, 1], [np.zeros((2, 200))], [0], 2)


def test_real_selfregulation_scp1_channel_means_are_linear():
    cfg = PreprocessConfig(corpus="ts", input=str(fetch_sample("SelfRegulationSCP1")), output="/unused")
    train, test = (ts.read_recording(t, cfg) for t in ts.list_recordings(cfg))
    keep = np.asarray(train.splits) == "train"
    res = run_baselines(train.signals[keep], train.labels[keep], test.signals, test.labels, num_classes=2)
    assert res["lda/means"]["balanced_accuracy"] > 0.8  # the known ~0.85 of a discriminant on segment means
    assert res["lda/means"]["n_train"] == 238 and res["lda/means"]["n_test"] == 293
