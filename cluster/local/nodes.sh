#!/usr/bin/env bash
# Worker nodes for the local cluster of up.sh: each is its own `ray start` joining the head on 127.0.0.1, named
# by a loopback address (127.0.0.2, 127.0.0.3, ...; it listens on 127.0.0.1, see docs/resilience.md), with
# its own CPUs, temp dir and custom resource `node_<n>: 1`. Stopped by the process ids that started them.
# up.sh/down.sh hooks: `NODES=2 cluster/local/up.sh` → `nodes.sh up "$NODES"`; down.sh → `nodes.sh down` first.
#
#   cluster/local/up.sh
#   cluster/local/nodes.sh up 2          # 127.0.0.2 and 127.0.0.3 join the head
#   cluster/local/nodes.sh list
#   cluster/local/nodes.sh kill 127.0.0.3   # lose a node: SIGKILL its raylet, object store and workers
#   cluster/local/nodes.sh down          # stop every worker node (down.sh stops the head)
#
# Environment (all optional):
#   NODE_CPUS                 logical CPUs of each worker node (default 1)
#   NODE_OBJECT_STORE_MEMORY  bytes of object store per worker node (default 400 MiB)
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NODES_DIR="$STATE_DIR/nodes"
action="${1:-}"
[[ "$action" =~ ^(up|down|kill|list)$ ]] || die "usage: nodes.sh up N | down | kill IP | list"

head_pid="$(state_get pid)"
ray_port="$(state_get ray_port)"
if [[ "$action" == up || "$action" == kill ]]; then
    alive "$head_pid" || die "no local cluster head: run cluster/local/up.sh first"
fi
auth_mode="$(state_get auth_mode)"
token_path="$(state_get token_path)"
# `down` and `list` work without a head too (its nodes are stopped by their pids either way).
args=(--address "127.0.0.1:${ray_port:-0}" --state-dir "$NODES_DIR" --auth-mode "${auth_mode:-disabled}"
    --object-store-memory "${NODE_OBJECT_STORE_MEMORY:-419430400}")
if [[ -n "$token_path" ]]; then
    args+=(--token-path "$token_path")
fi
local_cluster() { "$PYTHON" -m neurolm.runtime.local_cluster "$@"; }

case "$action" in
    up)
        count="${2:-}"
        [[ "$count" =~ ^[0-9]+$ && "$count" -ge 1 && "$count" -le 250 ]] ||
            die "nodes.sh up N: N must be a number of worker nodes from 1 to 250, got '${count}'"
        ips=()
        for ((i = 2; i < count + 2; i++)); do
            ips+=(--ip "127.0.0.$i")
        done
        local_cluster add "${args[@]}" --cpus "${NODE_CPUS:-1}" "${ips[@]}"
        ;;
    down) local_cluster remove "${args[@]}" ;;
    kill)
        [[ -n "${2:-}" ]] || die "nodes.sh kill IP: which node (e.g. 127.0.0.3)?"
        local_cluster kill "${args[@]}" --ip "$2"
        ;;
    list) local_cluster list "${args[@]}" ;;
esac
