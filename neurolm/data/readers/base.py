"""What every corpus reader shares: the unit of work (:class:`RecordingTask`), its output
(:class:`RecordingSamples`) and the windowing helpers of docs/reference.md §1.5.

A reader module is named by its corpus's declaration in :mod:`neurolm.corpora` (which also holds its notch, window
and channels: ``CORPORA["<name>"]``; docs/data.md, "Adding a corpus") and has these members::

    DEFAULT_NOTCH_HZ: float          # = CORPORA["<name>"].notch_hz (docs/reference.md §1.1)
    def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]   # driver: find files, subjects, splits
    def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples   # one worker task

``list_recordings`` runs once on the driver and must be cheap (file names only); it decides the split of every
recording because splits need all subjects at once. ``read_recording`` reads, processes and windows one
recording and raises :class:`~neurolm.data.signal.RecordingError` on bad input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurolm.config import PreprocessConfig
from neurolm.data.signal import ProcessedRecording, RecordingError, SignalParams

__all__ = [
    "RecordingTask",
    "RecordingSamples",
    "SPLITS",
    "signal_params",
    "samples_from_windows",
    "fixed_window_starts",
    "pretrain_window_seconds",
    "corpus_root",
    "find_files",
    "first_index_at_or_after",
    "relative_key",
    "require_label_file",
    "check_no_samples",
    "MAX_SAMPLE_SECONDS",
]

SPLITS = ("train", "val", "test")
# The tokenizer's temporal embedding has 64 rows (docs/reference.md §1.2, §6.3-7): no sample may be longer.
MAX_SAMPLE_SECONDS = 64


@dataclass(frozen=True)
class RecordingTask:
    """One recording to process: everything a worker needs, decided on the driver.

    Attributes
    ----------
    corpus : str
        Reader name (``tuab``, ``hmc``, ...).
    dataset : str
        Dataset name written into shards and paths.
    recording : str
        Identifier unique within the dataset (relative path without suffix, e.g.
        ``train/abnormal/01_tcp_ar/aaaaaaav_s004_t000``).
    sources : tuple of str
        Absolute paths of the files read: the recording first, then label files.
    subject : str
        Subject identifier ("" when the corpus has none).
    split : str or None
        Split of every sample of the recording, or ``None`` when the reader assigns splits per sample
        (SEED's official by-trial split, the train/val split of a ``.ts`` TRAIN file).
    label : int
        Recording-level label (−1 when labels come per sample or not at all).
    """

    corpus: str
    dataset: str
    recording: str
    sources: tuple[str, ...]
    subject: str
    split: str | None
    label: int = -1


@dataclass
class RecordingSamples:
    """The samples cut from one recording; all share one shape (C, T·sfreq).

    Attributes
    ----------
    signals : numpy.ndarray
        (n, C, T·sfreq) float, units of 100 µV.
    start_s : numpy.ndarray
        (n,) window start in seconds from the start of the recording (negative for TUEV's wrapped windows).
    labels : numpy.ndarray
        (n,) int64, −1 for none.
    splits : list of str
        (n,) split of each sample.
    processed : ProcessedRecording or None
        The processed recording (channels, rates), for the manifest.
    channel_indices : numpy.ndarray
        (C,) int16 vocabulary indices.
    channel_names : tuple of str
        (C,) vocabulary names.
    source_sfreq : float
        Sampling rate of the source file.
    source_seconds : float
        Seconds of EEG processed (the benchmark's unit of work).
    warnings : list of str
        Non-fatal problems (label rows that disagree with the recording, ...), kept in the manifest.
    """

    signals: np.ndarray
    start_s: np.ndarray
    labels: np.ndarray
    splits: list[str]
    channel_indices: np.ndarray
    channel_names: tuple[str, ...]
    source_sfreq: float
    source_seconds: float
    unknown_channels: tuple[str, ...] = ()
    flat_channels: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.signals.shape[0]
        if not (len(self.start_s) == len(self.labels) == len(self.splits) == n):
            raise ValueError("signals, start_s, labels and splits must have one entry per sample")
        if self.signals.ndim != 3 or self.signals.shape[1] != len(self.channel_indices):
            raise ValueError(
                f"signals must be (n, C, T) with C={len(self.channel_indices)}, got {self.signals.shape}"
            )

    def __len__(self) -> int:
        return int(self.signals.shape[0])


def signal_params(cfg: PreprocessConfig, default_notch_hz: float) -> SignalParams:
    """The processing parameters of a config; ``notch=None`` means the corpus default (docs/reference.md §1.1)."""
    notch = default_notch_hz if cfg.notch is None else (cfg.notch or None)
    return SignalParams(l_freq=cfg.l_freq, h_freq=cfg.h_freq, notch=notch, sfreq=cfg.sfreq)


def fixed_window_starts(n_samples: int, window: int, hop: int | None = None) -> np.ndarray:
    """Start indices of windows of ``window`` samples every ``hop`` (default: non-overlapping) that fit
    entirely in ``n_samples``; the remainder is dropped, as in every official maker (docs/reference.md §1.5)."""
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window}, {hop}")
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def pretrain_window_seconds(n_channels: int, max_tokens: int = 1024) -> int:
    """Pre-training window length: ``max_tokens // C`` seconds (docs/reference.md §1.5), capped at 64 s because the
    temporal embedding has 64 rows (the official code crashes for C < 16, docs/reference.md §6.3-7)."""
    if n_channels <= 0:
        raise ValueError("a window needs at least one channel")
    return max(1, min(max_tokens // n_channels, MAX_SAMPLE_SECONDS))


def first_index_at_or_after(t_s: float, sfreq: float) -> int:
    """Index of the first sample at or after ``t_s`` seconds — the official ``np.where(times >= t)[0][0]``."""
    return int(math.ceil(round(t_s * sfreq, 6)))


def samples_from_windows(
    rec: ProcessedRecording,
    starts: Sequence[int] | np.ndarray,
    window: int,
    labels: Sequence[int] | np.ndarray | int,
    splits: Sequence[str] | str,
    data: np.ndarray | None = None,
    start_offset: int = 0,
    warnings: list[str] | None = None,
) -> RecordingSamples:
    """Cut windows ``data[:, s:s+window]`` for each start and package them with labels and splits.

    ``data`` defaults to ``rec.data``; ``start_offset`` is subtracted from the stored ``start_s`` (TUEV cuts
    from a tiled copy whose first real sample sits at ``start_offset``).
    """
    signal = rec.data if data is None else data
    starts = np.asarray(starts, dtype=np.int64)
    n = len(starts)
    if n and (starts.min() < 0 or starts.max() + window > signal.shape[1]):
        raise ValueError(f"windows of {window} samples at {starts.min()}..{starts.max()} exceed {signal.shape[1]}")
    # One slice copy per window: 4x faster than gathering with an (n, window) index and transposing.
    windows = np.empty((n, signal.shape[0], window), dtype=signal.dtype)  # (n, C, window)
    for i, start in enumerate(starts):
        windows[i] = signal[:, start : start + window]
    label_array = np.full(n, labels, dtype=np.int64) if np.isscalar(labels) else np.asarray(labels, np.int64)
    split_list = [splits] * n if isinstance(splits, str) else list(splits)
    return RecordingSamples(
        signals=windows,
        start_s=(starts - start_offset) / rec.sfreq,
        labels=label_array,
        splits=split_list,
        channel_indices=rec.channels.indices,
        channel_names=rec.channels.names,
        source_sfreq=rec.source_sfreq,
        source_seconds=rec.duration_s,
        unknown_channels=rec.channels.unknown + rec.channels.duplicates,
        flat_channels=rec.flat_channels,
        warnings=list(rec.notes) + list(warnings or []),
    )


def corpus_root(cfg: PreprocessConfig, marker: str = "edf") -> Path:
    """The corpus root; accepts either the release directory or its ``edf/`` child (TUH layout)."""
    root = Path(cfg.input).expanduser()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    if (root / marker).is_dir():
        return root / marker
    return root


def find_files(root: Path, pattern: str) -> list[Path]:
    """Files below ``root`` whose name matches the regular expression ``pattern`` (full match), sorted."""
    regex = re.compile(pattern)
    return sorted(p for p in root.rglob("*") if p.is_file() and regex.fullmatch(p.name))


def relative_key(path: Path, root: Path) -> str:
    """A recording identifier: the path relative to the corpus root, without the suffix, ``/``-separated."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def require_label_file(recording: Path, label_file: Path) -> None:
    if not label_file.is_file():
        raise RecordingError(recording, f"label file {label_file.name} is missing")


def check_no_samples(source: str | Path, samples: RecordingSamples, why: str) -> RecordingSamples:
    """A recording that yields no sample raises :class:`RecordingError` with the reason: ``failed`` when its
    label file disagrees with it (the dropped rows are in ``samples.warnings``), else ``skipped`` (too short,
    no label rows)."""
    if len(samples) == 0:
        raise RecordingError(source, why, status="failed" if samples.warnings else "skipped")
    return samples
