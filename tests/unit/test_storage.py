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


def test_memory_mapped_reads(tmp_path) -> None:
    """``memory_map=True`` opens local files as mappings (Linux: the file is in /proc/self/maps while open), and
    Parquet read through it gives what a plain read gives, before and after the file is replaced whole."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(values: list[int]) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), sink, compression="none")
        return sink.getvalue()

    uri = storage.join(str(tmp_path), "part-00000.parquet")
    storage.write_bytes(uri, parquet(list(range(1000))))
    mapped, path = storage.resolve(uri, memory_map=True)
    plain, _ = storage.resolve(uri)
    with mapped.open_input_file(path), open("/proc/self/maps") as maps:
        assert path in maps.read()
    with plain.open_input_file(path), open("/proc/self/maps") as maps:
        assert path not in maps.read()
    table = pq.read_table(path, filesystem=mapped)
    assert table.equals(pq.read_table(path, filesystem=plain))
    storage.write_bytes(uri, parquet([7] * 10))
    assert table.column("x").to_pylist() == list(range(1000))
    assert pq.read_table(path, filesystem=mapped).column("x").to_pylist() == [7] * 10
