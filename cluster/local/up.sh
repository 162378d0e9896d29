#!/usr/bin/env bash
# Start the local cluster of the quickstart: the S3 server (SeaweedFS on 127.0.0.1, data in .cache/s3) and
# a Ray head, then write the client environment to .cache/local-cluster.env.
# Idempotent: when the cluster is already up it only rewrites the env file.
#
# Closed by default: every Ray port (GCS, raylet, object manager, dashboard and its agent, metrics export,
# runtime-env agent, worker ports) is bound to 127.0.0.1 (the node's address is 127.0.0.1), token auth is
# on, and the Ray Client server (ray://, which runs any code it is sent) is not started at all.
#
#   cluster/local/up.sh [--ray-client]   # --ray-client: also start the Ray Client server (127.0.0.1 only)
#   source .cache/local-cluster.env      # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH, AWS_*
#   cluster/local/submit.sh              # the demo pipeline; see submit.sh for other jobs
#   cluster/local/down.sh
#
# Environment (all optional):
#   NUM_CPUS             logical CPUs of the head (default: all cores)
#   NUM_GPUS             GPUs of the head (default: what Ray detects)
#   OBJECT_STORE_MEMORY  bytes of shared memory for Ray's object store (default 1e9; Ray's own default is 30% of RAM)
#   RAY_PORT             GCS port (default 6390, or a free one when taken)
#   DASHBOARD_PORT       dashboard and job API port (default 8265, or a free one when taken)
#   RAY_AUTH_MODE        token (default) or disabled: Ray token auth. With token, clients need
#                        RAY_AUTH_MODE=token and the token (~/.ray/auth_token, created here when missing,
#                        or RAY_AUTH_TOKEN); the env file exports both settings
#   RAY_CLIENT_PORT      Ray Client server port with --ray-client (default 10001, or a free one)
#   PYTHON               the project's interpreter (default .venv/bin/python)
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NUM_CPUS="${NUM_CPUS:-$(nproc)}"
NUM_GPUS="${NUM_GPUS:-}"
OBJECT_STORE_MEMORY="${OBJECT_STORE_MEMORY:-1000000000}"
AUTH_MODE="${RAY_AUTH_MODE:-token}"
START_TIMEOUT_S="${START_TIMEOUT_S:-120}"
RAY_CLIENT=0
for arg in "$@"; do
    case "$arg" in
        --ray-client) RAY_CLIENT=1 ;;
        *) die "unknown argument $arg (use --ray-client)" ;;
    esac
done

[[ "$AUTH_MODE" == disabled || "$AUTH_MODE" == token ]] ||
    die "RAY_AUTH_MODE must be 'disabled' or 'token', got '$AUTH_MODE'"
"$PYTHON" -c 'import ray, neurolm' 2>/dev/null ||
    die "$PYTHON cannot import ray and neurolm: run \`make setup\` or set PYTHON=<the project's python>"
mkdir -p "$STATE_DIR"

write_env_file() {
    local tmp="$ENV_FILE.tmp"
    {
        echo "# Written by cluster/local/up.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Source it: \`source $ENV_FILE\`."
        echo "# RAY_ADDRESS is the GCS address (ray.init, ray status, drivers run here);"
        echo "# RAY_API_SERVER_ADDRESS the dashboard URL (ray job submit/logs/list)."
        echo "export RAY_ADDRESS=127.0.0.1:$(state_get ray_port)"
        echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$(state_get dashboard_port)"
        echo "export RAY_AUTH_MODE=$(state_get auth_mode)"
        if [[ "$(state_get auth_mode)" == token ]]; then
            # Where Ray's clients (ray job submit/logs/status, ray.init) read the token from.
            echo "export RAY_AUTH_TOKEN_PATH=$(state_get token_path)"
        fi
        if [[ -n "$(state_get client_port)" ]]; then
            echo "# Ray Client server (opt-in): ray.init(\"ray://127.0.0.1:$(state_get client_port)\")"
        fi
        printf '%s\n' "$s3_exports"
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}

head_pid="$(state_get pid)"
if alive "$head_pid"; then
    "$PYTHON" -m neurolm.runtime.s3server status --dir "$S3_DIR" >/dev/null ||
        die "the Ray head is up but the S3 server is not: run cluster/local/down.sh, then up.sh"
    s3_exports="$("$PYTHON" -m neurolm.runtime.s3server start --dir "$S3_DIR" --bucket "$S3_BUCKET")"
    log "already running (head pid $head_pid); refreshed $ENV_FILE"
    write_env_file
    exit 0
fi
if [[ -f "$HEAD_STATE" ]]; then
    log "removing the state of a head that is gone (pid ${head_pid:-?})"
    rm -f "$HEAD_STATE" "$RAY_TEMP_DIR/ray_current_cluster"
fi

# 1. S3 server: prints `export AWS_...=...` lines (endpoint, key, secret, region); reuses a running one.
s3_exports="$("$PYTHON" -m neurolm.runtime.s3server start --dir "$S3_DIR" --bucket "$S3_BUCKET")" ||
    die "the S3 server did not start (see $S3_DIR/weed.log)"
while IFS= read -r line; do
    if [[ "$line" == "export AWS_"*=* ]]; then
        export "${line#export }"
    fi
done <<<"$s3_exports"
log "S3 server up at $AWS_ENDPOINT_URL (bucket $S3_BUCKET, data in $S3_DIR)"

# 2. Ray head. The head's environment is inherited by every job driver and worker: the S3 settings, the
#    venv first on PATH (so `python` in a job's entrypoint is the project's), and the offline switches.
ray_port="$(free_port "${RAY_PORT:-6390}")"
dashboard_port="$(free_port "${DASHBOARD_PORT:-8265}")"
# Every port is chosen here (free on 127.0.0.1) rather than left to Ray: Ray's fixed defaults (52365,
# 10001, 8080...) collide with other Ray instances on the machine, and a pinned port is one we can check.
agent_port="$(free_port 52365)"
agent_grpc_port="$(free_port 0)"
node_manager_port="$(free_port 0)"
object_manager_port="$(free_port 0)"
metrics_port="$(free_port 0)"
runtime_env_port="$(free_port 0)"
client_port=""
if ((RAY_CLIENT)); then
    client_port="$(free_port "${RAY_CLIENT_PORT:-10001}")"
fi
token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ "$AUTH_MODE" == token && ! -s "$token_path" && -z "${RAY_AUTH_TOKEN:-}" ]]; then
    # 32 random bytes as 64 hex digits, Ray's own token format; readable by this user only.
    mkdir -p "$(dirname "$token_path")"
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$token_path")
    log "generated a Ray auth token in $token_path"
