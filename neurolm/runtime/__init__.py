"""The one place where jobs meet Ray: connecting or starting a local instance, the environment workers get,
reading shards into Ray Data, and the Weights & Biases mode. The local S3 server is :mod:`.s3server`.

A local instance started here listens on loopback only (every port of GCS, raylet, object manager, agents and
workers binds to 127.0.0.1) and requires Ray's token authentication, so nothing else on the machine or the
network can submit work to it.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from neurolm import storage

__all__ = [
    "LOCAL_HOST",
    "WORKER_ENV",
    "ensure_ray",
    "init_local_ray",
    "read_shards",
    "read_tasks",
    "shard_files",
    "shard_paths",
    "uri_list",
    "wandb_mode",
    "worker_env",
]

LOCAL_HOST = "127.0.0.1"
LOCAL_OBJECT_STORE_BYTES = int(1e9)
WORKER_ENV = (
    "DS_ACCELERATOR",
    "WANDB_MODE",
    "WANDB_API_KEY",
    "WANDB_DIR",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def worker_env() -> dict[str, str]:
    """Environment forwarded to Ray workers: S3 settings plus the offline/accelerator switches."""
    env = storage.storage_env()
    env.update({k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)})
    return env


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else online with an API key and offline without one (sync later)."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def ensure_ray(
    address: str | None = None,
    *,
    include_dashboard: bool = True,
    local_num_cpus: int | None = None,
    local_object_store_bytes: int = LOCAL_OBJECT_STORE_BYTES,
    **kwargs: Any,
) -> bool:
    """Connect to ``address`` / ``RAY_ADDRESS``, or start a local instance sized for this machine.

    ``local_num_cpus`` (None = this machine's CPUs) and ``local_object_store_bytes`` size a local instance only; a
    cluster's size is the cluster's.
    Returns True when this call started or connected Ray (the caller may then ``ray.shutdown()``), False when
    Ray was already initialised in this process. ``kwargs`` go to ``ray.init`` (e.g. ``log_to_driver``).
    """
    import ray

    if ray.is_initialized():
        return False
    env = worker_env()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
    else:
        init_local_ray(
            env, local_num_cpus, include_dashboard=include_dashboard, object_store_memory=local_object_store_bytes,
            **kwargs,
        )
    return True


def init_local_ray(
    env_vars: dict[str, str],
    num_cpus: int | None = None,
    *,
    include_dashboard: bool = True,
    object_store_memory: int = LOCAL_OBJECT_STORE_BYTES,
    **kwargs: Any,
) -> None:
    """A fresh local Ray instance on 127.0.0.1 with token authentication (immune to a stale
    ``ray_current_cluster`` file).

    With the dashboard on, its port is pinned and its URL handed to every worker: Train V2's placement-group
    cleaner asks the state API for its controller, and with several Ray instances on one machine its address
    auto-detection fails ("Found multiple active Ray instances") and finished runs leak their placement groups.
    """
    import ray

    from neurolm.runtime.s3server import free_ports

    _require_token_auth()
    _loopback_only()
    env = dict(env_vars)
    extra: dict[str, Any] = {}
    if include_dashboard:
        port = free_ports(1)[0]
        env["RAY_API_SERVER_ADDRESS"] = f"http://{LOCAL_HOST}:{port}"
        extra = {"dashboard_host": LOCAL_HOST, "dashboard_port": port}
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=include_dashboard,
        _node_ip_address=LOCAL_HOST,
        runtime_env={"env_vars": env},
        **extra,
        **kwargs,
    )


def _require_token_auth() -> None:
    """Token authentication for the instance about to start, whatever ``RAY_AUTH_MODE`` says.

    Ray reads the mode from the environment (the processes ``ray.init`` starts inherit it) and caches it in
    this process, so both are set, the way Ray enables it itself. The token is Ray's own (generated once into
    ``~/.ray/auth_token``) and stays on this machine."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()


def _loopback_only() -> None:
    """Make the instance about to start use 127.0.0.1 as its node address, so that Ray's servers (GCS, raylet,
    object manager, agents, workers) listen on loopback only.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is rewritten by Ray into the machine's routable address,
    and its servers then listen on every interface. Ray's single-machine mode
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps loopback: Ray reads it once at import, so the flag is set
    both for the processes it starts and in this already-imported one."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def uri_list(value: str | list[str] | None) -> list[str]:
    """A config value holding one URI, several, or none, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def shard_files(uris: str | list[str]) -> tuple[Any, list[str], list[int]]:
    """The file system, the sorted Parquet shard paths of one or more directories (local or s3://) and their
    sizes in bytes (from the same listing: no request per file). Local files are memory-mapped when read
    (:func:`neurolm.storage.resolve`)."""
    uris = uri_list(uris)
    fs, _ = storage.resolve(uris[0], memory_map=True)
    paths, sizes = [], []
    for uri in uris:
        files = storage.list_file_sizes(uri, suffix=".parquet")
        if not files:
            raise storage.StorageError(f"{uri}: no .parquet shards found")
        for f, size in files:
            paths.append(storage.resolve(f)[1])
            sizes.append(size)
    return fs, paths, sizes


def shard_paths(uris: str | list[str]) -> tuple[Any, list[str]]:
    """The file system and the sorted Parquet shard paths of one or more directories (local or s3://)."""
    fs, paths, _ = shard_files(uris)
    return fs, paths


def read_tasks(sizes: list[int], block_bytes: int | None) -> int:
    """How many read tasks (= blocks) cover files of ``sizes`` bytes: one per file without ``block_bytes``, else
    ``k = block_bytes // mean size`` consecutive files per task (at least 1), so a block holds about
    ``block_bytes``. A pure function of the listing and the configuration, never of the cluster: the block
    sequence fixes the shuffled order, and a resume anywhere must see the same one."""
    if not block_bytes or not sizes:
        return len(sizes)
    per_task = max(1, int(block_bytes // max(1, sum(sizes) / len(sizes))))
    return -(-len(sizes) // per_task)


_DATASOURCE_SWITCH = threading.Lock()


def read_shards(uris: str | list[str], *, block_bytes: int | None = None):
    """A streaming Ray Dataset over the Parquet shards of one or more directories (local or s3://), in file
    order: one read task and one block per shard file, or per group of consecutive files of about
    ``block_bytes`` (:func:`read_tasks`).

    Read through Ray Data's V1 Parquet datasource (issue 11, docs/platform.md "Ingest"): the V2 one (Ray 2.60's
    default) provisions a pool of ``FooterReader`` actors on every execution, i.e. every epoch, and on a small
    node the new worker processes (~1 CPU-s of imports each) cost more than reading the epoch's shards. The
    files are listed here once; ``override_num_blocks`` keeps V1 from cutting each file's block into many small
    ones to reach its default of 200 blocks, and V1 gives each task a contiguous run of files. Every block costs
    a read task, a trip through the split coordinator and a fetch on the worker: grouping the 30 MB files of
    1024-token samples two to a block took 2 Train workers from ~800 to ~1050 samples/s.
    """
    import ray.data

    fs, paths, sizes = shard_files(uris)
    ctx = ray.data.DataContext.get_current()
    with _DATASOURCE_SWITCH:  # the context is the process's: a pipeline's side-by-side runs read from threads
        v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False  # read_parquet picks the datasource when called
        try:
            return ray.data.read_parquet(
                paths, filesystem=fs, shuffle=None, override_num_blocks=read_tasks(sizes, block_bytes)
            )
        finally:
            ctx.use_datasource_v2 = v2
