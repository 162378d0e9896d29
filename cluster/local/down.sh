#!/usr/bin/env bash
# Stop the local cluster started by up.sh: the Ray head (with its job drivers and workers) and the S3 server.
# Stops only the processes up.sh started, by their ids; other Ray instances on the machine are left alone
# (plain `ray stop` would kill every Ray process of this user). The S3 data in .cache/s3 is kept.
# Idempotent: safe to run when nothing is up.
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-30}"

# Every descendant of a process (children first collected, then theirs), one pid per line.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

# Wait until none of the given pids is alive, at most $1 seconds. Returns 1 on timeout.
wait_gone() {
    local timeout_s="$1" deadline pid
    shift
    deadline=$((SECONDS + timeout_s))
    while ((SECONDS < deadline)); do
        local any=0
        for pid in "$@"; do
            if alive "$pid"; then
                any=1
            fi
        done
        ((any == 0)) && return 0
        sleep 0.5
    done
    return 1
}

head_pid="$(state_get pid)"
if alive "$head_pid"; then
    # Ray workers and job drivers start their own process groups; collect them before the head goes.
    mapfile -t pids < <(echo "$head_pid"; descendants "$head_pid")
    log "stopping the Ray head (pid $head_pid, ${#pids[@]} processes)"
    # SIGTERM to `ray start --block` alone: it then stops the node's processes in order (about 3 s).
    # Signalling the whole group at once instead leaves GCS and raylet draining for ~30 s.
    kill -TERM "$head_pid" 2>/dev/null || true
    if ! wait_gone "$STOP_TIMEOUT_S" "${pids[@]}"; then
        log "processes left after ${STOP_TIMEOUT_S}s; sending SIGTERM, then SIGKILL, to each"
        for signal in TERM KILL; do
            for pid in "${pids[@]}"; do
                if alive "$pid"; then
                    kill "-$signal" "$pid" 2>/dev/null || true
                fi
            done
            wait_gone 10 "${pids[@]}" && break
        done
        wait_gone 1 "${pids[@]}" || log "warning: could not stop all of: ${pids[*]}"
    fi
elif [[ -n "$head_pid" ]]; then
    log "the Ray head (pid $head_pid) was already gone"
fi
# The head's address file: stale once the head is gone (in our private temp dir, see common.sh).
rm -f "$HEAD_STATE" "$RAY_TEMP_DIR/ray_current_cluster"

if "$PYTHON" -m neurolm.runtime.s3server status --dir "$S3_DIR" >/dev/null 2>&1; then
    log "stopping the S3 server ($S3_DIR)"
fi
"$PYTHON" -m neurolm.runtime.s3server stop --dir "$S3_DIR"
rm -f "$ENV_FILE"
log "local cluster down"
