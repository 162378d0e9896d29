"""HMC sleep staging (PhysioNet ``hmc-sleep-staging`` 1.1; docs/reference.md §1.5, §1.7, ``prepare_HMC.py``).

Layout: ``recordings/SNxxx.edf`` with ``recordings/SNxxx_sleepscoring.txt`` beside it, a CSV with the columns
``Date, Time, Recording onset, Duration, Annotation, Linked channel``. Every row with Duration 30 and a sleep
stage (W, N1, N2, N3, R → 0..4) is one 30-s sample starting at its onset; other rows (lights off/on) are ignored.
Channels: EEG F4-M1, C4-M1, O2-M1, C3-M2 stored as F4, C4, O2, C3 (official order). 50 Hz notch.

Splits: seeded and subject-wise (one recording per subject). ``official_split``: sorted recordings, first 100
train, next 25 val, the rest test.
"""

from __future__ import annotations

import csv
from pathlib import Path

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    check_no_samples,
    find_files,
    first_index_at_or_after,
    relative_key,
    require_label_file,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.signal import RecordingError, load_recording

__all__ = [
    "DEFAULT_NOTCH_HZ",
    "EPOCH_S",
    "CHANNELS",
    "STAGES",
    "list_recordings",
    "read_recording",
    "read_scoring",
]

CORPUS = CORPORA["hmc"]  # notch, epoch length and channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
EPOCH_S = CORPUS.window_s
CHANNELS = CORPUS.channels
STAGES = {
    "Sleep stage W": 0,
    "Sleep stage N1": 1,
    "Sleep stage N2": 2,
    "Sleep stage N3": 3,
    "Sleep stage R": 4,
}
OFFICIAL_TRAIN, OFFICIAL_VAL = 100, 25


def read_scoring(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``*_sleepscoring.txt`` file, keys and values stripped of the padding spaces."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    needed = {"Recording onset", "Duration", "Annotation"}
    if rows and not needed <= rows[0].keys():
        raise RecordingError(path, f"scoring file lacks columns {sorted(needed - rows[0].keys())}")
    return rows


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = Path(cfg.input).expanduser()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    files = find_files(root, r"SN\d+\.edf")
    if not files:
        raise RecordingError(root, "no SNxxx.edf recordings found (HMC layout: recordings/SNxxx.edf)")
    if cfg.official_split:
        split_of = {
            f.stem: (
                "train" if i < OFFICIAL_TRAIN else "val" if i < OFFICIAL_TRAIN + OFFICIAL_VAL else "test"
            )
            for i, f in enumerate(files)
        }
    else:
        split_of = subject_split((f.stem for f in files), cfg.split_fractions, cfg.split_seed)
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            "hmc",
            dataset,
            relative_key(f, root),
            (str(f), str(f.with_name(f"{f.stem}_sleepscoring.txt"))),
            f.stem,
            split_of[f.stem],
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    edf, scoring = Path(task.sources[0]), Path(task.sources[1])
    require_label_file(edf, scoring)
    rows = read_scoring(scoring)
    rec = load_recording(
        edf, signal_params(cfg, DEFAULT_NOTCH_HZ), required=CHANNELS, drop_flat=False, dtype=cfg.signal_dtype
    )
    n, window = rec.data.shape[1], int(EPOCH_S * rec.sfreq)
    starts, labels = [], []
    outside = unknown = 0
    for row in rows:
        try:
            onset, duration = float(row["Recording onset"]), float(row["Duration"])
        except ValueError as err:
            raise RecordingError(scoring, f"row {row} has a non-numeric onset or duration") from err
        if duration != EPOCH_S:
            continue
        if row["Annotation"] not in STAGES:
            unknown += 1
            continue
        first = first_index_at_or_after(onset, rec.sfreq)
        if first < 0 or first + window > n:
            outside += 1
            continue
        starts.append(first)
        labels.append(STAGES[row["Annotation"]])
    warnings = []
    if outside:
        warnings.append(
            f"{scoring.name}: {outside} epoch(s) beyond the {rec.duration_s:.1f} s recording dropped"
        )
    if unknown:
        warnings.append(f"{scoring.name}: {unknown} 30-s row(s) with an unknown annotation dropped")
    samples = samples_from_windows(rec, starts, window, labels, task.split or "train", warnings=warnings)
    return check_no_samples(
        edf, samples, f"no usable 30-s epoch in {scoring.name} ({'; '.join(warnings) or 'no rows'})"
    )
