"""Small corpora in each corpus's real directory layout, for tests, benchmarks and demos.

The paper's corpora need registration or are too large here (docs/data.md), so their readers are exercised on small
trees written in the same layout, with the same file names, channel labels and label-file formats, from
*generated* EEG-like signals (:func:`eeg_like`: 1/f background, a 10 Hz alpha rhythm and mains hum) or from a
real recording's channels passed in by the caller. EDF files are written with ``mne.export`` (edfio); SEED's
Neuroscan ``.cnt`` with :func:`write_cnt`, a minimal writer of the 32-bit CNT layout MNE reads.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np

__all__ = [
    "eeg_like",
    "write_edf",
    "write_cnt",
    "TUH_FILE_CHANNELS",
    "make_tueg_tree",
    "make_tuab_tree",
    "make_tuev_tree",
    "make_tusl_tree",
    "make_hmc_tree",
    "make_workload_tree",
    "make_seed_tree",
    "make_ts_problem",
]

# Channel labels of a TUH "01_tcp_ar" file, in the order TUH files list them, with the non-EEG extras the
# official makers drop.
TUH_FILE_CHANNELS: tuple[str, ...] = tuple(
    f"EEG {name}-REF" for name in ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                                   "T3", "T4", "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ", "ROC", "LOC", "EKG1",
                                   "T1", "T2", "20")
) + ("PHOTIC-REF", "IBI")  # fmt: skip


def eeg_like(
    n_channels: int, seconds: float, sfreq: float, seed: int = 0, mains_hz: float = 60.0
) -> np.ndarray:
    """Generated EEG-like signals in µV, (C, N): 1/f noise (~20 µV), 10 Hz alpha (~10 µV), 2 µV mains hum."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sfreq))
    spectrum = rng.standard_normal((n_channels, n // 2 + 1)) + 1j * rng.standard_normal(
        (n_channels, n // 2 + 1)
    )
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum /= np.maximum(freqs, 0.5)  # 1/f amplitude
    pink = np.fft.irfft(spectrum, n=n, axis=1)
    pink *= 20.0 / pink.std(axis=1, keepdims=True)
    t = np.arange(n) / sfreq
    phases = rng.uniform(0, 2 * np.pi, (n_channels, 1))
    alpha = 10.0 * np.sin(2 * np.pi * 10.0 * t + phases)
    return pink + alpha + 2.0 * np.sin(2 * np.pi * mains_hz * t)


def write_edf(path: str | Path, ch_names: Sequence[str], data_uv: np.ndarray, sfreq: float) -> Path:
    """Write an EDF file (µV data, one row per channel) with ``mne.export``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = mne.create_info(list(ch_names), sfreq, ch_types="eeg", verbose="error")
    raw = mne.io.RawArray(np.asarray(data_uv, dtype=np.float64) * 1e-6, info, verbose="error")
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return path


def write_cnt(path: str | Path, ch_names: Sequence[str], data_uv: np.ndarray, sfreq: int) -> Path:
    """Write a minimal Neuroscan CNT file (32-bit samples, no events) that ``mne.io.read_raw_cnt`` reads.

    Layout (paulbourke.net/dataformats/eeg): a 900-byte SETUP header, 75 bytes per electrode, multiplexed
    little-endian int32 samples, then an empty event table. Resolution 0.01 µV.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_channels, n_samples = data_uv.shape
    resolution_uv = 0.01
    header = bytearray(900)
    header[0:12] = b"Version 3.0\x00"
    header[225:233] = b"10/27/13"
    header[235:243] = b"10:00:00"
    struct.pack_into("<H", header, 370, n_channels)
    struct.pack_into("<H", header, 376, int(sfreq))
    struct.pack_into("<i", header, 864, n_samples)
    data_start = 900 + 75 * n_channels
    event_table = data_start + 4 * n_channels * n_samples
    struct.pack_into("<i", header, 886, event_table)
    struct.pack_into("<f", header, 890, n_samples / sfreq)
    electrodes = bytearray(75 * n_channels)
    for i, name in enumerate(ch_names):
        base = 75 * i
        electrodes[base : base + 10] = name.encode()[:9].ljust(10, b"\x00")
        struct.pack_into("<ff", electrodes, base + 19, float(i % 9), float(i // 9))  # screen position
        struct.pack_into("<h", electrodes, base + 47, 0)  # baseline
        struct.pack_into("<f", electrodes, base + 59, 204.8)  # sensitivity; MNE: cal * sens * 1e-6 / 204.8
        struct.pack_into("<f", electrodes, base + 71, resolution_uv)
    samples = np.round(np.asarray(data_uv).T / resolution_uv).astype("<i4")  # (N, C) multiplexed
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(electrodes)
        handle.write(samples.tobytes())
        handle.write(struct.pack("<Bll", 1, 0, 0))  # TEEG: event type 1, no events
    return path


def _tuh_edf(
    path: Path, seconds: float, sfreq: float, seed: int, channels: Sequence[str] = TUH_FILE_CHANNELS
) -> Path:
    return write_edf(path, channels, eeg_like(len(channels), seconds, sfreq, seed), sfreq)


def make_tueg_tree(root: str | Path, subjects: Sequence[str] = ("aaaaaaaa", "aaaaaaab", "aaaaaaac"),
                   seconds: float = 70.0, sfreq: float = 250.0) -> Path:  # fmt: skip
    """TUEG: ``edf/000/<subject>/s001_2015/01_tcp_ar/<subject>_s001_t000.edf`` per subject, plus one
    linked-ears file (``02_tcp_le``, ``EEG FP1-LE``...) the reader must skip."""
    root = Path(root)
    for i, subject in enumerate(subjects):
        _tuh_edf(root / "edf" / "000" / subject / "s001_2015" / "01_tcp_ar" / f"{subject}_s001_t000.edf",
                 seconds, sfreq, seed=i)  # fmt: skip
    le_channels = [c.replace("-REF", "-LE") for c in TUH_FILE_CHANNELS]
    _tuh_edf(root / "edf" / "000" / subjects[0] / "s002_2016" / "02_tcp_le" / f"{subjects[0]}_s002_t000.edf",
             seconds, sfreq, seed=99, channels=le_channels)  # fmt: skip
    return root


def make_tuab_tree(
    root: str | Path, subjects_per_folder: int = 3, seconds: float = 25.0, sfreq: float = 250.0
) -> Path:
    """TUAB v3.0.0: ``edf/{train,eval}/{abnormal,normal}/01_tcp_ar/<subject>_s001_t000.edf``."""
    root = Path(root)
    seed = 0
    for part in ("train", "eval"):
        for label in ("abnormal", "normal"):
            for k in range(subjects_per_folder):
                subject = f"{part[0]}{label[0]}{k:06d}"
                seed += 1
                _tuh_edf(
                    root / "edf" / part / label / "01_tcp_ar" / f"{subject}_s001_t000.edf",
                    seconds,
                    sfreq,
                    seed,
                )
    return root


def make_tuev_tree(root: str | Path, train_subjects: int = 3, eval_subjects: int = 1, seconds: float = 20.0,
                   sfreq: float = 256.0) -> Path:  # fmt: skip
    """TUEV v2.0.0: ``edf/{train,eval}/<subject>/<subject>_00000001.edf`` + ``.rec`` (channel,start,stop,label).

    Each ``.rec`` has an event at the very start and one at the very end (windows wrap around) and two inside.
    """
    root = Path(root)
    for part, count in (("train", train_subjects), ("eval", eval_subjects)):
        for k in range(count):
            subject = f"{part[0]}{k:07d}"
            edf = _tuh_edf(
                root / "edf" / part / subject / f"{subject}_00000001.edf", seconds, sfreq, seed=k + 10
            )
            rows = [(0, 0.0, 1.0, 6), (3, 5.0, 6.0, 1), (7, 9.0, 10.0, 4), (12, seconds - 1.0, seconds, 2)]
            edf.with_suffix(".rec").write_text(
                "".join(f"{c},{a:.4f},{b:.4f},{lab}\n" for c, a, b, lab in rows)
            )
    return root


def make_tusl_tree(root: str | Path, subjects: Sequence[str] = ("aaaaaaju", "aaaaaakb", "aaaaaaqs"),
                   seconds: float = 40.0, sfreq: float = 250.0) -> Path:  # fmt: skip
    """TUSL: ``edf/<subject>/s001_2010/01_tcp_ar/<subject>_s001_t000.edf`` + ``.tse_agg`` with 10-s segments."""
    root = Path(root)
    for i, subject in enumerate(subjects):
        edf = _tuh_edf(root / "edf" / subject / "s001_2010" / "01_tcp_ar" / f"{subject}_s001_t000.edf",
                       seconds, sfreq, seed=i + 20)  # fmt: skip
        edf.with_suffix(".tse_agg").write_text(
            "version = tse_v1.0.0\n\n0.0000 10.0000 bckg 1.0000\n10.0000 20.0000 slow 1.0000\n"
            "20.0000 30.0000 seiz 1.0000\n30.0000 40.0000 slow 1.0000\n"
        )
    return root


_HMC_CHANNELS = (
    "EEG F4-M1",
    "EEG C4-M1",
    "EEG O2-M1",
    "EEG C3-M2",
    "EMG chin",
    "EOG E1-M2",
    "EOG E2-M2",
    "ECG",
)
_HMC_STAGES = ("Sleep stage W", "Sleep stage N1", "Sleep stage N2", "Sleep stage N3", "Sleep stage R")


def make_hmc_tree(root: str | Path, n_subjects: int = 3, epochs: int = 4, sfreq: float = 256.0) -> Path:
    """HMC: ``recordings/SNxxx.edf`` + ``recordings/SNxxx_sleepscoring.txt`` (lights-off row, 30-s stages,
    lights-on row), as in PhysioNet hmc-sleep-staging 1.1."""
    root = Path(root)
    for k in range(1, n_subjects + 1):
        name = f"SN{k:03d}"
        seconds = epochs * 30.0
        write_edf(root / "recordings" / f"{name}.edf", _HMC_CHANNELS,
                  eeg_like(len(_HMC_CHANNELS), seconds, sfreq, seed=k + 30, mains_hz=50.0), sfreq)  # fmt: skip
        lines = ["Date, Time, Recording onset, Duration, Annotation, Linked channel",
                 "2001-01-01, 22:08:00, 0, 0, Lights off, "]  # fmt: skip
        for e in range(epochs):
            lines.append(
                f"2001-01-01, 22:{8 + e // 2:02d}:{30 * (e % 2):02d}, {30 * e}, 30, {_HMC_STAGES[e % 5]}, "
            )
        lines.append(f"2001-01-01, 23:00:00, {30 * epochs}, 0, Lights on, ")
        (root / "recordings" / f"{name}_sleepscoring.txt").write_text("\n".join(lines) + "\n")
    return root


_WORKLOAD_CHANNELS = tuple(f"EEG {n}" for n in ("Fp1", "Fp2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5",
                                                "T6", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz", "A2-A1")) + ("ECG ECG",)  # fmt: skip


def make_workload_tree(
    root: str | Path, n_subjects: int = 3, seconds: float = 62.0, sfreq: float = 500.0
) -> Path:
    """EEGMAT: ``SubjectXX_1.edf`` (rest) and ``SubjectXX_2.edf`` (arithmetic) per subject."""
    root = Path(root)
    for k in range(n_subjects):
        for part in (1, 2):
            write_edf(root / f"Subject{k:02d}_{part}.edf", _WORKLOAD_CHANNELS,
                      eeg_like(len(_WORKLOAD_CHANNELS), seconds, sfreq, seed=40 + 2 * k + part, mains_hz=50.0), sfreq)  # fmt: skip
    return root


SEED_TEST_CHANNELS = (
    "FP1",
    "FPZ",
    "FP2",
    "F7",
    "FZ",
    "CZ",
    "PZ",
    "OZ",
    "CB1",
    "CB2",
    "M1",
    "M2",
    "VEO",
    "HEO",
)


def make_seed_tree(root: str | Path, subjects: Sequence[str] = ("1", "2", "3"), seconds: float = 300.0,
                   sfreq: int = 200) -> Path:  # fmt: skip
    """SEED: ``<subject>_<yyyymmdd>.cnt`` Neuroscan sessions (a subset of the 62 channels, plus M1/M2/VEO/HEO).

    A real session lasts 3811 s; ``seconds`` shorter than that keeps only the first clips (the reader drops the
    windows beyond the end and says so).
    """
    root = Path(root)
    for i, subject in enumerate(subjects):
        data = eeg_like(len(SEED_TEST_CHANNELS), seconds, sfreq, seed=50 + i, mains_hz=50.0)
        write_cnt(root / f"{subject}_2013102{i}.cnt", SEED_TEST_CHANNELS, data, sfreq)
    return root


def make_ts_problem(root: str | Path, name: str = "TinyEEG", n_train: int = 20, n_test: int = 10,
                    channels: Sequence[str] = ("C3", "C4"), sfreq: int = 250, seconds: float = 2.0) -> Path:  # fmt: skip
    """An aeon ``.ts`` problem: ``<name>/<name>_{TRAIN,TEST}.ts`` and ``auxiliary/<name>.json``; class 1
    cases carry a stronger 10 Hz rhythm."""
    root = Path(root)
    problem = root / name
    problem.mkdir(parents=True, exist_ok=True)
    (root / "auxiliary").mkdir(exist_ok=True)
    (root / "auxiliary" / f"{name}.json").write_text(
        f'{{"sfreq": {sfreq}, "channels": {list(channels)!r}}}'.replace("'", '"')
    )
    rng = np.random.default_rng(7)
    for part, count in (("TRAIN", n_train), ("TEST", n_test)):
        lines = [f"@problemName {name}", "@timeStamps false", "@missing false", "@univariate false",
                 f"@dimensions {len(channels)}", "@equalLength true", f"@seriesLength {int(seconds * sfreq)}",
                 "@classLabel true rest move", "@data"]  # fmt: skip
        for case in range(count):
            label = case % 2
            data = eeg_like(len(channels), seconds, sfreq, seed=int(rng.integers(1 << 30)), mains_hz=50.0)
            data += label * 15.0 * np.sin(2 * np.pi * 10.0 * np.arange(data.shape[1]) / sfreq)
            lines.append(
                ":".join(",".join(f"{v:.3f}" for v in ch) for ch in data) + f":{('rest', 'move')[label]}"
            )
        (problem / f"{name}_{part}.ts").write_text("\n".join(lines) + "\n")
    return problem
