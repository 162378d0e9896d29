"""`ray job submit --working-dir . -- python ray_jobs/preprocess.py --corpus tuab --input /data/tuab --output s3://b/p`

Runs `neurolm preprocess` inside a Ray job: the driver connects to the job's cluster (RAY_ADDRESS is set by
`ray job submit`) and runs one task per recording there.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the job's working dir, when not pip-installed

from neurolm.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("preprocess", sys.argv[1:]))
