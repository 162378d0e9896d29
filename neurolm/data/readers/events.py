"""Labelled recordings in any layout: ``neurolm preprocess --corpus events`` (docs/data-events.md).

Any folder of MNE-readable recordings (EDF, BDF, BrainVision, EEGLAB, FIF, GDF, CNT). Labelled *trials* come from

* ``annotations``: the recordings' own annotations/events (EDF+ TAL, BrainVision markers, FIF annotations, ...),
* ``csv``: a table ``file,start,stop,label`` (seconds from the start of the recording),
* ``bids``: a BIDS dataset's ``sub-*/[ses-*/]eeg/*_eeg.<ext>`` with the sibling ``*_events.tsv`` (``onset``,
  ``duration``, ``trial_type``).

A trial spans ``[onset + trial_start_offset_s, onset + duration + trial_stop_offset_s]`` and is cut into windows of
``window_s`` seconds every ``window_stride_s``, as braindecode's ``create_windows_from_events`` does. Without
``window_s`` the window is the shortest trial of the dataset rounded down to whole seconds (a sample is whole 1-s
patches, docs/reference.md §1.5). Label names become class indices through ``events.mapping`` or, without it, in
sorted order; the mapping, the window and every band-pass change are written into the manifest.

The driver reads every recording's header and labels (no samples) so that the label mapping, the window length,
the subject-wise split and the Nyquist rule are decided once for the whole dataset and travel with each task
(:class:`EventsTask`); the worker only loads, filters and cuts.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurolm.config import PreprocessConfig
from neurolm.config_preprocess import MNE_DEFAULT_EVENT_REGEX
from neurolm.corpora import CORPORA
from neurolm.data.readers.base import RecordingSamples, RecordingTask, relative_key
from neurolm.data.readers.edf import EXTENSIONS
from neurolm.data.readers.edf import (
    _subject as subject_of,  # one rule for subjects of any folder of recordings
)
from neurolm.data.readers.splits import subject_split
from neurolm.data.signal import RecordingError, SignalParams, load_recording, read_raw

__all__ = [
    "DEFAULT_NOTCH_HZ",
    "EventsTask",
    "Trial",
    "list_recordings",
    "read_recording",
    "manifest_extra",
    "label_mapping",
    "nyquist_rule",
    "read_labels_csv",
    "read_bids_events",
]

# No corpus to follow: 50 Hz like most of the official makers (docs/reference.md §1.1); notch=60 for US data.
DEFAULT_NOTCH_HZ = CORPORA["events"].notch_hz  # the registry's declaration
# Half a sample at 200 Hz: trial lengths within this of the window count as the window's length.
_TOLERANCE_S = 0.0025
_BIDS_EEG = re.compile(r"(sub-[A-Za-z0-9]+)(?:_[a-z]+-[A-Za-z0-9]+)*_eeg\.(edf|bdf|vhdr|set|fif|gdf|cnt)")


@dataclass(frozen=True)
class Trial:
    """One labelled stretch of a recording (seconds from its first sample, offsets applied)."""

    start_s: float
    stop_s: float
    name: str

    @property
    def seconds(self) -> float:
        return self.stop_s - self.start_s


@dataclass(frozen=True)
class EventsTask(RecordingTask):
    """A recording of the ``events`` corpus with everything decided on the driver (all of it enters the
    recording's fingerprint, so a change of labels, mapping or window redoes the recording).

    Attributes
    ----------
    trials : tuple of (start_s, stop_s, label index, name)
        The recording's labelled trials after offsets and mapping.
    window_s : int
        Window length in seconds.
    stride_s : float
        Hop between windows inside a trial.
    short_windows : str
        ``refuse``, ``pad`` or ``extend`` for trials shorter than the window.
    h_freq : float
        Band-pass upper edge for this recording (lowered below its Nyquist frequency when needed).
    notch : float or None
        Notch for this recording (None when off or at/above its Nyquist frequency).
    notes : tuple of str
        What the driver changed for this recording (kept in the manifest as warnings).
    """

    trials: tuple[tuple[float, float, int, str], ...] = ()
    window_s: int = 1
    stride_s: float = 1.0
    short_windows: str = "refuse"
    source_sfreq: float = 0.0
    h_freq: float = 75.0
    notch: float | None = None
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------
# Label sources (driver side)
# ----------------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def label_mapping(names: Sequence[str], explicit: Mapping[str, int] | None) -> dict[str, int]:
    """Label name → class index: ``explicit`` as given, else the sorted unique names (numbers numerically)."""
    if explicit is not None:
        return dict(explicit)
    return {name: i for i, name in enumerate(sorted(set(names), key=_natural_key))}


def _annotation_trials(raw: Any) -> list[tuple[float, float, str]]:
    """(onset, duration, description) relative to the first sample of ``raw``."""
    annotations = raw.annotations
    # Annotations synced to meas_date are offset by the time of the first sample (FIF files with first_samp > 0).
    shift = raw.first_time if annotations.orig_time is not None else 0.0
    return [
        (float(onset) - shift, float(duration), str(desc))
        for onset, duration, desc in zip(
            annotations.onset, annotations.duration, annotations.description, strict=True
        )
    ]


def read_labels_csv(path: str | Path) -> list[tuple[str, float, float, str, int]]:
    """Rows ``(file, start, stop, label, line)`` of a labels CSV; any malformed row raises :class:`RecordingError`
    naming the line."""
    path = Path(path).expanduser()
    rows = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("file", "start", "stop", "label") if c not in header]
        if missing:
            raise RecordingError(path, f"events.csv needs columns file,start,stop,label; missing {missing}")
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            try:
                start, stop = float(row["start"]), float(row["stop"])
            except ValueError:
                raise RecordingError(path, f"line {line}: start/stop must be seconds, got {row}") from None
            if not (math.isfinite(start) and math.isfinite(stop)) or stop <= start:
                raise RecordingError(path, f"line {line}: need start < stop, got start={start} stop={stop}")
            if not row["file"] or not row["label"]:
                raise RecordingError(path, f"line {line}: empty file or label")
            rows.append((row["file"], start, stop, row["label"], line))
    return rows


def read_bids_events(path: Path, column: str) -> list[tuple[float, float, str]]:
    """(onset, duration, label) rows of a BIDS ``*_events.tsv``; ``n/a`` labels are skipped, ``n/a`` durations
    are 0 (BIDS: onset and duration in seconds from the first sample)."""
    out = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        fields = reader.fieldnames or []
        for needed in ("onset", "duration", column):
            if needed not in fields:
                raise RecordingError(path, f"no column {needed!r} (columns: {', '.join(fields)})")
        for line, row in enumerate(reader, start=2):
            label = (row[column] or "").strip()
            if label in ("", "n/a"):
                continue
            try:
                onset = float(row["onset"])
                duration = 0.0 if row["duration"].strip() in ("", "n/a") else float(row["duration"])
            except ValueError:
                raise RecordingError(
                    path, f"line {line}: onset/duration must be seconds, got {row}"
                ) from None
            out.append((onset, duration, label))
    return out


def _bids_files(root: Path) -> list[tuple[Path, str]]:
    """(recording, subject) of every ``*_eeg.<ext>`` of a BIDS tree, sorted."""
    found = []
    for path in sorted(p for p in root.rglob("*_eeg.*") if p.is_file()):
        match = _BIDS_EEG.fullmatch(path.name)
        if match and "derivatives" not in path.relative_to(root).parts:
            found.append((path, match.group(1)))
    return found


def _bids_events_file(recording: Path) -> Path:
    return recording.with_name(re.sub(r"_eeg\.[a-z]+$", "_events.tsv", recording.name))


def _source(cfg: PreprocessConfig, root: Path) -> str:
    if cfg.events.source != "auto":
        return cfg.events.source
    if cfg.events.csv is not None:
        return "csv"
    if root.is_dir() and (root / "dataset_description.json").is_file():
        return "bids"
    return "annotations"


# ----------------------------------------------------------------------------------------------------------
# Nyquist rule
# ----------------------------------------------------------------------------------------------------------


def nyquist_rule(
    params: SignalParams,
    source_sfreq: float,
    fraction: float = 0.9,
    lower: bool = True,
    source: str | Path = "<recording>",
) -> tuple[float, float | None, list[str]]:
    """The band-pass upper edge and notch a recording at ``source_sfreq`` can carry.

    With ``lower`` an upper edge at or above the source Nyquist frequency becomes ``fraction`` × Nyquist (instead
    of failing the recording), and a notch at or above Nyquist is dropped (there is no mains line left to remove).
    Returns ``(h_freq, notch, notes)``; without ``lower`` nothing changes and the loader refuses the recording.
    """
    nyquist = source_sfreq / 2
    h_freq, notch, notes = params.h_freq, params.notch, []
    if not lower:
        return h_freq, notch, notes
    if h_freq >= nyquist:
        h_freq = round(fraction * nyquist, 3)
        if h_freq <= params.l_freq:
            raise RecordingError(
                source,
                f"a {source_sfreq:g} Hz recording cannot carry the band-pass from l_freq = {params.l_freq:g} Hz",
            )
        notes.append(
            f"nyquist: h_freq lowered from {params.h_freq:g} to {h_freq:g} Hz "
            f"({fraction:g} x the {nyquist:g} Hz Nyquist frequency of a {source_sfreq:g} Hz recording)"
        )
    if notch is not None and notch >= nyquist:
        notes.append(
            f"nyquist: notch at {notch:g} Hz dropped (at or above the {nyquist:g} Hz Nyquist frequency)"
        )
        notch = None
    return h_freq, notch, notes


# ----------------------------------------------------------------------------------------------------------
# Driver: list_recordings
# ----------------------------------------------------------------------------------------------------------


def _rate(path: Path) -> float:
    return float(read_raw(path).info["sfreq"])


def _files(root: Path) -> tuple[list[Path], Path]:
    if root.is_file():
        return [root], root.parent
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS), root


def _raw_events(
    cfg: PreprocessConfig, root: Path, source: str
) -> tuple[list[tuple[Path, str, list[tuple[float, float, str]], float]], Path]:
    """(file, subject, [(onset, duration, name)], sampling rate) per recording, from the chosen label source."""
    if source == "bids":
        if not root.is_dir():
            raise RecordingError(root, "events.source = bids needs a BIDS dataset directory as input")
        out = []
        for path, subject in _bids_files(root):
            events_file = _bids_events_file(path)
            rows = read_bids_events(events_file, cfg.events.bids_column) if events_file.is_file() else []
            out.append((path, subject.removeprefix("sub-"), rows, _rate(path)))
        return out, root
    files, base = _files(root)
    if source == "annotations":
        out = []
        for f in files:
            raw = read_raw(f)
            out.append(
                (f, subject_of(f, base, cfg.subject_regex), _annotation_trials(raw), float(raw.info["sfreq"]))
            )
        return out, base
    # csv
    assert cfg.events.csv is not None
    by_file: dict[Path, list[tuple[float, float, str]]] = {f: [] for f in files}
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    for name, start, stop, label, line in read_labels_csv(cfg.events.csv):
        candidate = Path(name).expanduser()
        target = candidate if candidate.is_absolute() else (base / candidate)
        target = target.resolve()
        if target not in by_file:
            matches = by_name.get(Path(name).name, [])
            if len(matches) != 1:
                why = "matches several recordings" if matches else "is not a recording under input"
                raise RecordingError(cfg.events.csv, f"line {line}: file {name!r} {why}")
            target = matches[0]
        by_file[target].append((start, stop - start, label))
    return [(f, subject_of(f, base, cfg.subject_regex), rows, _rate(f)) for f, rows in by_file.items()], base


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    """Every recording with its labelled trials, subject, split, window and band edges (reads headers and labels,
    not samples). Raises :class:`RecordingError` when no trial is labelled or a trial is shorter than the window
    and ``events.short_windows = refuse``."""
    opts = cfg.events
    root = Path(cfg.input).expanduser().resolve()
    if not root.exists():
        raise RecordingError(root, "input path does not exist")
    source = _source(cfg, root)
    found, base = _raw_events(cfg, root, source)
    if not found:
        raise RecordingError(root, f"no recording found (suffixes {', '.join(EXTENSIONS)}; source {source})")
    keep = re.compile(opts.regex if opts.regex is not None else MNE_DEFAULT_EVENT_REGEX)
    trials_of: dict[Path, list[Trial]] = {}
    for path, _, rows, _ in found:
        trials_of[path] = [
            Trial(onset + opts.trial_start_offset_s, onset + duration + opts.trial_stop_offset_s, name)
            for onset, duration, name in rows
            if keep.fullmatch(name) and (opts.mapping is None or name in opts.mapping)
        ]
    all_trials = [(path, t) for path, ts in trials_of.items() for t in ts]
    if not all_trials:
        raise RecordingError(
            root, f"no labelled trial found (source {source}; regex {keep.pattern!r}; mapping {opts.mapping})"
        )
    bad = [(p, t) for p, t in all_trials if t.stop_s <= t.start_s]
    if bad:
        p, t = bad[0]
        raise RecordingError(
            p,
            f"trial {t.name!r} at {t.start_s:.3f} s has no length after the offsets; raise trial_stop_offset_s",
        )
    mapping = label_mapping([t.name for _, t in all_trials], opts.mapping)
    shortest = min(t.seconds for _, t in all_trials)
    window_s = int(cfg.window_s) if cfg.window_s else max(1, int(math.floor(shortest + _TOLERANCE_S)))
    short = [(p, t) for p, t in all_trials if t.seconds < window_s - _TOLERANCE_S]
    if short and opts.short_windows == "refuse":
        p, t = min(short, key=lambda pt: pt[1].seconds)
        raise RecordingError(
            p,
            f"{len(short)} of {len(all_trials)} trials are shorter than the {window_s}-s window (shortest "
            f"{t.seconds:.3f} s: {t.name!r} at {t.start_s:.3f} s); a sample is whole 1-s patches: set "
            "events.short_windows=extend (real EEG centred on the trial) or pad (zeros), or lengthen trials "
            "with events.trial_start_offset_s / trial_stop_offset_s (docs/data-events.md)",
        )
    stride_s = float(opts.window_stride_s or window_s)
    subjects = {path: subject for path, subject, _, _ in found}
    split_of = subject_split(subjects.values(), cfg.split_fractions, cfg.split_seed)
    notch = DEFAULT_NOTCH_HZ if cfg.notch is None else (cfg.notch or None)
    params = SignalParams(l_freq=cfg.l_freq, h_freq=cfg.h_freq, notch=notch, sfreq=cfg.sfreq)
    dataset = cfg.dataset or cfg.corpus
    tasks: list[RecordingTask] = []
    for path, subject, _, source_sfreq in found:
        h_freq, rec_notch, notes = nyquist_rule(
            params, source_sfreq, opts.nyquist_fraction, lower=opts.nyquist == "lower", source=path
        )
        trials = tuple(
            (round(t.start_s, 6), round(t.stop_s, 6), mapping[t.name], t.name) for t in trials_of[path]
        )
        tasks.append(
            EventsTask(
                corpus="events",
                dataset=dataset,
                recording=relative_key(path, base),
                sources=(str(path),) + ((str(_bids_events_file(path)),) if source == "bids" else ()),
                subject=subject,
                split=split_of[subject],
                trials=trials,
                window_s=window_s,
                stride_s=stride_s,
                short_windows=opts.short_windows,
                source_sfreq=source_sfreq,
                h_freq=h_freq,
                notch=rec_notch,
                notes=tuple(notes),
            )
        )
    return tasks


def manifest_extra(cfg: PreprocessConfig, tasks: Sequence[RecordingTask]) -> dict[str, Any]:
    """What the manifest records beyond the config: label source and mapping, window, and every recording whose
    band edges the Nyquist rule changed."""
    events = [t for t in tasks if isinstance(t, EventsTask)]
    if not events:
        return {}
    names = dict(cfg.events.mapping or {name: label for t in events for _, _, label, name in t.trials})
    root = Path(cfg.input).expanduser().resolve()
    return {
        "events": {
            "source": _source(cfg, root),
            "label_mapping": dict(sorted(names.items(), key=lambda kv: (kv[1], kv[0]))),
            "window_s": events[0].window_s,
            "stride_s": events[0].stride_s,
            "short_windows": events[0].short_windows,
            "trials": sum(len(t.trials) for t in events),
            "band_changes": [
                {
                    "recording": t.recording,
                    "source_sfreq": t.source_sfreq,
                    "h_freq": t.h_freq,
                    "notch": t.notch,
                    "notes": list(t.notes),
                }
                for t in events
                if t.notes
            ],
        }
    }


# ----------------------------------------------------------------------------------------------------------
# Worker: read_recording
# ----------------------------------------------------------------------------------------------------------


def _window_starts(
    start: int, stop: int, window: int, hop: int, policy: str, n: int
) -> list[tuple[int, int]]:
    """(first sample, samples of real data) of every window of a trial ``[start, stop)``."""
    length = stop - start
    if length >= window:
        return [(s, window) for s in range(start, stop - window + 1, hop)]
    if policy == "pad":
        return [(start, length)]
    # extend: the window centred on the trial, shifted inside the recording when the trial is near an edge.
    s = start - (window - length) // 2
    return [(min(max(s, 0), max(n - window, 0)), window)]


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    """Load and process the recording, then cut every trial into windows (trials or windows outside the
    recording are dropped with a warning)."""
    if not isinstance(task, EventsTask):
        raise TypeError("the events reader needs tasks planned by events.list_recordings")
    if not task.trials:
        raise RecordingError(task.sources[0], "no labelled trial in this recording", status="skipped")
    params = SignalParams(l_freq=cfg.l_freq, h_freq=task.h_freq, notch=task.notch, sfreq=cfg.sfreq)
    rec = load_recording(task.sources[0], params, drop_flat=True, dtype=cfg.signal_dtype)
    sfreq, n = rec.sfreq, rec.data.shape[1]
    window = int(round(task.window_s * sfreq))
    hop = max(1, int(round(task.stride_s * sfreq)))
    warnings = list(task.notes)
    rows: list[tuple[int, int, int]] = []  # (first sample, real samples, label)
    outside = 0
    for start_s, stop_s, label, _ in task.trials:
        start, stop = int(round(start_s * sfreq)), int(round(stop_s * sfreq))
        for first, real in _window_starts(start, stop, window, hop, task.short_windows, n):
            if first < 0 or first + real > n or (real == window and first + window > n):
                outside += 1
                continue
            rows.append((first, real, label))
    if outside:
        warnings.append(f"{outside} window(s) reach outside the {n / sfreq:.2f}-s recording and were dropped")
    signals = np.zeros((len(rows), rec.data.shape[0], window), dtype=rec.data.dtype)
    for i, (first, real, _) in enumerate(rows):
        signals[i, :, :real] = rec.data[:, first : first + real]
    if not rows:
        raise RecordingError(
            task.sources[0], "; ".join(warnings) or "no window fits in the recording", status="skipped"
        )
    return RecordingSamples(
        signals=signals,
        start_s=np.asarray([r[0] for r in rows], dtype=np.float64) / sfreq,
        labels=np.asarray([r[2] for r in rows], dtype=np.int64),
        splits=[task.split or "train"] * len(rows),
        channel_indices=rec.channels.indices,
        channel_names=rec.channels.names,
        source_sfreq=rec.source_sfreq,
        source_seconds=rec.duration_s,
        unknown_channels=rec.channels.unknown + rec.channels.duplicates,
        flat_channels=rec.flat_channels,
        warnings=list(rec.notes) + warnings,
    )
