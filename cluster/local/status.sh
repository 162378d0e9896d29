#!/usr/bin/env bash
# Is the local cluster up? Prints the Ray head's resources, its jobs and the S3 server; exits 1 when down.
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

head_pid="$(state_get pid)"
alive "$head_pid" || die "the Ray head is not running (start it with cluster/local/up.sh)"
load_env_file
log "Ray head pid $head_pid, GCS $RAY_ADDRESS, dashboard $RAY_API_SERVER_ADDRESS, auth $RAY_AUTH_MODE"
ray_cli status --address "$RAY_ADDRESS"
ray_cli job list --address "$RAY_API_SERVER_ADDRESS"
"$PYTHON" -m neurolm.runtime.s3server status --dir "$S3_DIR"
