"""The jobs' own local Ray (started by :mod:`neurolm.runtime`) listens on loopback only and wants a token."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import psutil
import pytest

pytestmark = [pytest.mark.ray]


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _ray_processes(session_dir: str) -> list[psutil.Process]:
    """This driver, every process started with the session directory on its command line, and their children."""
    found = {os.getpid(): psutil.Process()}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(session_dir in arg for arg in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    return list(found.values())


def test_local_ray_listens_on_loopback_only_and_requires_a_token(ray_cluster) -> None:
    import ray

    @ray.remote
    def pid() -> int:
        return os.getpid()

    assert len(set(ray.get([pid.remote() for _ in range(4)]))) >= 1  # workers (and their servers) exist
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    listening = []
    for proc in _ray_processes(session_dir):
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except psutil.Error:
            continue
        listening += [
            (name, proc.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN
        ]
    names = {n for n, *_ in listening}
    assert "gcs_server" in names and "raylet" in names, listening  # the servers were found at all
    exposed = [entry for entry in listening if not _is_loopback(entry[2])]
    assert not exposed, f"Ray processes listening beyond loopback: {exposed}"

    # A client without the cluster's token is refused.
    gcs = ray.get_runtime_context().gcs_address
    assert gcs.startswith("127.0.0.1:")
    status = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", gcs],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert status.returncode != 0
    assert "token" in (status.stdout + status.stderr).lower()


_SIZED = """
import json, ray
from neurolm.runtime import ensure_ray
assert ensure_ray(local_num_cpus=3, local_object_store_bytes=150 * 2**20, include_dashboard=False)
res = ray.cluster_resources()
print(json.dumps({"cpu": res["CPU"], "store": res["object_store_memory"], "gcs": ray.get_runtime_context().gcs_address}))
ray.shutdown()
"""


def test_ensure_ray_sizes_a_local_instance_and_leaves_a_cluster_alone(ray_cluster) -> None:
    """``local_num_cpus`` / ``local_object_store_bytes`` size a local instance; joining a running one they are
    ignored (``ray.init(address=..., num_cpus=...)`` is an error: the cluster's size is the cluster's)."""
    import ray

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    local = subprocess.run([sys.executable, "-c", _SIZED], capture_output=True, text=True, timeout=300, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    sized = json.loads(local.stdout.strip().splitlines()[-1])
    assert sized["cpu"] == 3
    assert sized["store"] == pytest.approx(150 * 2**20, rel=0.05)
    assert sized["gcs"].startswith("127.0.0.1:")

    joined = subprocess.run(
        [sys.executable, "-c", _SIZED.replace("include_dashboard=False", "include_dashboard=False, log_to_driver=False")],
        capture_output=True, text=True, timeout=300,
        env={**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address},
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert json.loads(joined.stdout.strip().splitlines()[-1])["cpu"] == ray.cluster_resources()["CPU"]
