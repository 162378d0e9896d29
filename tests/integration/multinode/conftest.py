"""A Ray cluster of three nodes on loopback for the multi-node tests: the head on 127.0.0.1 (no CPUs, so no
training lands there) and worker nodes on 127.0.0.2 and 127.0.0.3 (3 logical CPUs and ``node_<n>: 1`` each: room for one 2-CPU Train worker and its data tasks).

Run these tests in a pytest session of their own (``pytest -m multinode``): one process joins one Ray cluster,
and this one replaces the session's single-node instance (``ray_cluster`` is overridden here, so the shared data
fixtures preprocess through the multi-node cluster).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from neurolm.runtime.local_cluster import LocalRayCluster
from neurolm.runtime.s3server import LocalS3Server

WORKER_IPS = ("127.0.0.2", "127.0.0.3")


def worker_env_vars() -> dict[str, str]:
    from neurolm.runtime import worker_env

    return {**worker_env(), "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip


@pytest.fixture(scope="session")
def s3_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """The session's S3 server as an object the outage tests can stop and start again (same port and data)."""
    server = LocalS3Server(str(tmp_path_factory.mktemp("s3")), bucket="neurolm").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(s3_process: LocalS3Server) -> Iterator[dict[str, str]]:
    """As the shared fixture, but served by :func:`s3_process`; AWS_* set for the session."""
    saved = {k: os.environ.get(k) for k in s3_process.env()}
    os.environ.update(s3_process.env())
    try:
        yield s3_process.env()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def multinode_cluster(s3_server: dict[str, str]) -> Iterator[LocalRayCluster]:
    """Head + 2 worker nodes, token auth, this process connected as the driver; torn down by pid."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Short root: Ray's unix sockets live under each node's temp dir and must stay below ~107 characters.
    root = tempfile.mkdtemp(prefix="nlm-mn-", dir="/tmp")
    saved = dict(os.environ)
    cluster = LocalRayCluster(root, worker_ips=WORKER_IPS, head_cpus=0, worker_cpus=3,
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
        from neurolm.runtime.local_cluster import _alive

        left = _alive(pids)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the multi-node cluster left behind: {left}"


@pytest.fixture(scope="session")
def ray_cluster(multinode_cluster: LocalRayCluster) -> Iterator[None]:
    """The shared fixtures' Ray instance is the multi-node cluster in this directory."""
    yield


@pytest.fixture(scope="session")
def mn() -> ModuleType:
    """The helpers of these tests (``helpers.py`` beside this file; pytest runs with ``--import-mode=importlib``,
    which puts no test directory on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("multinode_helpers", Path(__file__).with_name("helpers.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
