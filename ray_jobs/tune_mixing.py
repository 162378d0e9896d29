"""`ray job submit --working-dir . -- python ray_jobs/tune_mixing.py --config configs/tune/debug.yaml key=value...`

Ray Tune (Optuna + ASHA) search over the instruction-tuning task mixing weights; writes best_mixture.yaml, a plot
of the trials, trials.csv and summary.json to the config's output (see neurolm.tune.mixing).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job's working dir, when not pip-installed

from neurolm.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("tune", sys.argv[1:]))
