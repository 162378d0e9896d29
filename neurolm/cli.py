"""The ``neurolm`` console script: one sub-command per job, each implemented next to the code it drives.

Sub-commands are imported lazily so ``neurolm --help`` stays fast and a missing optional piece only affects
its own command.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("neurolm.preprocess:cli", "raw EEG recordings -> Parquet sample shards (local or s3://)"),
    "text": ("neurolm.data.text:cli", "text corpus -> GPT-2 token shards for the language-modelling loss"),
    "train": ("neurolm.train.launch:cli", "run one training stage: tokenizer | pretrain | instruct"),
    "pipeline": ("neurolm.pipeline:cli", "preprocess -> tokenizer -> pretrain -> instruct -> evaluate"),
    "tune": ("neurolm.tune.mixing:cli", "Ray Tune search over instruction-tuning task mixing weights"),
    "eval": ("neurolm.eval.evaluate:cli", "evaluate an instruction-tuned checkpoint on test shards"),
    "predict": ("neurolm.eval.predict:cli", "answer a task on your own recording(s)"),
    "import-official": (
        "neurolm.models.official:import_official_cli",
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"neurolm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
