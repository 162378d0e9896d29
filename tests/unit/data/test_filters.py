"""The channel-vectorised band-pass, notch and resampling (neurolm/data/filters.py) give MNE's numbers: on the real
recording, at its edges, on recordings shorter than the filters, and for every kernel design the pipeline uses."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from neurolm.data import filters
from neurolm.data.samples import fetch_sample
from neurolm.data.signal import SignalParams, apply_standard_steps, load_recording
from neurolm.data.synthetic import eeg_like, write_edf


def _mne_raw(data_v: np.ndarray, sfreq: float) -> mne.io.RawArray:
    info = mne.create_info(data_v.shape[0], sfreq, "eeg", verbose="error")
    return mne.io.RawArray(data_v.copy(), info, verbose="error")


def _relative_max_diff(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def physionet_v() -> tuple[np.ndarray, float]:
    raw = mne.io.read_raw_edf(
        fetch_sample("S001R02.edf"), preload=True, verbose="error"
    )  # real: 64 ch, 160 Hz
    return raw.get_data(), raw.info["sfreq"]


@pytest.mark.parametrize("step", ["bandpass", "notch", "resample"])
def test_each_step_equals_the_mne_raw_method_on_the_real_recording(physionet_v, step):
    data, sfreq = physionet_v
    raw = _mne_raw(data, sfreq)
    if step == "bandpass":
        expected, ours = raw.filter(0.1, 75.0, verbose="error"), filters.bandpass(data, sfreq, 0.1, 75.0)
    elif step == "notch":
        expected, ours = raw.notch_filter(60.0, verbose="error"), filters.notch(data, sfreq, 60.0)
    else:
        expected, ours = raw.resample(200.0, verbose="error"), filters.resample(data, sfreq, 200.0)
    reference = expected.get_data()
    # The same arithmetic in the same order: equal to the last bit in practice, edges included.
    assert _relative_max_diff(ours, reference) <= 1e-12
    np.testing.assert_allclose(ours[:, :50], reference[:, :50], rtol=0, atol=1e-12 * np.abs(reference).max())
    np.testing.assert_allclose(
        ours[:, -50:], reference[:, -50:], rtol=0, atol=1e-12 * np.abs(reference).max()
    )


def test_whole_recording_equals_plain_mne_to_float32_precision():
    path = fetch_sample("S001R02.edf")
    params = SignalParams(l_freq=0.1, h_freq=75.0, notch=60.0, sfreq=200.0)
    rec = load_recording(path, params)
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.filter(0.1, 75.0, verbose="error").notch_filter(60.0, verbose="error").resample(
        200.0, verbose="error"
    )
    expected = raw.get_data(units="uV") / 100
    assert rec.data.dtype == np.float32 and rec.data.shape == expected.shape == (64, 61 * 200)
    # float64 before the cast agrees to ~1e-15 of the signal scale; the float32 output to its rounding.
    ours64 = apply_standard_steps(mne.io.read_raw_edf(path, preload=True, verbose="error").get_data(units="uV"),
                                  160.0, params) / 100  # fmt: skip
    assert _relative_max_diff(ours64, expected) <= 1e-12
    assert np.abs(rec.data - expected).max() <= 1e-6 * np.abs(expected).max()


@pytest.mark.parametrize(
    ("n_times", "sfreq", "new_sfreq", "l_freq", "notch"),
    [
        (
            300,
            160.0,
            200.0,
            0.1,
            50.0,
        ),  # 1.9 s: shorter than the 0.1-Hz band-pass (5281 taps) and the notch (1057)
        (40, 256.0, 200.0, 0.1, 50.0),  # a few samples: padding is mostly zeros (reflect_limited)
        (2, 250.0, 200.0, 0.1, 50.0),
        (7777, 250.0, 200.0, 0.1, 50.0),  # odd length, downsampling
        (5000, 512.0, 200.0, 0.1, 50.0),
        (12345, 200.0, 200.0, 0.1, 50.0),  # already at the target rate: no resampling
        # Around the length from which band-pass and notch run as one convolution (the longer kernel):
        (5280, 160.0, 200.0, 0.1, 60.0),
        (5281, 160.0, 200.0, 0.1, 60.0),
        (5282, 160.0, 200.0, 0.1, 60.0),
        (1057, 160.0, 200.0, 1.0, 60.0),  # 1-Hz edge: band-pass 529 taps, shorter than the notch (1057)
        (3001, 160.0, 200.0, 1.0, 60.0),
        (9000, 160.0, 200.0, 0.5, None),  # no notch
    ],
)
def test_short_and_odd_recordings_match_mne(n_times, sfreq, new_sfreq, l_freq, notch):
    data = eeg_like(3, n_times / sfreq, sfreq, seed=n_times)[:, :n_times] * 1e-6  # generated, volts
    assert data.shape[1] == n_times
    params = SignalParams(l_freq=l_freq, h_freq=75.0, notch=notch, sfreq=new_sfreq)
    raw = _mne_raw(data, sfreq).filter(l_freq, 75.0, verbose="error")
    if notch is not None:
        raw.notch_filter(notch, verbose="error")
    raw.resample(new_sfreq, verbose="error")
    ours = apply_standard_steps(data, sfreq, params)
    assert _relative_max_diff(ours, raw.get_data()) <= 1e-12


@pytest.mark.parametrize("sfreq", [128.0, 160.0, 173.61, 200.0, 250.0, 256.0, 500.0, 512.0, 1000.0, 2048.0])
def test_kernels_are_mne_create_filter_bit_for_bit(sfreq):
    for l_freq, h_freq in [(0.1, 75.0), (0.5, 40.0), (1.0, 30.0), (0.3, 99.0), (4.0, 8.0), (0.05, 60.0)]:
        if h_freq < sfreq / 2:
            expected = mne.filter.create_filter(None, sfreq, l_freq, h_freq, verbose="error")
            np.testing.assert_array_equal(filters.bandpass_kernel(sfreq, l_freq, h_freq), expected)
    for freq in [50.0, 60.0, 16.7]:
        if freq + freq / 400 + 0.5 < sfreq / 2:
            width = freq / 200
            expected = mne.filter.create_filter(
                None,
                sfreq,
                [freq + width / 2 + 0.5],
                [freq - width / 2 - 0.5],
                "auto",
                0.5,
                0.5,
                verbose="error",
            )
            np.testing.assert_array_equal(filters.notch_kernel(sfreq, freq), expected)


def test_recordings_split_by_annotations_are_filtered_by_mne_piece_by_piece(tmp_path):
    path = write_edf(
        tmp_path / "gap.edf", ["Fp1", "Fp2", "Cz"], eeg_like(3, 30, 250.0, seed=3), 250.0
    )  # generated
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.set_annotations(mne.Annotations([10.0], [5.0], ["BAD_ACQ_SKIP"]))
    expected = raw.copy().filter(0.1, 75.0, verbose="error").notch_filter(50.0, verbose="error")
    expected.resample(200.0, verbose="error")
    seen = []

    def keep_annotations(opened: mne.io.BaseRaw) -> None:
        opened.set_annotations(raw.annotations)
        seen.append(True)

    rec = load_recording(path, SignalParams(notch=50.0), inspect=keep_annotations)
    assert seen and rec.data.shape == expected.get_data().shape
    # MNE filters the two pieces apart; one pass over the whole recording would differ near the cut.
    np.testing.assert_allclose(rec.data, expected.get_data(units="uV") / 100, rtol=0, atol=1e-6)
    whole = apply_standard_steps(raw.get_data(units="uV"), 250.0, SignalParams(notch=50.0)) / 100
    assert np.abs(whole - expected.get_data(units="uV") / 100).max() > 1e-3


def test_a_fresh_worker_imports_neither_scipy_signal_nor_pandas(tmp_path):
    """scipy.signal (with scipy.stats) and pandas cost ~1.5 CPU-s in each fresh worker process, more than
    processing a 10-minute recording; processing and writing a recording needs neither."""
    import subprocess
    import sys

    code = (
        "import sys, json; from neurolm.config import PreprocessConfig, load_config; "
        "from neurolm.preprocess import run_preprocess; from neurolm.data.samples import fetch_sample; "
        f"cfg = load_config(PreprocessConfig, None, ['corpus=edf', 'input=' + json.dumps(str(fetch_sample('S001R02.edf'))), "
        f"'output=' + json.dumps({str(tmp_path / 'out')!r}), 'notch=60']); "
        "summary = run_preprocess(cfg, progress=False, executor='inline'); "
        "print(summary['written'], 'scipy.signal' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["1", "False", "False"]
