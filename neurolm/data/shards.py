"""Parquet sample shards: the contract between preprocessing and training (DESIGN.md "Sample shard schema").

Layout::

    <output>/<dataset>/<split>/part-<recording key>-<nnnnn>.parquet   samples, zstd
    <output>/<dataset>/_records/<recording key>.json                 one outcome record per source recording
    <output>/<dataset>/_manifest.json                                 every record + the shard list, written last

Every recording writes its own shards (at most ``samples_per_shard`` rows each), named after the recording, so
the shard set is a pure function of the inputs and the config: a rerun, or a run resumed after a crash, ends with
exactly the files of a clean run. Names starting with ``_`` are ignored by Parquet dataset readers (Ray Data,
pyarrow), so only samples are read.

Schema (one row per sample)::

    sample_id     string       "<dataset>/<recording>/<index:06d>", deterministic and unique
    dataset       string
    split         string       train | val | test
    subject       string       "" when unknown
    recording     string
    start_s       float64      window start in the source recording (negative: TUEV's wrapped edge windows)
    label         int64        -1 when none
    channels      list<int16>  10-20 vocabulary indices (neurolm.channels.STANDARD_1020), length C
    n_channels    int16        C
    n_seconds     int32        T
    signal        arrow.fixed_shape_tensor<float32>[C, T·200]   units of 100 µV, row-major
    source_sfreq  float64      sampling rate of the source file

``signal`` is a fixed-shape tensor column, one shape per file (all samples of a recording share it). Measured
with Ray 2.60: ``ray.data.read_parquet(...).map_batches(fn, batch_format="numpy")`` hands ``fn`` a real
``(B, C, T·200)`` float32 ndarray when the batch comes from shards of one shape, and an object array of
``(C_i, T_i·200)`` float32 ndarrays when shards of different shapes meet (TUEG, generic folders). A flat
``FixedSizeList`` column would arrive as an object array of 1-D arrays (STACK.md §4); we do not write one.
:func:`batch_to_signals` turns any of these into per-sample ``(C, T·200)`` arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neurolm import storage
from neurolm.data.readers.base import SPLITS, RecordingSamples, RecordingTask

__all__ = [
    "SHARD_COLUMNS",
    "SIGNAL_COLUMN",
    "MANIFEST_NAME",
    "RECORDS_DIR",
    "ShardSchemaError",
    "shard_schema",
    "recording_key",
    "samples_to_table",
    "write_recording_shards",
    "parquet_bytes",
    "validate_table",
    "read_shards",
    "count_rows",
    "list_shards",
    "batch_to_signals",
    "table_to_signals",
]

SIGNAL_COLUMN = "signal"
MANIFEST_NAME = "_manifest.json"
RECORDS_DIR = "_records"

# Every column but the signal, whose type depends on (C, T).
SHARD_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sample_id", pa.string()),
    ("dataset", pa.string()),
    ("split", pa.string()),
    ("subject", pa.string()),
    ("recording", pa.string()),
    ("start_s", pa.float64()),
    ("label", pa.int64()),
    ("channels", pa.list_(pa.int16())),
    ("n_channels", pa.int16()),
    ("n_seconds", pa.int32()),
    ("source_sfreq", pa.float64()),
)
_SIGNAL_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


class ShardSchemaError(ValueError):
    """A shard does not follow the sample schema; the message names the file, the column and the mismatch."""


def shard_schema(n_channels: int, n_times: int, dtype: str = "float32") -> pa.Schema:
    """The schema of a shard whose samples are ``(n_channels, n_times)`` signals of ``dtype``."""
    signal_type = pa.fixed_shape_tensor(_SIGNAL_DTYPES[dtype], (n_channels, n_times))
    columns = [pa.field(name, kind) for name, kind in SHARD_COLUMNS]
    columns.insert(len(columns) - 1, pa.field(SIGNAL_COLUMN, signal_type))
    return pa.schema(columns)


def recording_key(recording: str) -> str:
    """A file-name-safe, unique stem for a recording id (readable prefix + 8 hex digits of its hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", recording.replace("/", "--")).strip("._-")[:80]
    digest = hashlib.sha1(recording.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def samples_to_table(task: RecordingTask, samples: RecordingSamples, sfreq: float = 200.0) -> pa.Table:
    """All samples of one recording as one table in sample order (any mix of splits)."""
    n, n_channels, n_times = samples.signals.shape
    dtype = str(samples.signals.dtype)
    if dtype not in _SIGNAL_DTYPES:
        raise ValueError(f"signal dtype must be one of {sorted(_SIGNAL_DTYPES)}, got {dtype}")
    if n_times % int(sfreq):
        raise ValueError(f"windows of {n_times} samples are not whole seconds at {sfreq} Hz")
    schema = shard_schema(n_channels, n_times, dtype)
    flat = pa.array(samples.signals.reshape(n, -1).ravel(), type=_SIGNAL_DTYPES[dtype])
    storage_array = pa.FixedSizeListArray.from_arrays(flat, n_channels * n_times)
    signal = pa.ExtensionArray.from_storage(schema.field(SIGNAL_COLUMN).type, storage_array)
    channels = [samples.channel_indices.astype(np.int16).tolist()] * n
    columns = {
        "sample_id": [f"{task.dataset}/{task.recording}/{i:06d}" for i in range(n)],
        "dataset": [task.dataset] * n,
        "split": list(samples.splits),
        "subject": [task.subject] * n,
        "recording": [task.recording] * n,
        "start_s": np.asarray(samples.start_s, dtype=np.float64),
        "label": np.asarray(samples.labels, dtype=np.int64),
        "channels": channels,
        "n_channels": np.full(n, n_channels, dtype=np.int16),
        "n_seconds": np.full(n, n_times // int(sfreq), dtype=np.int32),
        SIGNAL_COLUMN: signal,
        "source_sfreq": np.full(n, samples.source_sfreq, dtype=np.float64),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as zstd Parquet bytes (deterministic for a given table and pyarrow version)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _split_order(splits: Sequence[str]) -> list[str]:
    present = set(splits)
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def write_recording_shards(
    table: pa.Table, dataset_uri: str, key: str, samples_per_shard: int
) -> list[dict[str, Any]]:
    """Write one recording's samples as ``<split>/part-<key>-<nnnnn>.parquet`` under ``dataset_uri``.

    Each object is written whole (local: temp file + rename; S3: one PUT), so a crash never leaves a
    half-written shard. Returns one entry per shard: path relative to ``dataset_uri``, split, rows, shape.
    """
    shards = []
    splits = table.column("split").to_pylist()
    shape = list(table.schema.field(SIGNAL_COLUMN).type.shape)
    for split in _split_order(splits):
        rows = np.flatnonzero(np.asarray(splits, dtype=object) == split)
        part = table.take(pa.array(rows))
        for number, start in enumerate(range(0, part.num_rows, samples_per_shard)):
            chunk = part.slice(start, samples_per_shard)
            relative = f"{split}/part-{key}-{number:05d}.parquet"
            storage.write_bytes(storage.join(dataset_uri, relative), parquet_bytes(chunk))
            shards.append({"path": relative, "split": split, "rows": chunk.num_rows, "shape": shape})
    return shards


def validate_table(table: pa.Table | pa.Schema, source: str) -> None:
    """Check a shard against the sample schema; raise :class:`ShardSchemaError` naming the first mismatch."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    for name, kind in SHARD_COLUMNS:
        if name not in schema.names:
            raise ShardSchemaError(f"{source}: column {name!r} is missing (have {schema.names})")
        found = schema.field(name).type
        if found != kind:
            raise ShardSchemaError(f"{source}: column {name!r} has type {found}, expected {kind}")
    if SIGNAL_COLUMN not in schema.names:
        raise ShardSchemaError(f"{source}: column {SIGNAL_COLUMN!r} is missing")
    signal_type = schema.field(SIGNAL_COLUMN).type
    if not isinstance(signal_type, pa.FixedShapeTensorType) or len(signal_type.shape) != 2:
        raise ShardSchemaError(
            f"{source}: column {SIGNAL_COLUMN!r} has type {signal_type}, expected a 2-D arrow.fixed_shape_tensor"
        )
    if signal_type.value_type not in _SIGNAL_DTYPES.values():
        raise ShardSchemaError(
            f"{source}: signal values are {signal_type.value_type}, expected float32 or float16"
        )
    if isinstance(table, pa.Table) and table.num_rows:
        n_channels, n_times = signal_type.shape
        declared_c = set(table.column("n_channels").to_numpy().tolist())
        if declared_c != {n_channels}:
            raise ShardSchemaError(
                f"{source}: n_channels {sorted(declared_c)} disagrees with signal shape {signal_type.shape}"
            )
        lengths = set(pc.list_value_length(table.column("channels")).to_numpy().tolist())
        if lengths != {n_channels}:
            raise ShardSchemaError(
                f"{source}: channel lists of lengths {sorted(lengths)} for {n_channels} channels"
            )
        seconds = set(table.column("n_seconds").to_numpy().tolist())
        if len(seconds) != 1 or min(seconds) <= 0 or n_times % min(seconds):
            raise ShardSchemaError(
                f"{source}: n_seconds {sorted(seconds)} disagrees with the signal length {n_times}"
            )


def list_shards(uri: str) -> list[str]:
    """Shard files below a URI (``part-*.parquet``, sorted), or the URI itself if it is a Parquet file."""
    if str(uri).endswith(".parquet"):
        return [str(uri)]
    return [f for f in storage.list_files(uri, suffix=".parquet") if f.rsplit("/", 1)[-1].startswith("part-")]


def _flatten_signal(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index(SIGNAL_COLUMN)
    column = table.column(SIGNAL_COLUMN)
    value_type = column.type.value_type
    flat = pa.chunked_array(
        [pa.LargeListArray.from_arrays(
            pa.array(np.arange(len(chunk) + 1, dtype=np.int64) * chunk.storage.type.list_size),
            chunk.storage.flatten(),
        ) for chunk in column.chunks],
        type=pa.large_list(value_type),
    )  # fmt: skip
    return table.set_column(index, SIGNAL_COLUMN, flat)


def count_rows(uri: str) -> int:
    """Rows of every ``.parquet`` file below ``uri`` (what Ray Data reads there), from the Parquet footers:
    no signal is read and no Ray is needed."""
    files = storage.list_files(uri, suffix=".parquet")
    if not files:
        raise storage.StorageError(f"{uri}: no .parquet shards found")
    total = 0
    for file in files:
        fs, path = storage.resolve(file)
        total += pq.read_metadata(path, filesystem=fs).num_rows
    return total


def read_shards(uri: str) -> pa.Table:
    """Read and validate every shard below ``uri`` (local or ``s3://``) into one table.

    When all shards share one signal shape the ``signal`` column keeps its fixed-shape tensor type; otherwise
    it becomes a flat ``large_list<float>`` per row, to be reshaped with ``n_channels`` (see
    :func:`table_to_signals`).

    Raises
    ------
    ShardSchemaError
        No shard found, or a shard that does not follow the schema (the message names the file).
    """
    files = list_shards(uri)
    if not files:
        raise ShardSchemaError(f"{uri}: no part-*.parquet shards found")
    tables = []
    for file in files:
        fs, path = storage.resolve(file)
        try:
            table = pq.read_table(path, filesystem=fs)
        except (OSError, pa.ArrowInvalid) as err:
            raise ShardSchemaError(f"{file}: not a readable Parquet file ({err})") from err
        validate_table(table, file)
        tables.append(table)
    if len({t.schema.field(SIGNAL_COLUMN).type for t in tables}) > 1:
        tables = [_flatten_signal(t) for t in tables]
    return pa.concat_tables(tables)


def _signal_rows(signal: Any, n_channels: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    if isinstance(signal, np.ndarray) and signal.dtype != object:
        if signal.ndim == 3:  # (B, C, T) from shards of one shape
            return list(signal)
        if signal.ndim == 2:  # (B, C·T) flattened
            return [row.reshape(int(c), -1) for row, c in zip(signal, n_channels, strict=True)]
    return [np.asarray(row).reshape(int(c), -1) for row, c in zip(signal, n_channels, strict=True)]


def batch_to_signals(batch: Mapping[str, Any]) -> list[np.ndarray]:
    """Per-sample ``(C, T·200)`` signals of a Ray Data numpy batch (``map_batches(batch_format="numpy")``).

    Accepts every form Ray Data produces from our shards: a ``(B, C, T·200)`` ndarray (one shape), an object
    array of ``(C_i, T_i·200)`` ndarrays (mixed shapes), or flat rows reshaped with ``n_channels``. Pure; no Ray.

    Parameters
    ----------
    batch : mapping
        Column name → array, with at least ``signal`` and ``n_channels``.

    Returns
    -------
    list of numpy.ndarray
        One ``(C, T·200)`` array per sample, in batch order (views where possible, no copy).
    """
    return _signal_rows(batch[SIGNAL_COLUMN], np.asarray(batch["n_channels"]))


def table_to_signals(table: pa.Table) -> list[np.ndarray]:
    """Per-sample ``(C, T·200)`` signals of a table from :func:`read_shards` (either signal representation)."""
    column = table.column(SIGNAL_COLUMN)
    n_channels = table.column("n_channels").to_numpy()
    if isinstance(column.type, pa.FixedShapeTensorType):
        return [row for chunk in column.chunks for row in chunk.to_numpy_ndarray()]
    rows = []
    for chunk in column.chunks:
        values, offsets = chunk.values.to_numpy(), chunk.offsets.to_numpy()
        rows += [values[offsets[i] : offsets[i + 1]] for i in range(len(chunk))]
    return [row.reshape(int(c), -1) for row, c in zip(rows, n_channels, strict=True)]


def records_uri(dataset_uri: str) -> str:
    return storage.join(dataset_uri, RECORDS_DIR)


def record_uri(dataset_uri: str, key: str) -> str:
    return storage.join(dataset_uri, RECORDS_DIR, f"{key}.json")


def manifest_uri(dataset_uri: str) -> str:
    return storage.join(dataset_uri, MANIFEST_NAME)


def write_json(uri: str, payload: Mapping[str, Any]) -> None:
    storage.write_text(uri, json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")


def read_manifest(dataset_uri: str) -> dict[str, Any]:
    """The ``_manifest.json`` of a dataset directory."""
    return json.loads(storage.read_text(manifest_uri(dataset_uri)))
