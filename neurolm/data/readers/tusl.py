"""TUH EEG Slowing Corpus (docs/reference.md §1.5, §1.7, ``prepare_TUSL.py``).

Layout: ``edf/<subject>/<session>/<montage>/<name>.edf`` with ``<name>.tse_agg`` beside it: after a
``version = tse_v1.0.0`` line, rows ``start_s stop_s label confidence`` with labels bckg, seiz, slow (0, 1, 2).
Each segment becomes non-overlapping 10-s windows (the official code assumes every segment is exactly 10 s and
takes it whole, which is the same thing then); shorter segments are dropped and counted in the warnings.
The 23 TUH channels, 60 Hz notch.

Splits: seeded and subject-wise. ``official_split``: files in sorted order, first 60 % train, next 20 % test, last
20 % val — the official proportions and roles (its order is ``os.walk``'s, which no one can reproduce;
docs/reference.md §6.3).
"""

from __future__ import annotations

from pathlib import Path

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
from neurolm.data.readers.splits import subject_split
from neurolm.data.readers.tuh import tuh_subject
from neurolm.data.signal import RecordingError, load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "WINDOW_S", "LABELS", "list_recordings", "read_recording", "read_tse_agg"]

CORPUS = CORPORA["tusl"]  # notch, window and channels: the registry's declaration
DEFAULT_NOTCH_HZ = CORPUS.notch_hz
WINDOW_S = CORPUS.window_s
LABELS = {"bckg": 0, "seiz": 1, "slow": 2}


def read_tse_agg(path: str | Path) -> list[tuple[float, float, str]]:
    """Segments ``(start_s, stop_s, label)`` of a ``.tse_agg`` file."""
    segments = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith(("version", "#")):
            continue
        fields = text.split()
        try:
            segments.append((float(fields[0]), float(fields[1]), fields[2]))
        except (IndexError, ValueError) as err:
            raise RecordingError(
                path, f"line {number} is not 'start stop label [confidence]': {text!r}"
            ) from err
    return segments


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    root = corpus_root(cfg)
    files = find_files(root, r".+\.edf")
    if not files:
        raise RecordingError(
            root, "no EDF files found (TUSL layout: edf/<subject>/<session>/<montage>/*.edf)"
        )
    if cfg.official_split:
        n = len(files)
        cut_train, cut_test = int(n * 0.6), int(n * 0.8)
        split_of_file = {
            f: ("train" if i < cut_train else "test" if i < cut_test else "val") for i, f in enumerate(files)
        }
    else:
        by_subject = subject_split((tuh_subject(f) for f in files), cfg.split_fractions, cfg.split_seed)
        split_of_file = {f: by_subject[tuh_subject(f)] for f in files}
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            "tusl",
            dataset,
            relative_key(f, root),
            (str(f), str(f.with_suffix(".tse_agg"))),
            tuh_subject(f),
            split_of_file[f],
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    edf, label_file = Path(task.sources[0]), Path(task.sources[1])
    require_label_file(edf, label_file)
    segments = read_tse_agg(label_file)
    rec = load_recording(
        edf,
        signal_params(cfg, DEFAULT_NOTCH_HZ),
        required=CORPUS.channels,
        drop_flat=False,
        dtype=cfg.signal_dtype,
    )
    n, window = rec.data.shape[1], int(WINDOW_S * rec.sfreq)
    starts, labels = [], []
    outside = short = unknown = 0
    for start_s, stop_s, label_name in segments:
        if label_name not in LABELS:
            unknown += 1
            continue
        first, stop = first_index_at_or_after(start_s, rec.sfreq), first_index_at_or_after(stop_s, rec.sfreq)
        if stop > n or first < 0:
            outside += 1
            continue
        if stop - first < window:
            short += 1
            continue
        for s in range(first, stop - window + 1, window):
            starts.append(s)
            labels.append(LABELS[label_name])
    warnings = []
    if outside:
        warnings.append(
            f"{label_file.name}: {outside} segment(s) beyond the {rec.duration_s:.1f} s recording dropped"
        )
    if short:
        warnings.append(f"{label_file.name}: {short} segment(s) shorter than {WINDOW_S} s dropped")
    if unknown:
        warnings.append(
            f"{label_file.name}: {unknown} segment(s) with a label not in {sorted(LABELS)} dropped"
        )
    samples = samples_from_windows(rec, starts, window, labels, task.split or "train", warnings=warnings)
    return check_no_samples(
        edf, samples, f"no usable segment in {label_file.name} ({'; '.join(warnings) or 'no rows'})"
    )