fi
export RAY_AUTH_TOKEN_PATH="$token_path"
if [[ "$PYTHON" == */* ]]; then
    PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH"
    export PATH
fi
if [[ -z "${DS_ACCELERATOR:-}" ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
    export DS_ACCELERATOR=cpu
fi
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" RAY_DISABLE_USAGE_STATS=1

start_args=(
    start --head --block
    --node-ip-address=127.0.0.1
    --port="$ray_port"
    --node-manager-port="$node_manager_port"
    --object-manager-port="$object_manager_port"
    --metrics-export-port="$metrics_port"
    --runtime-env-agent-port="$runtime_env_port"
    --dashboard-agent-grpc-port="$agent_grpc_port"
    --num-cpus="$NUM_CPUS"
    --object-store-memory="$OBJECT_STORE_MEMORY"
    --include-dashboard=true
    --dashboard-host=127.0.0.1
    --dashboard-port="$dashboard_port"
    --dashboard-agent-listen-port="$agent_port"
    --temp-dir="$RAY_TEMP_DIR"
    --disable-usage-stats
)
if [[ -n "$NUM_GPUS" ]]; then
    start_args+=(--num-gpus="$NUM_GPUS")
fi
if [[ -n "$client_port" ]]; then
    start_args+=(--ray-client-server-port="$client_port")
    ray_head=("$PYTHON" -m ray.scripts.scripts)
else
    # `ray start --head` always starts the Ray Client server (port 10001 when none is given) and has no
    # switch to leave it out; it skips it only when Ray Client's dependency (grpc) is missing. Saying so
    # for this one process turns it off without touching the installed Ray.
    ray_head=("$PYTHON" -c 'import sys
import ray.scripts.scripts as cli
cli.get_ray_client_dependency_error = lambda: ImportError("Ray Client server off (up.sh --ray-client)")
sys.argv[0] = "ray"
cli.main()')
fi
mkdir -p "$RAY_TEMP_DIR"
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: `ray start` replaces --node-ip-address=127.0.0.1 by the machine's
# network address (services.resolve_ip_for_localhost) unless Ray believes it runs a single-machine cluster;
# with it the node address stays 127.0.0.1, and GCS, raylet, agents and workers bind their gRPC servers there.
# `--block` keeps the head under one process we own: down.sh stops it (and everything Ray started) by
# its process group instead of `ray stop`, which would kill every Ray instance on the machine.
# setsid gives it that group of its own.
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE="$AUTH_MODE" setsid "${ray_head[@]}" "${start_args[@]}" \
    </dev/null >"$STATE_DIR/head.log" 2>&1 &
head_pid=$!
{
    echo "pid=$head_pid"
    echo "ray_port=$ray_port"
    echo "dashboard_port=$dashboard_port"
    echo "auth_mode=$AUTH_MODE"
    echo "token_path=$token_path"
    echo "client_port=$client_port"
    echo "temp_dir=$RAY_TEMP_DIR"
} >"$HEAD_STATE"
log "starting the Ray head (pid $head_pid, GCS 127.0.0.1:$ray_port, dashboard http://127.0.0.1:$dashboard_port)"

# 3. Wait until the job API answers: that is what `ray job submit` needs, not just a running GCS.
if ! RAY_AUTH_MODE="$AUTH_MODE" "$PYTHON" - "$dashboard_port" "$START_TIMEOUT_S" "$head_pid" <<'EOF'; then
import os, sys, time, urllib.request
from pathlib import Path

port, timeout_s, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
headers = {}
if os.environ.get("RAY_AUTH_MODE") == "token":
    token = os.environ.get("RAY_AUTH_TOKEN") or Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    headers["Authorization"] = f"Bearer {token}"
deadline = time.monotonic() + timeout_s
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the head process exited")
    try:
        for path in ("/api/version", "/api/jobs/"):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
            urllib.request.urlopen(req, timeout=2).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(f"the job API did not answer within {timeout_s:.0f} s")
EOF
    log "the Ray head did not come up; its output ($STATE_DIR/head.log):"
    tail -n 30 "$STATE_DIR/head.log" >&2 || true
    "$(dirname "${BASH_SOURCE[0]}")/down.sh" || true
    exit 1
fi

write_env_file
log "Ray head up: dashboard http://127.0.0.1:$dashboard_port (auth: $AUTH_MODE), $NUM_CPUS CPUs"
log "client environment: source $ENV_FILE"
