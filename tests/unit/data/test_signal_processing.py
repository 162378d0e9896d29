"""Signal processing (docs/reference.md §1.1) on real and generated recordings; every bad input is a clear RecordingError."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.channels import STANDARD_1020
from neurolm.data.samples import fetch_sample
from neurolm.data.signal import (
    RecordingError,
    SignalParams,
    check_values,
    load_recording,
    preprocess_array,
    standard_steps,
)
from neurolm.data.synthetic import eeg_like, write_edf

PARAMS = SignalParams(l_freq=0.1, h_freq=75.0, notch=50.0, sfreq=200.0)


def independent_mne(path: Path, notch: float = 50.0) -> np.ndarray:
    """The official maker's steps written out with plain MNE calls (docs/reference.md §1.1), in units of 100 µV."""
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.filter(l_freq=0.1, h_freq=75.0, verbose="error")
    raw.notch_filter(notch, verbose="error")
    raw.resample(200, verbose="error")
    return raw.get_data(units="uV") / 100


def test_real_physionet_recording_matches_plain_mne():
    path = fetch_sample("S001R02.edf")  # real: EEGMMIDB S001R02, 64 ch, 160 Hz -> upsampled to 200 Hz
    rec = load_recording(path, PARAMS)
    expected = independent_mne(path)
    assert rec.data.dtype == np.float32 and rec.data.shape == (64, 61 * 200)
    np.testing.assert_allclose(rec.data, expected, atol=1e-5, rtol=0)
    assert rec.source_sfreq == 160.0 and rec.sfreq == 200.0
    names = mne.io.read_raw_edf(path, verbose="error").ch_names
    assert rec.channels.source_names == tuple(names)  # all 64 kept, in file order
    assert rec.channels.names[:3] == ("FC5", "FC3", "FC1")
    picked = {src: int(i) for src, i in zip(rec.channels.source_names, rec.channels.indices, strict=True)}
    assert picked["Fc5."] == STANDARD_1020.index("FC5") == 27
    assert picked["Iz.."] == 86 and picked["T9.."] == 36 and picked["T10."] == 46 and picked["Fp1."] == 0


def test_steps_are_named_and_ordered_like_the_official_makers():
    assert [s.name for s in standard_steps(PARAMS)] == ["bandpass", "notch", "resample"]
    assert [s.name for s in standard_steps(SignalParams(notch=None))] == ["bandpass", "resample"]


def test_trials_processed_together_equal_trials_processed_alone():
    trials = np.stack([eeg_like(3, 2.0, 256.0, seed=s) for s in range(4)])  # (4, 3, 512) generated, µV
    together = preprocess_array(trials, 256.0, PARAMS)
    for trial, out in zip(trials, together, strict=True):
        raw = mne.io.RawArray(
            trial * 1e-6, mne.create_info(3, 256.0, "eeg", verbose="error"), verbose="error"
        )
        raw.filter(0.1, 75.0, verbose="error").notch_filter(50.0, verbose="error").resample(
            200, verbose="error"
        )
        np.testing.assert_allclose(out, raw.get_data(units="uV") / 100, atol=1e-6)


def test_sampling_rate_below_twice_the_band_pass_edge_is_an_error(tmp_path):
    path = write_edf(tmp_path / "slow.edf", ["Fp1", "Fp2"], eeg_like(2, 10, 128.0), 128.0)  # generated
    with pytest.raises(RecordingError, match=r"slow\.edf: sampling rate 128 Hz is too low .* h_freq < 64"):
        load_recording(path, PARAMS)
    with pytest.raises(ValueError, match="Nyquist"):
        SignalParams(h_freq=120.0, sfreq=200.0)


def test_no_usable_channels_in_a_real_file_of_another_vendor():
    path = fetch_sample("eeg_acoustic_a.edf")  # real: 2 channels, non-10-20 labels
    with pytest.raises(RecordingError, match=r"eeg_acoustic_a\.edf: no usable channels"):
        load_recording(path, PARAMS)


def test_flat_channels_are_dropped_or_fail(tmp_path):
    data = eeg_like(3, 12, 250.0)
    data[1] = 5.0  # a disconnected electrode
    path = write_edf(tmp_path / "flat.edf", ["EEG FP1-REF", "EEG FP2-REF", "EEG CZ-REF"], data, 250.0)
    rec = load_recording(path, PARAMS, drop_flat=True)
    assert rec.channels.names == ("FP1", "CZ") and rec.flat_channels == ("FP2",)
    assert rec.data.shape[0] == 2
    with pytest.raises(RecordingError, match=r"flat\.edf: flat channels .*: FP2"):
        load_recording(path, PARAMS, drop_flat=False)


def test_non_finite_values_are_an_error():
    data = eeg_like(2, 2.0, 250.0)[None]
    data[0, 1, 100] = np.nan
    with pytest.raises(RecordingError, match="trial.ts: non-finite"):
        preprocess_array(data, 250.0, PARAMS, source="trial.ts")
    with pytest.raises(RecordingError, match="inf"):
        check_values("x.edf", np.array([[0.0, np.inf]]), ["CZ"], drop_flat=True)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    good = write_edf(tmp_path / "good.edf", ["Fp1", "Fp2"], eeg_like(2, 20, 250.0), 250.0)
    truncated = tmp_path / "truncated.edf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rec = load_recording(truncated, PARAMS)  # MNE keeps the complete records; the note goes to the manifest
    assert rec.duration_s < 10.0 and "truncated.edf: truncated" in rec.notes[0]
    truncated.write_bytes(good.read_bytes()[:300])  # header only
    with pytest.raises(RecordingError, match=r"truncated\.edf: (cannot read|recording has 0)"):
        load_recording(truncated, PARAMS)
    corrupt = tmp_path / "corrupt.edf"
    corrupt.write_bytes(b"this is not an EDF header" * 20)
    with pytest.raises(RecordingError, match=r"corrupt\.edf: cannot read"):
        load_recording(corrupt, PARAMS)
    with pytest.raises(RecordingError, match="does not exist"):
        load_recording(tmp_path / "missing.edf", PARAMS)


def test_missing_required_channels(tmp_path):
    path = write_edf(tmp_path / "few.edf", ["EEG FP1-REF", "EEG FP2-REF"], eeg_like(2, 12, 250.0), 250.0)
    with pytest.raises(RecordingError, match="missing required channels CZ"):
        load_recording(path, PARAMS, required=["FP1", "CZ"])
