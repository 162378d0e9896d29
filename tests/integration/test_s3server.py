from __future__ import annotations

import os

import pytest

from neurolm import storage

pytestmark = pytest.mark.s3


def test_real_server_round_trip_and_credentials(s3_uri: str, monkeypatch) -> None:
    uri = storage.join(s3_uri, "hello.txt")
    storage.write_text(uri, "hi")
    assert storage.read_text(uri) == "hi"
    assert uri in storage.list_files(s3_uri)
    storage.check_reachable(uri)
    with pytest.raises(storage.StorageError, match="bucket does not exist"):
        storage.check_reachable("s3://no-such-bucket/x")
    # The server enforces credentials: a wrong secret is refused, and the error names the object.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(storage.StorageError, match="hello2.txt"):
        storage.write_text(storage.join(s3_uri, "hello2.txt"), "x")


def test_unreachable_endpoint_fails_fast(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(storage.StorageError, match="127.0.0.1:9"):
        storage.check_reachable("s3://neurolm/x")
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
