"""Parquet sample shards: schema, round trip, validation, and the batch -> (C, T) function used by Ray Data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurolm.data.readers.base import RecordingSamples, RecordingTask
from neurolm.data.shards import (
    ShardSchemaError,
    batch_to_signals,
    parquet_bytes,
    read_shards,
    recording_key,
    samples_to_table,
    table_to_signals,
    write_recording_shards,
)


def make_samples(n: int, n_channels: int, seconds: int, seed: int = 0, splits=None) -> RecordingSamples:
    rng = np.random.default_rng(seed)
    return RecordingSamples(
        signals=rng.standard_normal((n, n_channels, seconds * 200)).astype(np.float32),
        start_s=np.arange(n) * float(seconds),
        labels=np.arange(n) % 2,
        splits=splits or ["train"] * n,
        channel_indices=np.arange(n_channels, dtype=np.int16) + 10,
        channel_names=tuple(f"c{i}" for i in range(n_channels)),
        source_sfreq=256.0,
        source_seconds=n * seconds,
    )


TASK = RecordingTask("tuab", "tuab", "train/normal/01_tcp_ar/x_s001_t000", ("/x.edf",), "x", "train", 0)


def test_table_has_the_design_schema_and_deterministic_ids():
    table = samples_to_table(TASK, make_samples(3, 4, 2))
    assert table.schema.names == ["sample_id", "dataset", "split", "subject", "recording", "start_s", "label",
                                  "channels", "n_channels", "n_seconds", "signal", "source_sfreq"]  # fmt: skip
    assert table.schema.field("signal").type == pa.large_binary()  # shard format 2: raw float32 bytes
    assert table.schema.metadata[b"neurolm.shard_format"] == b"2"
    assert table.column("sample_id").to_pylist()[1] == "tuab/train/normal/01_tcp_ar/x_s001_t000/000001"
    assert table.column("channels").to_pylist()[0] == [10, 11, 12, 13]
    assert table.column("n_seconds").to_pylist() == [2, 2, 2]
    assert parquet_bytes(table) == parquet_bytes(samples_to_table(TASK, make_samples(3, 4, 2)))  # byte-stable


def test_recording_shards_round_trip_by_split_and_size(tmp_path):
    samples = make_samples(5, 3, 1, splits=["train", "val", "train", "train", "val"])
    key = recording_key(TASK.recording)
    shards = write_recording_shards(samples_to_table(TASK, samples), str(tmp_path), key, samples_per_shard=2)
    assert [(s["path"], s["rows"]) for s in shards] == [
        (f"train/part-{key}-00000.parquet", 2), (f"train/part-{key}-00001.parquet", 1),
        (f"val/part-{key}-00000.parquet", 2)]  # fmt: skip
    table = read_shards(str(tmp_path / "train"))
    signals = table_to_signals(table)
    assert table.num_rows == 3 and signals[0].shape == (3, 200)
    np.testing.assert_array_equal(np.stack(signals), samples.signals[[0, 2, 3]])
    assert read_shards(str(tmp_path)).num_rows == 5


def test_float16_signals_round_trip(tmp_path):
    samples = make_samples(2, 3, 1)
    samples.signals = samples.signals.astype(np.float16)
    write_recording_shards(samples_to_table(TASK, samples), str(tmp_path), "h", 10)
    table = read_shards(str(tmp_path))
    signals = table_to_signals(table)
    assert signals[0].dtype == np.float16
    np.testing.assert_array_equal(np.stack(signals), samples.signals)


@pytest.mark.parametrize("versions", [(2, 2), (1, 1), (1, 2)])
def test_mixed_shapes_and_formats_are_read_as_byte_rows(tmp_path, versions):
    other = RecordingTask("edf", "tuab", "other", ("/y.edf",), "y", "train")
    write_recording_shards(
        samples_to_table(TASK, make_samples(2, 3, 1), version=versions[0]), str(tmp_path), "a", 10
    )
    write_recording_shards(
        samples_to_table(other, make_samples(2, 5, 2, seed=1), version=versions[1]), str(tmp_path), "b", 10
    )
    table = read_shards(str(tmp_path))
    assert table.schema.field("signal").type == pa.large_binary()
    assert [s.shape for s in table_to_signals(table)] == [(3, 200), (3, 200), (5, 400), (5, 400)]
    np.testing.assert_array_equal(table_to_signals(table)[2], make_samples(2, 5, 2, seed=1).signals[0])


def test_schema_mismatches_fail_clearly(tmp_path):
    table = samples_to_table(TASK, make_samples(2, 3, 1))
    (tmp_path / "a").mkdir()
    pq.write_table(table.drop_columns(["label"]), tmp_path / "a" / "part-0.parquet")
    with pytest.raises(ShardSchemaError, match=r"part-0\.parquet: column 'label' is missing"):
        read_shards(str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    bad = table.set_column(table.schema.get_field_index("label"), "label", pa.array(["x", "y"]))
    pq.write_table(bad, tmp_path / "b" / "part-0.parquet")
    with pytest.raises(ShardSchemaError, match="column 'label' has type string, expected int64"):
        read_shards(str(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    old = samples_to_table(TASK, make_samples(2, 3, 1), version=1)
    flat = old.set_column(
        old.schema.get_field_index("signal"), "signal", old.column("signal").combine_chunks().storage
    )
    pq.write_table(flat, tmp_path / "c" / "part-0.parquet")
    with pytest.raises(ShardSchemaError, match="expected large_binary"):
        read_shards(str(tmp_path / "c"))
    (tmp_path / "d").mkdir()
    table = samples_to_table(TASK, make_samples(2, 3, 1), version=1)
    wrong_c = table.set_column(
        table.schema.get_field_index("n_channels"), "n_channels", pa.array([4, 4], pa.int16())
    )
    pq.write_table(wrong_c, tmp_path / "d" / "part-0.parquet")
    with pytest.raises(ShardSchemaError, match=r"n_channels \[4\] disagrees with signal shape"):
        read_shards(str(tmp_path / "d"))
    with pytest.raises(ShardSchemaError, match="no part-"):
        read_shards(str(tmp_path / "empty"))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "part-0.parquet").write_bytes(b"garbage")
    with pytest.raises(ShardSchemaError, match="not a readable Parquet file"):
        read_shards(str(tmp_path / "e"))


def test_batch_to_signals_accepts_every_form_ray_data_produces():
    dense = np.arange(2 * 3 * 400, dtype=np.float32).reshape(2, 3, 400)  # one shape: (B, C, T)
    out = batch_to_signals({"signal": dense, "n_channels": np.array([3, 3])})
    assert [o.shape for o in out] == [(3, 400), (3, 400)] and np.shares_memory(out[0], dense)
    ragged = np.empty(2, dtype=object)  # mixed shapes: object array of (C_i, T_i) ndarrays
    ragged[0], ragged[1] = dense[0], np.ones((5, 200), np.float32)
    assert [o.shape for o in batch_to_signals({"signal": ragged, "n_channels": np.array([3, 5])})] == [
        (3, 400),
        (5, 200),
    ]
    flat = np.empty(2, dtype=object)  # flat rows: reshaped with n_channels
    flat[0], flat[1] = dense[0].ravel(), np.ones(1000, np.float32)
    out = batch_to_signals({"signal": flat, "n_channels": np.array([3, 5])})
    assert [o.shape for o in out] == [(3, 400), (5, 200)]
    np.testing.assert_array_equal(out[0], dense[0])


def test_format_1_shards_still_read_identically(tmp_path):
    samples = make_samples(3, 4, 2)
    for version in (1, 2):
        write_recording_shards(
            samples_to_table(TASK, samples, version=version), str(tmp_path / f"v{version}"), "k", 10
        )
    old, new = read_shards(str(tmp_path / "v1")), read_shards(str(tmp_path / "v2"))
    assert isinstance(old.schema.field("signal").type, pa.FixedShapeTensorType)
    for a, b in zip(table_to_signals(old), table_to_signals(new), strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert old.drop_columns(["signal"]).equals(new.drop_columns(["signal"]).replace_schema_metadata(None))


def test_format_2_bad_rows_and_future_formats_fail_clearly(tmp_path):
    table = samples_to_table(TASK, make_samples(2, 3, 1))
    (tmp_path / "a").mkdir()
    short = pa.array([b"\0" * 8, b"\0" * 8], pa.large_binary())
    pq.write_table(table.set_column(table.schema.get_field_index("signal"), "signal", short),
                   tmp_path / "a" / "part-0.parquet")  # fmt: skip
    with pytest.raises(ShardSchemaError, match="signal byte lengths"):
        read_shards(str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    pq.write_table(
        table.replace_schema_metadata({b"neurolm.shard_format": b"9"}), tmp_path / "b" / "part-0.parquet"
    )
    with pytest.raises(ShardSchemaError, match="shard format '9'.*newer than this reader"):
        read_shards(str(tmp_path / "b"))


def test_batch_to_signals_reads_format_2_bytes_and_arrow_without_copies():
    samples = make_samples(3, 4, 2)
    table = samples_to_table(TASK, samples)
    from_arrow = batch_to_signals(table)
    assert not from_arrow[0].flags.owndata  # a view on the Arrow buffer
    np.testing.assert_array_equal(np.stack(from_arrow), samples.signals)
    sliced = batch_to_signals(table.slice(1, 2))  # a non-zero Arrow offset
    np.testing.assert_array_equal(np.stack(sliced), samples.signals[1:])
    as_numpy = {
        "signal": np.array(table.column("signal").to_pylist(), dtype=object),
        "n_channels": np.full(3, 4),
        "n_seconds": np.full(3, 2),
    }  # what Ray's numpy batches hold
    np.testing.assert_array_equal(np.stack(batch_to_signals(as_numpy)), samples.signals)
