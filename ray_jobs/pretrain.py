"""`ray job submit --working-dir . -- python ray_jobs/pretrain.py --config configs/pretrain/debug.yaml key=value...`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job's working dir, when not pip-installed

from neurolm.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("train", ["pretrain", *sys.argv[1:]]))
