"""The corpus registry: every corpus neurolm reads is declared once, here (docs/data.md, "Adding a corpus").

A :class:`Corpus` holds the plain facts about one corpus — its reader module, the sample length, the default
notch, the channel set its reader requires, its default instruction task, how to build its generated stand-in —
and everything else derives from :data:`CORPORA`:

- config validation: ``PreprocessConfig.corpus`` accepts the registered names, ``neurolm preprocess --corpus``
  offers them, and the leakage guard's default pre-training corpora are the ones marked ``pretraining``
  (:mod:`neurolm.config`, :mod:`neurolm.config_preprocess`);
- the reader table: :func:`neurolm.data.readers.get_reader` imports ``Corpus.reader``, and each reader takes its
  notch, window and channels from its declaration instead of its own constants;
- ``neurolm predict``'s preprocessing rules: a task naming its ``corpus`` gets that corpus's window, notch and
  channels (:meth:`neurolm.task_spec.TaskSpec.predict_rules`);
- the stand-ins: :mod:`neurolm.data.standins` builds ``Corpus.standin`` with :mod:`neurolm.data.synthetic`.

Where a task file and a corpus overlap (window, notch, channels, excluded channels), **the corpus is the source of
truth** and the task derives from it: the reader is what cuts the training shards, so the corpus declaration is
what the shards are; a task's ``predict`` section only overrides a field when the task differs from its corpus (a
``.ts`` problem's trial length and channel names, which the one ``ts`` corpus cannot know). Field by field, a
task's rule is its ``predict`` value if set, else its corpus's, else the generic ``edf`` corpus's (10-s windows,
50 Hz). The opposite choice (task files as truth, readers reading tasks) would make the reader of a corpus depend
on which task files exist, and a corpus without a task (TUEG) would have no home for its facts.

This module holds facts only (strings, numbers, names): it sits below :mod:`neurolm.task_spec` and
:mod:`neurolm.config`, which may not import :mod:`neurolm.data`; reader modules and stand-in builders are named
here and looked up by name in the data layer. Adding a corpus is one :class:`Corpus` below and a reader module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["CORPORA", "Corpus", "Standin", "TUH_CHANNELS", "GENERIC_CORPUS", "get_corpus", "pretraining_corpora"]

# docs/reference.md §1.7 (official `chOrder_standard` of prepare_TUAB/TUEV/TUSL.py, "EEG X-REF" normalised).
TUH_CHANNELS: tuple[str, ...] = (
    "FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
    "T3", "T4", "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2",
)  # fmt: skip


@dataclass(frozen=True)
class Standin:
    """How to build a corpus's small generated tree (docs/data.md, "Trees in each corpus's layout").

    Attributes
    ----------
    builder : str
        Name of a ``make_*_tree`` function of :mod:`neurolm.data.synthetic` (looked up there by name).
    kwargs : Mapping
        Its keyword arguments (JSON-serialisable: they name the cached tree).
    """

    builder: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Corpus:
    """One corpus: its reader and the rules by which the reader cuts samples (docs/reference.md §1.1, §1.5, §1.7).

    Attributes
    ----------
    name : str
        The ``corpus`` of a preprocessing config, and the default dataset name of its shards.
    reader : str
        Dotted path of the reader module (``list_recordings``, ``read_recording``; :mod:`neurolm.data.readers.base`).
    notch_hz : float
        Default notch in Hz: 50 or 60 by the country of recording (docs/reference.md §1.1); ``notch=`` overrides.
    window_s : int or None
        Sample length in whole seconds; None when it is not fixed by the corpus (set by the config, the trial
        length of a ``.ts`` problem, or the pre-training rule ``1024 // C``).
    channels : tuple of str or None
        Channels the reader requires, in storage order; None = every vocabulary channel a recording has.
    exclude : tuple of str
        Vocabulary channels the reader drops (SEED's mastoids M1, M2).
    task : str or None
        Name of the built-in instruction task on the corpus's shards (``neurolm/builtin_tasks/<task>.yaml``).
    standin : Standin or None
        How to generate a small tree in the corpus's layout (pipeline ``input: synthetic:<name>``).
    pretraining : bool
        A pre-training corpus: the leakage guard keeps downstream held-out subjects out of it.
    notes : str
        One line for people: what the corpus is and where its rules come from.
    """

    name: str
    reader: str
    notch_hz: float
    window_s: int | None = None
    channels: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    task: str | None = None
    standin: Standin | None = None
    pretraining: bool = False
    notes: str = ""


def _reader(name: str) -> str:
    return f"neurolm.data.readers.{name}"


CORPORA: Mapping[str, Corpus] = MappingProxyType({c.name: c for c in (
    Corpus("edf", _reader("edf"), 50.0, window_s=10,
           notes="Any folder of MNE-readable recordings; window_s= sets the window, notch=60 for US recordings."),
    Corpus("tueg", _reader("tueg"), 60.0, pretraining=True,
           notes="TUH EEG Corpus, pre-training: windows of 1024 // C seconds, last 10 s dropped."),
    # 32 files of 40 s -> 4 ten-second windows each: 16 train-folder subjects (train/val), 16 eval (test).
    Corpus("tuab", _reader("tuab"), 50.0, window_s=10, channels=TUH_CHANNELS, task="TUAB",
           standin=Standin("make_tuab_tree", {"subjects_per_folder": 8, "seconds": 40.0}),
           notes="TUH Abnormal EEG: normal vs abnormal, 10-s windows."),
    # 12 train + 4 eval subjects, 4 five-second events each.
    Corpus("tuev", _reader("tuev"), 50.0, window_s=5, channels=TUH_CHANNELS, task="TUEV",
           standin=Standin("make_tuev_tree", {"train_subjects": 12, "eval_subjects": 4}),
           notes="TUH EEG Events: six event types, 5-s samples around each event."),
    # 3 sessions of 200 s: the 4-s windows of the first film clip inside them.
    Corpus("seed", _reader("seed"), 50.0, window_s=4, exclude=("M1", "M2"), task="SEED",
           standin=Standin("make_seed_tree", {"seconds": 200.0}),
           notes="SEED emotion recognition: 4-s windows of 15 film clips per session."),
    # 6 recordings of 10 thirty-second scoring epochs.
    Corpus("hmc", _reader("hmc"), 50.0, window_s=30, channels=("F4", "C4", "O2", "C3"), task="HMC",
           standin=Standin("make_hmc_tree", {"n_subjects": 6, "epochs": 10}),
           notes="Haaglanden Medisch Centrum sleep staging: one sample per 30-s scoring epoch."),
    # 3 subjects x (rest, arithmetic), 29 four-second windows per file (the reader's fixed rule).
    Corpus("workload", _reader("workload"), 50.0, window_s=4,
           channels=("FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4",
                     "T5", "T6", "P3", "P4", "O1", "O2", "FZ", "CZ", "PZ"),
           task="Workload", standin=Standin("make_workload_tree", {"n_subjects": 3}),
           notes="Mental arithmetic workload: 29 four-second windows, 2-s hop, of the last 60 s of each file."),
    # 12 recordings of 4 ten-second segments.
    Corpus("tusl", _reader("tusl"), 60.0, window_s=10, channels=TUH_CHANNELS, task="TUSL",
           standin=Standin("make_tusl_tree", {"subjects": tuple(f"aaaaa{k:03d}" for k in range(12))}),
           notes="TUH Slowing: background / seizure / slowing, 10-s windows."),
    Corpus("ts", _reader("ts"), 50.0,
           notes="aeon/UEA .ts classification problems: one sample per trial (whole seconds); channel names from "
           "ts.channels, auxiliary/<Name>.json or the reader's defaults for the problems we ship tasks for."),
    Corpus("events", _reader("events"), 50.0,
           notes="Labelled trials of any layout (annotations, CSV, BIDS): window_s= or the shortest trial."),
)})  # fmt: skip
"""Every corpus, by name, in the order ``neurolm preprocess --corpus`` lists them."""

GENERIC_CORPUS = CORPORA["edf"]
"""The rules of a task without a corpus: the generic reader's (10-s windows, 50 Hz notch, every channel)."""


def get_corpus(name: str) -> Corpus:
    """The declaration of corpus ``name``; one-line error naming it and the known corpora."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[name]


def pretraining_corpora() -> tuple[str, ...]:
    """Names of the pre-training corpora (the leakage guard's default)."""
    return tuple(name for name, corpus in CORPORA.items() if corpus.pretraining)
