#!/usr/bin/env bash
# Show the logs of the local cluster started by up.sh.
#
#   cluster/local/logs.sh                 # logs of the last job submitted with submit.sh
#   cluster/local/logs.sh -f [JOB_ID]     # follow a job's logs until it ends
#   cluster/local/logs.sh --head [-f]     # the head's own logs (GCS, raylet, dashboard, job manager)
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

follow=()
head_logs=0
job_id=""
for arg in "$@"; do
    case "$arg" in
        -f | --follow) follow=(--follow) ;;
        --head) head_logs=1 ;;
        -*) die "unknown option $arg (use -f, --head)" ;;
        *) job_id="$arg" ;;
    esac
done

if ((head_logs)); then
    logs_dir="$RAY_TEMP_DIR/session_latest/logs"
    [[ -d "$logs_dir" ]] || die "no head logs in $logs_dir (is the cluster up?)"
    files=("$STATE_DIR/head.log")
    for name in gcs_server.out raylet.out dashboard.log dashboard_JobHead.log; do
        if [[ -f "$logs_dir/$name" ]]; then
            files+=("$logs_dir/$name")
        fi
    done
    if ((${#follow[@]})); then
        exec tail -n 20 -F "${files[@]}"
    fi
    exec tail -n 50 "${files[@]}"
fi

load_env_file
if [[ -z "$job_id" ]]; then
    [[ -f "$STATE_DIR/last_job" ]] || die "no job submitted yet; pass a job id (see \`ray job list\`)"
    job_id="$(<"$STATE_DIR/last_job")"
fi
exec "$PYTHON" -m ray.scripts.scripts job logs --address "$RAY_API_SERVER_ADDRESS" "${follow[@]}" "$job_id"
