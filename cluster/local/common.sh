# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Settings shared by cluster/local/*.sh. Sourced by them, never run on its own.
# Every value can be overridden from the environment, e.g. `NUM_CPUS=4 cluster/local/up.sh`.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT" || exit 1

# The project's interpreter (a relative path is relative to the repo root). Ray and the S3 server run
# through it, so the `ray` CLI, the `weed` binary and the job drivers all come from the same venv.
PYTHON="${PYTHON:-.venv/bin/python}"
# What the scripts remember between calls (head process, ports, last job id).
STATE_DIR="${NEUROLM_LOCAL_STATE:-$REPO_ROOT/.cache/local-cluster}"
# Sourced by clients: RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE and the AWS_* variables.
ENV_FILE="${NEUROLM_CLUSTER_ENV:-$REPO_ROOT/.cache/local-cluster.env}"
# Data directory of the local S3 server (SeaweedFS); kept between runs, like a real bucket.
S3_DIR="${NEUROLM_S3_DIR:-$REPO_ROOT/.cache/s3}"
S3_BUCKET="${NEUROLM_S3_BUCKET:-neurolm}"
# Ray's temp dir for this checkout. A private one (not /tmp/ray) means a head that died without down.sh
# leaves its `ray_current_cluster` file here, where no plain `ray.init()` on the machine will find it.
# Kept short: Ray's unix socket paths under it must stay below ~107 characters.
RAY_TEMP_DIR="${NEUROLM_RAY_TEMP_DIR:-/tmp/neurolm-ray-$(id -u)-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)}"
HEAD_STATE="$STATE_DIR/head.state"

log() { printf '[cluster/local] %s\n' "$*" >&2; }

die() {
    log "error: $*"
    exit 1
}

ray_cli() { "$PYTHON" -m ray.scripts.scripts "$@"; }

# Is the process with this id alive? (A zombie, exited but not yet reaped, is not.)
alive() {
    local stat
    [[ -n "${1:-}" ]] && stat="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$stat" && "$stat" != Z* ]]
}

# A free TCP port on 127.0.0.1: the preferred one when it is free, otherwise one the kernel picks.
# SO_REUSEADDR as Ray's servers use it, so a port in TIME_WAIT after down.sh still counts as free.
free_port() {
    "$PYTHON" -c '
import socket, sys
for port in (int(sys.argv[1]), 0):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
' "$1"
}

# KEY's value in the state file written by up.sh (empty when absent).
state_get() {
    [[ -f "$HEAD_STATE" ]] || return 0
    sed -n "s/^$1=//p" "$HEAD_STATE" | tail -n 1
}

# Load the client environment written by up.sh, or fail with what to do.
load_env_file() {
    [[ -f "$ENV_FILE" ]] || die "no local cluster: $ENV_FILE is missing (run cluster/local/up.sh first)"
    # shellcheck source=/dev/null
    source "$ENV_FILE"
}
