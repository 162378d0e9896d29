"""A Ray cluster of three nodes on loopback for the multi-node tests: the head on 127.0.0.1 (no CPUs, so no
training lands there) and worker nodes on 127.0.0.2 and 127.0.0.3 (2 logical CPUs and ``node_<n>: 1`` each).

Run these tests in a pytest session of their own (``pytest -m multinode``): one process joins one Ray cluster,
and this one replaces the session's single-node instance (``ray_cluster`` is overridden here, so the shared data
fixtures preprocess through the multi-node cluster).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from neurolm.local_cluster import LocalRayCluster

WORKER_IPS = ("127.0.0.2", "127.0.0.3")


def worker_env_vars() -> dict[str, str]:
    from neurolm.train.launch import worker_env

    return {**worker_env(), "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip


@pytest.fixture(scope="session")
def multinode_cluster(s3_server: dict[str, str]) -> Iterator[LocalRayCluster]:
    """Head + 2 worker nodes, token auth, this process connected as the driver; torn down by pid."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Short root: Ray's unix sockets live under each node's temp dir and must stay below ~107 characters.
    root = tempfile.mkdtemp(prefix="nlm-mn-", dir="/tmp")
    saved = dict(os.environ)
    cluster = LocalRayCluster(root, worker_ips=WORKER_IPS, head_cpus=0, worker_cpus=2,
                              env={k: v for k, v in worker_env_vars().items() if k.startswith("AWS_")})  # fmt: skip
    cluster.start()
    try:
        cluster.connect(worker_env_vars())
        yield cluster
    finally:
        ray.shutdown()
        pids = cluster.pids()
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
        from neurolm.local_cluster import _alive

        left = _alive(pids)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the multi-node cluster left behind: {left}"


@pytest.fixture(scope="session")
def ray_cluster(multinode_cluster: LocalRayCluster) -> Iterator[None]:
    """The shared fixtures' Ray instance is the multi-node cluster in this directory."""
    yield
