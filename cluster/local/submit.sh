#!/usr/bin/env bash
# Submit a job to the local cluster started by up.sh, with this checkout as its working directory.
#
#   cluster/local/submit.sh                                   # the demo pipeline (configs/pipeline/demo.yaml)
#   cluster/local/submit.sh ray_jobs/pretrain.py --config configs/pretrain/debug.yaml train.max_steps=5
#   cluster/local/submit.sh --no-wait ray_jobs/pipeline.py --config configs/pipeline/demo.yaml
#
# Arguments before the script are for `ray job submit` (--no-wait, --submission-id ID, ...); the script
# and its arguments become the entrypoint `python <script> <args>`, run on the head by the venv's python.
# Waits for the job and exits non-zero when it fails (unless --no-wait). The job id is kept for logs.sh.
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_env_file

submit_opts=()
while (($# > 0)) && [[ "$1" == -* ]]; do
    case "$1" in
        --) shift; break ;;
        --submission-id | --entrypoint-num-cpus | --entrypoint-num-gpus | --entrypoint-memory | --runtime-env-json)
            (($# >= 2)) || die "$1 needs a value"
            submit_opts+=("$1" "$2"); shift 2 ;;
        *) submit_opts+=("$1"); shift ;;
    esac
done
if (($# == 0)); then
    set -- ray_jobs/pipeline.py --config configs/pipeline/demo.yaml
fi
[[ -f "$1" ]] || die "no such job script: $1 (paths are relative to the repo root $REPO_ROOT)"

submission_id="neurolm-$(date +%Y%m%d-%H%M%S)-$$"
for ((i = 0; i < ${#submit_opts[@]}; i++)); do
    if [[ "${submit_opts[i]}" == --submission-id ]]; then
        submission_id="${submit_opts[i + 1]}"
    fi
done
if [[ " ${submit_opts[*]} " != *" --submission-id "* ]]; then
    submit_opts+=(--submission-id "$submission_id")
fi
echo "$submission_id" >"$STATE_DIR/last_job"

log "job $submission_id: python $*"
# The working dir is uploaded (files matched by .gitignore, like .venv/ and .cache/, are left out).
exec "$PYTHON" -m ray.scripts.scripts job submit \
    --address "$RAY_API_SERVER_ADDRESS" \
    --working-dir "$REPO_ROOT" \
    "${submit_opts[@]}" \
    -- python "$@"
