"""The ``neurolm`` console script: one sub-command per job, each implemented next to the code it drives.

Sub-commands are imported lazily so ``neurolm --help`` stays fast and a missing optional piece only affects
its own command.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("neurolm.preprocess:cli", "raw EEG recordings -> Parquet sample shards (local or s3://)"),
    "text": ("neurolm.data.text:cli", "text corpus -> GPT-2 token shards for the language-modelling loss"),
    "train": ("neurolm.train.launch:cli", "run one training stage: tokenizer | pretrain | instruct"),
    "pipeline": ("neurolm.pipeline:cli", "preprocess -> tokenizer -> pretrain -> instruct -> evaluate"),
    "tune": ("neurolm.tune.mixing:cli", "Ray Tune search over instruction-tuning task mixing weights"),
    "eval": ("neurolm.eval.evaluate:cli", "evaluate an instruction-tuned checkpoint on test shards"),
    "predict": ("neurolm.eval.predict:cli", "answer a task on your own recording(s)"),
    "tasks": ("neurolm.data.tasks_cli:cli", "list | show TASK | check FILE: instruction tasks (YAML files)"),
    "import-official": (
        "neurolm.models.io:import_official_cli",
        "convert official VQ.pt / NeuroLM-*.pt checkpoints to our safetensors format",
    ),
    "s3": ("neurolm.runs:s3_cli", "start | stop | status a local S3 server on 127.0.0.1; get URI DEST fetches files"),
    "runs": ("neurolm.runs:runs_cli", "list | show runs: stage, step, last metrics, checkpoints, exports"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: neurolm <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `neurolm <command> --help` for a command's options."]
    return "\n".join(lines)


# Input errors (exit 1) defined in modules that may not be imported yet: an exception of one of these classes
# can only exist once its module is, so they are looked up in sys.modules when an error is being mapped.
_INPUT_ERRORS = (
    ("neurolm.data.signal", "RecordingError"),
    ("neurolm.train.checkpoint", "CheckpointError"),
    ("neurolm.runtime.s3server", "S3ServerError"),
)


def _one_line(err: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):  # raised outside load_config, e.g. a model preset inside a stage
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'} = {e.get('input')!r}: {e['msg']}"
            for e in err.errors()
        )
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")


def exit_code(err: BaseException) -> int | None:
    """The exit code of an error a command may end with: 2 for a bad config (``ConfigError``, pydantic
    ``ValidationError``), 1 for unusable input (storage, recordings, checkpoints, files), None for a bug."""
    from pydantic import ValidationError

    from neurolm.config import ConfigError

    if isinstance(err, ConfigError | ValidationError):
        return 2
    input_errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    for module, name in _INPUT_ERRORS:
        if module in sys.modules:
            input_errors += (getattr(sys.modules[module], name),)
    return 1 if isinstance(err, input_errors) else None


def run_command(name: str, argv: list[str], func: Any = None) -> int:
    """Run sub-command ``name`` (or ``func``) on ``argv``: the one place where errors become exit codes.

    A bad config prints one line naming the key and value and exits 2, unusable input prints one line and exits
    1, both without a traceback, wherever they are raised (also inside a training stage before Ray starts).
    ``ray_jobs/*.py`` call this too."""
    if func is None:
        module_name, func_name = COMMANDS[name][0].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(argv) or 0)
    except SystemExit as err:  # argparse: --help (0) or a usage error (2), already printed
        return err.code if isinstance(err.code, int) else (0 if err.code is None else 2)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        print(f"neurolm {name}: {_one_line(err)}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"neurolm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(name, rest)


if __name__ == "__main__":
    sys.exit(main())
