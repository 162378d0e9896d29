"""Shared fixtures: one local S3 server (SeaweedFS) and one local Ray instance per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# Tests never reach a model hub, and wandb never phones home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 server on 127.0.0.1 with bucket ``neurolm``; its AWS_* variables are set for the session."""
    from neurolm.runtime.s3server import LocalS3Server

    server = LocalS3Server(str(tmp_path_factory.mktemp("s3")), bucket="neurolm").start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server.env()
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_uri(s3_server: dict[str, str]) -> str:
    """A fresh prefix in the test bucket."""
    return "s3://neurolm/tests"


@pytest.fixture(scope="session")
def ray_cluster(s3_server: dict[str, str]) -> Iterator[None]:
    """One local Ray instance (2 CPUs, dashboard on: Train-in-Tune needs the state API) for the session.

    Workers get the S3 settings through the runtime environment.
    """
    import ray

    from neurolm.runtime import init_local_ray, worker_env

    init_local_ray({**worker_env(), "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1"}, num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def golden_path() -> Path:
    """The official golden vectors shipped beside the repo in ../shared (skip where absent)."""
    path = SHARED / "fixtures" / "official" / "neurolm_golden_small.pt"
    if not path.exists():
        pytest.skip(f"golden vectors not found at {path} (the ../shared checkout is absent)")
    return path
