"""SEED (SEED-3) emotion recognition (docs/reference.md §1.4, §1.5, §1.7, ``prepare_SEED.py`` + ``SEEDDataset``).

Layout: one Neuroscan ``.cnt`` file per session, ``<subject>_<yyyymmdd>.cnt`` (15 subjects × 3 sessions). Every
session shows the same 15 film clips at fixed times (below, seconds from the start of the recording, as published
with SEED and hard-coded in the official maker), labelled positive (0), neutral (1) or negative (2). Channels: the
62 EEG channels in file order (M1, M2, VEO, HEO and ECG dropped). 50 Hz notch. Windows: 4 s, stride 4 s inside
each clip; a clip of ``end − start + 1`` seconds gives ``((end − start + 1)·200 − 800) // 800 + 1`` windows from
its start, exactly as ``SEEDDataset`` indexes them.

Splits: seeded and subject-wise (a subject's three sessions stay together). ``official_split``: within every
session by clip, clips 0–8 train, 9–11 val, 12–14 test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    check_no_samples,
    find_files,
    relative_key,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.signal import RecordingError, load_recording

__all__ = [
    "DEFAULT_NOTCH_HZ",
    "TRIAL_START_S",
    "TRIAL_END_S",
    "TRIAL_LABELS",
    "list_recordings",
    "read_recording",
]

CORPUS = CORPORA["seed"]  # notch, window and excluded channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
WINDOW_S = CORPUS.window_s
TRIAL_START_S = (24, 289, 550, 782, 1049, 1260, 1483, 1747, 1993, 2283, 2550, 2812, 3072, 3332, 3598)
TRIAL_END_S = (264, 526, 757, 1023, 1235, 1458, 1722, 1967, 2259, 2525, 2788, 3046, 3308, 3573, 3806)
_LABEL_OF = {"H": 0, "N": 1, "S": 2}  # happy → Positive, neutral, sad → Negative
TRIAL_LABELS = tuple(_LABEL_OF[c] for c in "HNSSNHSNHHNSNHS")
OFFICIAL_TRIAL_SPLITS = ("train",) * 9 + ("val",) * 3 + ("test",) * 3
EXCLUDED = CORPUS.exclude  # M1, M2; VEO, HEO and ECG map to no 10-20 name and are reported as unknown


def _subject(path: Path) -> str:
    return path.stem.split("_")[0]


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = Path(cfg.input).expanduser()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    files = find_files(root, r".+\.cnt")
    if not files:
        raise RecordingError(root, "no .cnt sessions found (SEED layout: <subject>_<date>.cnt)")
    split_of = (
        None
        if cfg.official_split
        else subject_split(map(_subject, files), cfg.split_fractions, cfg.split_seed)
    )
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            "seed",
            dataset,
            relative_key(f, root),
            (str(f),),
            _subject(f),
            None if split_of is None else split_of[_subject(f)],
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    rec = load_recording(
        task.sources[0],
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        exclude=EXCLUDED,
        drop_flat=False,
        dtype=cfg.signal_dtype,
    )
    sfreq, n = rec.sfreq, rec.data.shape[1]
    window = int(WINDOW_S * sfreq)
    starts, labels, splits = [], [], []
    beyond = 0
    for trial, (start_s, end_s) in enumerate(zip(TRIAL_START_S, TRIAL_END_S, strict=True)):
        trial_len = int((end_s - start_s + 1) * sfreq)
        for k in range((trial_len - window) // window + 1):
            s = int(start_s * sfreq) + k * window
            if s + window > n:
                beyond += 1
                continue
            starts.append(s)
            labels.append(TRIAL_LABELS[trial])
            splits.append(task.split or OFFICIAL_TRIAL_SPLITS[trial])
    warnings = []
    if beyond:
        warnings.append(
            f"{beyond} window(s) of the clip times lie beyond the {rec.duration_s:.1f} s session, dropped"
        )
    samples = samples_from_windows(
        rec, np.asarray(starts, dtype=np.int64), window, labels, splits, warnings=warnings
    )
    return check_no_samples(
        task.sources[0],
        samples,
        f"session is {rec.duration_s:.1f} s long: no clip window of the SEED timing fits",
    )
