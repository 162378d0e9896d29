"""Retry budgets of the S3 clients and the argument checks of the local multi-node cluster (no Ray, no server)."""

from __future__ import annotations

import pytest

from neurolm import storage
from neurolm.runtime.local_cluster import LocalClusterError, LocalRayCluster, main, node_name


def test_retry_attempts_cover_the_budget_with_the_aws_default_backoff() -> None:
    for budget in (0.5, 20.0, 60.0, 300.0):
        n = storage.retry_attempts(budget)
        waits = [0.025 * 2**i for i in range(n)]
        assert sum(waits) >= budget > sum(waits[:-1])  # the fewest attempts that wait out the budget
    assert storage.retry_attempts(60.0) == 12


def test_retry_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.RETRY_BUDGET_ENV, raising=False)
    assert storage.retry_budget_s() == 60.0
    monkeypatch.setenv(storage.RETRY_BUDGET_ENV, "5")
    assert storage.retry_budget_s() == 5.0
    assert storage.RETRY_BUDGET_ENV in storage.storage_env()  # forwarded to Ray workers
    monkeypatch.setenv(storage.RETRY_BUDGET_ENV, "soon")
    with pytest.raises(storage.StorageError, match="NEUROLM_S3_RETRY_BUDGET_S='soon'"):
        storage.retry_budget_s()


def test_s3_filesystem_keeps_its_retry_budget_when_pickled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray ships the file system to its workers pickled; the copy must still wait out the budget against an
    unreachable endpoint (pyarrow's own pickling drops the strategy: the copy gave up after ~1.7 s)."""
    import pickle
    import socket
    import time

    with socket.socket() as s:  # a loopback port nobody listens on: every connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv(storage.RETRY_BUDGET_ENV, "3")
    fs, path = storage.resolve("s3://bucket/key")
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.retry_attempts == fs.retry_attempts == storage.retry_attempts(3.0)
    for filesystem in (fs, copy):
        start = time.monotonic()
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            filesystem.get_file_info(path)
        assert time.monotonic() - start >= 3.0


def test_node_names_and_addresses(tmp_path) -> None:
    assert node_name("127.0.0.3") == "node_3"
    cluster = LocalRayCluster(tmp_path)
    with pytest.raises(LocalClusterError, match="start the head first"):
        cluster.add_node("127.0.0.2")
    with pytest.raises(LocalClusterError, match="auth_mode"):
        LocalRayCluster(tmp_path, auth_mode="none")


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["add", "--address", "10.0.0.1:6379", "--state-dir", "x", "--ip", "127.0.0.2"], "--address"),
        (["add", "--address", "127.0.0.1:6379", "--state-dir", "x", "--ip", "10.0.0.2"], "--ip"),
        (["add", "--address", "127.0.0.1:6379", "--state-dir", "x", "--ip", "127.0.0.1"], "--ip"),
    ],
)
def test_cli_rejects_addresses_off_loopback(argv, culprit, tmp_path, capsys) -> None:
    argv = [a if a != "x" else str(tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(culprit) and len(err.strip().splitlines()) == 1


def test_an_unreachable_store_is_told_apart_and_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv(storage.RETRY_BUDGET_ENV, "0")
    try:
        try:
            storage.read_text("s3://bucket/run/metrics.jsonl")
        except storage.StorageError as err:
            raise RuntimeError("the worker failed") from err  # what a caller wraps around it
    except RuntimeError as wrapped:
        cause = storage.unreachable_cause(wrapped)
    assert isinstance(cause, OSError) and "NETWORK_CONNECTION" in str(cause)
    message = str(storage.outage_error("run 'r1'", cause))
    assert len(message.splitlines()) == 1
    assert endpoint in message and "NEUROLM_S3_RETRY_BUDGET_S=0 s" in message and "'r1'" in message
    assert storage.unreachable_cause(storage.StorageError("s3://b/k: no such object or file")) is None
