from __future__ import annotations

import pytest

from neurolm import storage


def test_local_round_trip_and_listing(tmp_path) -> None:
    uri = storage.join(str(tmp_path), "a", "b.bin")
    storage.write_bytes(uri, b"xyz")
    assert storage.read_bytes(uri) == b"xyz"
    assert storage.list_files(str(tmp_path), suffix=".bin") == [uri]
    assert storage.list_files(str(tmp_path / "missing")) == []
    assert storage.list_file_sizes(str(tmp_path), suffix=".bin") == [(uri, 3)]
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes(str(tmp_path / "missing.bin"))


def test_uri_forms() -> None:
    assert storage.join("s3://b/p", "x", "y.parquet") == "s3://b/p/x/y.parquet"
    fs, path = storage.resolve("file:///tmp/x")
    assert path == "/tmp/x"
    with pytest.raises(storage.StorageError, match="only s3://"):
        storage.resolve("gs://bucket/x")
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.resolve("s3://")


def test_bad_endpoint_is_named(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9")
    with pytest.raises(storage.StorageError, match="AWS_ENDPOINT_URL"):
        storage.resolve("s3://b/x")
