"""TUH Abnormal EEG Corpus v3.0.0 (docs/reference.md §1.5, §1.7, ``prepare_TUAB.py``).

Layout: ``edf/{train,eval}/{abnormal,normal}/01_tcp_ar/<subject>_sNNN_tNNN.edf``. Label: abnormal = 1, normal = 0.
The 23 TUH channels in the official order, 50 Hz notch (as the official maker), 10-s non-overlapping windows.

Splits: ``eval`` is the test set. The ``train`` folder's subjects are split into train/val, seeded and
subject-wise over both label folders together. ``official_split`` splits each label folder's subjects 80/20
separately, as the official maker does (its ``np.random.shuffle`` is unseeded, so only the procedure can be
reproduced, here with ``split_seed``); a subject with normal and abnormal sessions can then land in both parts.
"""

from __future__ import annotations

import numpy as np

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    check_no_samples,
    corpus_root,
    find_files,
    fixed_window_starts,
    relative_key,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import train_val_split
from neurolm.data.readers.tuh import is_ar_montage_path, tuh_subject
from neurolm.data.signal import RecordingError, load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "WINDOW_S", "LABELS", "list_recordings", "read_recording"]

CORPUS = CORPORA["tuab"]  # notch, window and channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
WINDOW_S = CORPUS.window_s
LABELS = {"normal": 0, "abnormal": 1}


def _official_train_val(subjects: list[str], seed: int) -> dict[str, str]:
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(len(unique) * 0.8)
    return {unique[i]: ("train" if rank < n_train else "val") for rank, i in enumerate(order)}


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = corpus_root(cfg)
    dataset = cfg.dataset or cfg.corpus
    found: list[tuple[str, str, object]] = []
    for part in ("train", "eval"):
        for label_name in LABELS:
            folder = root / part / label_name
            if folder.is_dir():
                found += [
                    (part, label_name, f) for f in find_files(folder, r".+\.edf") if is_ar_montage_path(f)
                ]
    if not found:
        raise RecordingError(root, "no EDF files under {train,eval}/{abnormal,normal}/ (TUAB v3.0.0 layout)")
    train_files = [(lab, f) for part, lab, f in found if part == "train"]
    if cfg.official_split:
        split_of: dict[tuple[str, str], str] = {}
        for label_name in LABELS:
            subjects = [tuh_subject(f) for lab, f in train_files if lab == label_name]
            for subject, split in _official_train_val(subjects, cfg.split_seed).items():
                split_of[(label_name, subject)] = split
    else:
        by_subject = train_val_split(
            (tuh_subject(f) for _, f in train_files), cfg.split_fractions, cfg.split_seed
        )
        split_of = {(lab, tuh_subject(f)): by_subject[tuh_subject(f)] for lab, f in train_files}
    tasks = []
    for part, label_name, f in found:
        subject = tuh_subject(f)
        split = "test" if part == "eval" else split_of[(label_name, subject)]
        tasks.append(
            RecordingTask(
                "tuab", dataset, relative_key(f, root), (str(f),), subject, split, LABELS[label_name]
            )
        )
    return tasks


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    rec = load_recording(
        task.sources[0],
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        required=CORPUS.channels,
        drop_flat=False,
        dtype=cfg.signal_dtype,
    )
    window = int(WINDOW_S * rec.sfreq)
    samples = samples_from_windows(
        rec, fixed_window_starts(rec.data.shape[1], window), window, task.label, task.split or "train"
    )
    return check_no_samples(
        task.sources[0], samples, f"recording is {rec.duration_s:.1f} s, shorter than {WINDOW_S} s"
    )
