"""TUH EEG Corpus (TUEG) for pre-training (docs/reference.md §1.5, ``prepare_TUH_pretrain.py``).

Layout: ``edf/<000>/<subject>/<session>/<montage>/<subject>_sNNN_tNNN.edf``. Files whose first channel is
``-LE`` are skipped; every channel whose name is in the 10-20 vocabulary is kept; 60 Hz notch; the last 10 s are
dropped; then non-overlapping windows of ``1024 // C`` seconds (≤ 1024 tokens), the remainder dropped. No labels.
Splits: seeded, subject-wise (the official pre-training split is not published).
"""

from __future__ import annotations

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    check_no_samples,
    corpus_root,
    find_files,
    fixed_window_starts,
    pretrain_window_seconds,
    relative_key,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.readers.tuh import reject_linked_ears, tuh_subject
from neurolm.data.signal import load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "DROP_LAST_S", "list_recordings", "read_recording"]

DEFAULT_NOTCH_HZ = CORPORA["tueg"].notch_hz  # the registry's declaration
DROP_LAST_S = 10


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = corpus_root(cfg)
    files = find_files(root, r".+\.edf")
    split_of = subject_split((tuh_subject(f) for f in files), cfg.split_fractions, cfg.split_seed)
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            "tueg", dataset, relative_key(f, root), (str(f),), tuh_subject(f), split_of[tuh_subject(f)]
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    rec = load_recording(
        task.sources[0],
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        drop_flat=True,
        dtype=cfg.signal_dtype,
        inspect=reject_linked_ears,
    )
    seconds = pretrain_window_seconds(len(rec.channels))
    window = int(round(seconds * rec.sfreq))
    usable = rec.data.shape[1] - int(DROP_LAST_S * rec.sfreq)
    starts = fixed_window_starts(max(usable, 0), window)
    samples = samples_from_windows(rec, starts, window, -1, task.split or "train")
    return check_no_samples(
        task.sources[0],
        samples,
        f"recording is {rec.duration_s:.1f} s long: minus the last {DROP_LAST_S} s it is shorter than one "
        f"{seconds} s window",
    )
