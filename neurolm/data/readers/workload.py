"""EEG during mental arithmetic, "Workload" (PhysioNet EEGMAT 1.0.0; docs/reference.md §1.5, §1.7,
``prepare_workload.py``).

Layout: ``SubjectXX_1.edf`` (rest, label 0, "No") and ``SubjectXX_2.edf`` (arithmetic, label 1, "Yes").
The last 60 s of each recording give 29 windows of 4 s with a 2-s hop. 19 channels in the official order, 50 Hz
notch.

Splits: seeded and subject-wise. ``official_split``: sorted files [:52] train, [52:62] val, [62:] test (26/5/5
subjects).
"""

from __future__ import annotations

import re
from pathlib import Path

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    find_files,
    fixed_window_starts,
    relative_key,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.signal import RecordingError, load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "CHANNELS", "list_recordings", "read_recording"]

CORPUS = CORPORA["workload"]  # notch, window and channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
CHANNELS = CORPUS.channels
WINDOW_S = CORPUS.window_s
LAST_S, HOP_S, N_WINDOWS = 60, 2, 29
OFFICIAL_TRAIN, OFFICIAL_VAL = 52, 10
_NAME = re.compile(r"(Subject\d+)_([12])\.edf")


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = Path(cfg.input).expanduser()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    files = find_files(root, _NAME.pattern)
    if not files:
        raise RecordingError(root, "no SubjectXX_1.edf / SubjectXX_2.edf files found (EEGMAT layout)")
    subject_of = {f: _NAME.fullmatch(f.name).group(1) for f in files}
    if cfg.official_split:
        split_of_file = {
            f: ("train" if i < OFFICIAL_TRAIN else "val" if i < OFFICIAL_TRAIN + OFFICIAL_VAL else "test")
            for i, f in enumerate(files)
        }
    else:
        by_subject = subject_split(subject_of.values(), cfg.split_fractions, cfg.split_seed)
        split_of_file = {f: by_subject[subject_of[f]] for f in files}
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            "workload",
            dataset,
            relative_key(f, root),
            (str(f),),
            subject_of[f],
            split_of_file[f],
            label=int(_NAME.fullmatch(f.name).group(2)) - 1,
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    rec = load_recording(
        task.sources[0],
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        required=CORPUS.channels,
        drop_flat=False,
        dtype=cfg.signal_dtype,
    )
    last = int(LAST_S * rec.sfreq)
    if rec.data.shape[1] < last:
        raise RecordingError(
            task.sources[0],
            f"recording is {rec.duration_s:.1f} s, shorter than the {LAST_S} s the Workload windows need",
            status="skipped",
        )
    offset = rec.data.shape[1] - last
    starts = fixed_window_starts(last, int(WINDOW_S * rec.sfreq), int(HOP_S * rec.sfreq))[:N_WINDOWS] + offset
    return samples_from_windows(rec, starts, int(WINDOW_S * rec.sfreq), task.label, task.split or "train")
