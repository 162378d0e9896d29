"""TUH EEG Events Corpus v2.0.0 (docs/reference.md §1.5, §1.7, ``prepare_TUEV.py``).

Layout: ``edf/{train,eval}/<subject>/<name>.edf`` with a ``<name>.rec`` beside each file: CSV rows
``channel,start_s,stop_s,label`` with labels 1..6 (spsw, gped, pled, eyem, artf, bckg), stored as 0..5. One sample
per row, spanning [onset − 2 s, offset + 2 s] (5 s for TUEV's 1-s events); the signal is tiled three times so
windows at the edges wrap around, as the official code does. Windows are always 5 s: [onset − 2 s, onset + 3 s],
which equals the official window for every 1-s event; rows with another duration are kept and counted in the
manifest's warnings. The 23 TUH channels, 50 Hz notch (official).

Splits: ``eval`` is the test set; the ``train`` subjects are split train/val, seeded. ``official_split`` reproduces
the official procedure: 20 % of the sorted train subjects drawn with ``np.random.seed(4523)``.
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
    corpus_root,
    find_files,
    first_index_at_or_after,
    relative_key,
    require_label_file,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import train_val_split
from neurolm.data.readers.tuh import tuh_subject
from neurolm.data.signal import RecordingError, load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "OFFICIAL_SEED", "SAMPLE_S", "list_recordings", "read_recording", "read_rec"]

CORPUS = CORPORA["tuev"]  # notch, sample length and channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
OFFICIAL_SEED = 4523
SAMPLE_S = CORPUS.window_s
MARGIN_S = 2
N_CLASSES = 6


def read_rec(path: str | Path) -> np.ndarray:
    """Rows of a ``.rec`` file as float array (n, 4): channel, start_s, stop_s, label (1..6)."""
    if not Path(path).read_text().strip():
        return np.zeros((0, 4))
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (ValueError, OSError) as err:
        raise RecordingError(path, f"cannot parse the .rec label file ({err})") from err
    if rows.size and rows.shape[1] < 4:
        raise RecordingError(
            path, f".rec rows need 4 columns (channel,start,stop,label), got {rows.shape[1]}"
        )
    return rows.reshape(-1, 4) if rows.size else np.zeros((0, 4))


def _official_val_subjects(subjects: list[str]) -> set[str]:
    unique = sorted(set(subjects))
    legacy = np.random.RandomState(OFFICIAL_SEED)  # the official maker uses the legacy global RNG
    return set(legacy.choice(unique, size=int(len(unique) * 0.2), replace=False).tolist())


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = corpus_root(cfg)
    dataset = cfg.dataset or cfg.corpus
    train = find_files(root / "train", r".+\.edf") if (root / "train").is_dir() else []
    evaluation = find_files(root / "eval", r".+\.edf") if (root / "eval").is_dir() else []
    if not train and not evaluation:
        raise RecordingError(root, "no EDF files under train/ or eval/ (TUEV v2.0.0 layout)")
    if cfg.official_split:
        val = _official_val_subjects([tuh_subject(f) for f in train])
        split_of = {tuh_subject(f): ("val" if tuh_subject(f) in val else "train") for f in train}
    else:
        split_of = train_val_split((tuh_subject(f) for f in train), cfg.split_fractions, cfg.split_seed)
    eval_set = set(evaluation)
    tasks = []
    for f in train + evaluation:
        split = "test" if f in eval_set else split_of[tuh_subject(f)]
        tasks.append(
            RecordingTask(
                "tuev",
                dataset,
                relative_key(f, root),
                (str(f), str(f.with_suffix(".rec"))),
                tuh_subject(f),
                split,
            )
        )
    return tasks


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    edf, rec_file = Path(task.sources[0]), Path(task.sources[1])
    require_label_file(edf, rec_file)
    events = read_rec(rec_file)
    rec = load_recording(
        edf,
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        required=CORPUS.channels,
        drop_flat=False,
        dtype=cfg.signal_dtype,
    )
    n = rec.data.shape[1]
    window, margin = int(SAMPLE_S * rec.sfreq), int(MARGIN_S * rec.sfreq)
    starts, labels, warnings = [], [], []
    outside = odd_duration = bad_label = 0
    for _, onset, offset, label in events:
        first = first_index_at_or_after(onset, rec.sfreq)
        if onset < 0 or first >= n or offset * rec.sfreq > n:
            outside += 1
            continue
        if not 1 <= label <= N_CLASSES or label != int(label):
            bad_label += 1
            continue
        if abs((offset - onset) - 1.0) > 1e-6:
            odd_duration += 1
        starts.append(n + first - margin)  # index into the 3x tiled signal
        labels.append(int(label) - 1)
    if outside:
        warnings.append(
            f"{rec_file.name}: {outside} event(s) outside the {rec.duration_s:.1f} s recording dropped"
        )
    if bad_label:
        warnings.append(f"{rec_file.name}: {bad_label} event(s) with a label outside 1..{N_CLASSES} dropped")
    if odd_duration:
        warnings.append(f"{rec_file.name}: {odd_duration} event(s) not 1 s long; cut as 5 s from onset - 2 s")
    tiled = np.concatenate(
        [rec.data, rec.data, rec.data], axis=1
    )  # edge events wrap, as in the official code
    samples = samples_from_windows(
        rec, starts, window, labels, task.split or "train", data=tiled, start_offset=n, warnings=warnings
    )
    return check_no_samples(
        edf, samples, f"no usable event in {rec_file.name} ({'; '.join(warnings) or 'no rows'})"
    )
