"""Generic reader: any folder of MNE-readable recordings (EDF, BDF, BrainVision, EEGLAB, FIF, GDF, CNT).

Every file becomes fixed windows: ``window_s`` seconds (10 s by default), or with ``pretrain_windows`` the
pre-training rule of docs/reference.md §1.5, ``1024 // C`` seconds (at most 64). Channels are every channel whose name maps
to the 10-20 vocabulary, in file order; flat channels are dropped and reported. Labels are −1. Subjects come
from ``subject_regex`` or the parent folder (PhysioNet's ``S001/S001R02.edf`` → ``S001``); splits are seeded
and subject-wise.
"""

from __future__ import annotations

import re
from pathlib import Path

from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import (
    RecordingSamples,
    RecordingTask,
    check_no_samples,
    fixed_window_starts,
    pretrain_window_seconds,
    relative_key,
    samples_from_windows,
    signal_params,
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.signal import RecordingError, load_recording

__all__ = ["DEFAULT_NOTCH_HZ", "DEFAULT_WINDOW_S", "EXTENSIONS", "list_recordings", "read_recording"]

# No corpus to follow: 50 Hz like most of the official makers (docs/reference.md §1.1); set notch=60 for US recordings.
# Both declared in the registry, where they are also the rules of a task without a corpus.
DEFAULT_NOTCH_HZ = CORPORA["edf"].notch_hz
DEFAULT_WINDOW_S = float(CORPORA["edf"].window_s)  # type: ignore[arg-type]  # declared: 10 s
EXTENSIONS = (".edf", ".bdf", ".vhdr", ".set", ".fif", ".gdf", ".cnt")


def _subject(path: Path, root: Path, subject_regex: str | None) -> str:
    rel = path.relative_to(root) if path != root else Path(path.name)
    if subject_regex:
        match = re.search(subject_regex, rel.as_posix())
        if match is None:
            raise RecordingError(path, f"subject_regex {subject_regex!r} does not match {rel.as_posix()!r}")
        return match.group(1) if match.groups() else match.group(0)
    return rel.parent.as_posix() if rel.parent != Path(".") else path.stem


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    """Every file with a known EEG suffix below ``cfg.input`` (or ``cfg.input`` itself), sorted."""
    root = Path(cfg.input).expanduser().resolve()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        base = root
    subjects = {f: _subject(f, base, cfg.subject_regex) for f in files}
    split_of = subject_split(subjects.values(), cfg.split_fractions, cfg.split_seed)
    dataset = cfg.dataset or cfg.corpus
    return [
        RecordingTask(
            corpus="edf",
            dataset=dataset,
            recording=relative_key(f, base),
            sources=(str(f),),
            subject=subjects[f],
            split=split_of[subjects[f]],
        )
        for f in files
    ]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    """Fixed, non-overlapping windows over the whole recording; the remainder is dropped."""
    rec = load_recording(
        task.sources[0], signal_params(cfg, DEFAULT_NOTCH_HZ), drop_flat=True, dtype=cfg.signal_dtype
    )
    if cfg.pretrain_windows:
        seconds = pretrain_window_seconds(len(rec.channels))
    else:
        seconds = int(cfg.window_s or DEFAULT_WINDOW_S)
    window = int(round(seconds * rec.sfreq))
    starts = fixed_window_starts(rec.data.shape[1], window)
    samples = samples_from_windows(rec, starts, window, task.label, task.split or "train")
    return check_no_samples(
        task.sources[0],
        samples,
        f"recording is {rec.duration_s:.1f} s long, shorter than one {seconds} s window",
    )
