"""Parquet sample shards: the contract between preprocessing and training (docs/architecture.md "Contracts").

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
    signal        large_binary  (C, T·200) little-endian float32 (or float16) bytes, row-major, units of 100 µV
    source_sfreq  float64      sampling rate of the source file

Shard format 2 (:data:`SHARD_FORMAT`, in the file's schema metadata ``neurolm.shard_format``) stores ``signal``
as raw bytes, uncompressed, and every other column zstd-compressed. Format 1 stored it as an
``arrow.fixed_shape_tensor<float32>[C, T·200]`` column compressed with zstd; Parquet decodes such a nested
column value by value (a repetition and a definition level per float), which read at ~120 samples/s
(64 ch x 16 s) on one core where format 2 reads at ~3000 (zstd gained only 4-7 % on float EEG and cost 3x
the read time). Format 1 shards are still read, validated and decoded everywhere. The dtype of a format 2 row is
implied by its length: ``len / (C·T·200)`` bytes per value (4: float32, 2: float16).

Ray Data hands a ``map_batches(fn, batch_format="pyarrow")`` function the Arrow column (decoded here without a
copy); with ``batch_format="numpy"`` it hands an object array of ``bytes`` (format 2), a ``(B, C, T·200)``
ndarray or an object array of ndarrays (format 1). :func:`batch_to_signals` turns any of these into per-sample
``(C, T·200)`` arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
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
    "SHARD_FORMAT",
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
    "signal_rows",
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
_ITEMSIZE_DTYPES = {4: np.dtype("<f4"), 2: np.dtype("<f2")}  # format 2: bytes per value -> dtype
SHARD_FORMAT = 2
"""Version of the shard layout written by :func:`samples_to_table` (see the module docstring)."""
FORMAT_KEY = b"neurolm.shard_format"
PATCH = 200  # samples per second of signal (one token); a format 2 row holds C x n_seconds x PATCH values


class ShardSchemaError(ValueError):
    """A shard does not follow the sample schema; the message names the file, the column and the mismatch."""


def shard_schema(
    n_channels: int, n_times: int, dtype: str = "float32", version: int = SHARD_FORMAT
) -> pa.Schema:
    """The schema of a shard whose samples are ``(n_channels, n_times)`` signals of ``dtype``.

    ``version`` 2 (the default) stores the signal as raw bytes; 1 as a fixed-shape tensor (still readable,
    written only by tests that check old shards keep working).
    """
    if version == 1:
        signal_type = pa.fixed_shape_tensor(_SIGNAL_DTYPES[dtype], (n_channels, n_times))
    elif version == 2:
        signal_type = pa.large_binary()
    else:
        raise ValueError(f"shard format {version} is not one of 1, 2")
    columns = [pa.field(name, kind) for name, kind in SHARD_COLUMNS]
    columns.insert(len(columns) - 1, pa.field(SIGNAL_COLUMN, signal_type))
    return pa.schema(columns, metadata={FORMAT_KEY: str(version).encode()})


def recording_key(recording: str) -> str:
    """A file-name-safe, unique stem for a recording id (readable prefix + 8 hex digits of its hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", recording.replace("/", "--")).strip("._-")[:80]
    digest = hashlib.sha1(recording.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def samples_to_table(
    task: RecordingTask, samples: RecordingSamples, sfreq: float = 200.0, version: int = SHARD_FORMAT
) -> pa.Table:
    """All samples of one recording as one table in sample order (any mix of splits)."""
    n, n_channels, n_times = samples.signals.shape
    dtype = str(samples.signals.dtype)
    if dtype not in _SIGNAL_DTYPES:
        raise ValueError(f"signal dtype must be one of {sorted(_SIGNAL_DTYPES)}, got {dtype}")
    if n_times % int(sfreq):
        raise ValueError(f"windows of {n_times} samples are not whole seconds at {sfreq} Hz")
    schema = shard_schema(n_channels, n_times, dtype, version)
    if version == 1:
        flat = pa.array(samples.signals.reshape(n, -1).ravel(), type=_SIGNAL_DTYPES[dtype])
        storage_array = pa.FixedSizeListArray.from_arrays(flat, n_channels * n_times)
        signal = pa.ExtensionArray.from_storage(schema.field(SIGNAL_COLUMN).type, storage_array)
    else:
        signal = _binary_signal(samples.signals.reshape(n, -1))
    channel_row = np.asarray(samples.channel_indices, dtype=np.int16)
    columns = {
        "sample_id": _strings([f"{task.dataset}/{task.recording}/{i:06d}" for i in range(n)]),
        "dataset": _strings([task.dataset] * n),
        "split": _strings(list(samples.splits)),
        "subject": _strings([task.subject] * n),
        "recording": _strings([task.recording] * n),
        "start_s": _numbers(samples.start_s, pa.float64(), np.float64),
        "label": _numbers(samples.labels, pa.int64(), np.int64),
        "channels": _repeated_list(channel_row, n, pa.int16()),
        "n_channels": _numbers(np.full(n, n_channels), pa.int16(), np.int16),
        "n_seconds": _numbers(np.full(n, n_times // int(sfreq)), pa.int32(), np.int32),
        SIGNAL_COLUMN: signal,
        "source_sfreq": _numbers(np.full(n, samples.source_sfreq), pa.float64(), np.float64),
    }
    return pa.Table.from_pydict(columns, schema=schema)


# The columns are built from their buffers rather than with pa.array: pyarrow's first conversion from Python or
# numpy imports pandas (~0.3 CPU-s in each fresh worker process), which writing a shard never needs.


def _numbers(values: Sequence[float] | np.ndarray, kind: pa.DataType, dtype: type) -> pa.Array:
    data = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _strings(values: Sequence[str]) -> pa.Array:
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype="<i4")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def _repeated_list(row: np.ndarray, n: int, kind: pa.DataType) -> pa.Array:
    """``n`` copies of one list (every sample of a recording has the same channels)."""
    values = _numbers(np.tile(row, n), kind, row.dtype.type)
    offsets = np.arange(n + 1, dtype="<i4") * len(row)
    return pa.Array.from_buffers(pa.list_(kind), n, [None, pa.py_buffer(offsets)], children=[values])


def _binary_signal(rows: np.ndarray) -> pa.Array:
    """``(n, k)`` values → a ``large_binary`` array of n little-endian rows, built on one contiguous buffer."""
    rows = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    n, width = rows.shape[0], rows.shape[1] * rows.itemsize
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int64) * width).tobytes())
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, offsets, pa.py_buffer(rows)])


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (deterministic for a given table and pyarrow version).

    Format 2: the signal bytes are stored plain and uncompressed (zstd gains a few % on float EEG and triples
    the read time), the other columns with zstd. Format 1 tables are written as before (zstd throughout).
    """
    sink = io.BytesIO()
    if pa.types.is_large_binary(table.schema.field(SIGNAL_COLUMN).type):
        others = [name for name in table.schema.names if name != SIGNAL_COLUMN]
        compression = {name: "zstd" for name in others} | {SIGNAL_COLUMN: "none"}
        pq.write_table(table, sink, compression=compression, use_dictionary=others, write_statistics=others,
                       column_encoding={SIGNAL_COLUMN: "PLAIN"})  # fmt: skip
    else:
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
    signal_type = table.schema.field(SIGNAL_COLUMN).type
    if isinstance(signal_type, pa.FixedShapeTensorType):
        shape = list(signal_type.shape)
    else:  # format 2: one (C, T·200) shape per recording
        shape = [
            int(table.column("n_channels")[0].as_py()),
            int(table.column("n_seconds")[0].as_py()) * PATCH,
        ]
    for split in _split_order(splits):
        rows = np.flatnonzero(np.asarray(splits, dtype=object) == split)
        part = table.take(_numbers(rows, pa.int64(), np.int64))
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
    version = (schema.metadata or {}).get(FORMAT_KEY, b"1").decode()
    if version not in ("1", "2"):
        raise ShardSchemaError(
            f"{source}: shard format {version!r} (schema metadata neurolm.shard_format) is newer than this "
            f"reader, which knows formats 1 and {SHARD_FORMAT}; upgrade neurolm"
        )
    if pa.types.is_large_binary(signal_type):
        _validate_binary(table, source)
        return
    if not isinstance(signal_type, pa.FixedShapeTensorType) or len(signal_type.shape) != 2:
        raise ShardSchemaError(
            f"{source}: column {SIGNAL_COLUMN!r} has type {signal_type}, expected large_binary (shard format 2) "
            "or a 2-D arrow.fixed_shape_tensor (format 1)"
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


def _validate_binary(table: pa.Table | pa.Schema, source: str) -> None:
    """Format 2: every row holds C·T·200 values of 2 or 4 bytes, one width per file, and C channel indices."""
    if not isinstance(table, pa.Table) or not table.num_rows:
        return
    n_channels = table.column("n_channels").to_numpy().astype(np.int64)
    n_seconds = table.column("n_seconds").to_numpy().astype(np.int64)
    lengths = pc.list_value_length(table.column("channels")).to_numpy()
    if (lengths != n_channels).any():
        i = int(np.flatnonzero(lengths != n_channels)[0])
        raise ShardSchemaError(
            f"{source}: row {i} has {lengths[i]} channel indices but n_channels = {n_channels[i]}"
        )
    if (n_channels <= 0).any() or (n_seconds <= 0).any():
        raise ShardSchemaError(f"{source}: n_channels and n_seconds must be positive")
    nbytes = pc.binary_length(table.column(SIGNAL_COLUMN)).to_numpy(zero_copy_only=False).astype(np.int64)
    values = n_channels * n_seconds * PATCH
    widths = set((nbytes / values).tolist())
    if len(widths) != 1 or not widths <= set(_ITEMSIZE_DTYPES):
        raise ShardSchemaError(
            f"{source}: signal byte lengths {sorted(set(nbytes.tolist()))[:4]} are not 2 or 4 bytes x "
            "n_channels x n_seconds x 200 (one width per file)"
        )


def list_shards(uri: str) -> list[str]:
    """Shard files below a URI (``part-*.parquet``, sorted), or the URI itself if it is a Parquet file."""
    if str(uri).endswith(".parquet"):
        return [str(uri)]
    return [f for f in storage.list_files(uri, suffix=".parquet") if f.rsplit("/", 1)[-1].startswith("part-")]


def _to_binary_signal(table: pa.Table) -> pa.Table:
    """A format 1 table (fixed-shape tensor signal) in the format 2 representation (bytes); format 2 as is."""
    column = table.column(SIGNAL_COLUMN)
    if pa.types.is_large_binary(column.type):
        return table.replace_schema_metadata({FORMAT_KEY: b"2"})
    chunks = [_binary_signal(chunk.to_numpy_ndarray().reshape(len(chunk), -1)) for chunk in column.chunks]
    index = table.schema.get_field_index(SIGNAL_COLUMN)
    table = table.set_column(index, SIGNAL_COLUMN, pa.chunked_array(chunks, type=pa.large_binary()))
    return table.replace_schema_metadata({FORMAT_KEY: b"2"})


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
        fs, path = storage.resolve(file, memory_map=True)
        try:
            table = pq.read_table(path, filesystem=fs)
        except (OSError, pa.ArrowInvalid) as err:
            raise ShardSchemaError(f"{file}: not a readable Parquet file ({err})") from err
        validate_table(table, file)
        tables.append(table)
    if len({t.schema.field(SIGNAL_COLUMN).type for t in tables}) > 1:
        tables = [_to_binary_signal(t) for t in tables]
    return pa.concat_tables(tables, promote_options="none") if len(tables) > 1 else tables[0]


def _binary_rows(chunk: pa.Array, n_channels: np.ndarray, n_seconds: np.ndarray | None) -> list[np.ndarray]:
    """Rows of a format 2 ``large_binary`` array as ``(C, T·200)`` views on its data buffer (no copy)."""
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
    data = chunk.buffers()[2]
    rows = []
    for i in range(len(chunk)):
        start, nbytes, c = int(offsets[i]), int(offsets[i + 1] - offsets[i]), int(n_channels[i])
        dtype = _row_dtype(nbytes, c, None if n_seconds is None else int(n_seconds[i]))
        rows.append(
            np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=start).reshape(c, -1)
        )
    return rows


def _row_dtype(nbytes: int, n_channels: int, n_seconds: int | None) -> np.dtype:
    if n_seconds is None:  # no n_seconds column: the default (and only float32 reads it right)
        return _ITEMSIZE_DTYPES[4]
    width = nbytes // (n_channels * n_seconds * PATCH)
    if width not in _ITEMSIZE_DTYPES or width * n_channels * n_seconds * PATCH != nbytes:
        raise ShardSchemaError(f"a signal row of {nbytes} bytes does not hold {n_channels} x {n_seconds} s of "
                               "float32 or float16 values")  # fmt: skip
    return _ITEMSIZE_DTYPES[width]


def signal_rows(signal: Any, n_channels: Any, n_seconds: Any = None) -> list[np.ndarray]:
    """Per-sample ``(C, T·200)`` arrays from any form of the ``signal`` column (views where possible).

    Accepts an Arrow array or chunked array (either shard format), a ``(B, C, T·200)`` or ``(B, C·T·200)``
    ndarray, or an object array / sequence of ``bytes`` (format 2 rows through Ray's numpy batches) or of
    ndarrays (format 1 mixed shapes).
    """
    n_channels = np.asarray(n_channels)
    n_seconds = None if n_seconds is None else np.asarray(n_seconds)
    if isinstance(signal, pa.ChunkedArray | pa.Array):
        chunks = signal.chunks if isinstance(signal, pa.ChunkedArray) else [signal]
        rows: list[np.ndarray] = []
        start = 0
        for chunk in chunks:
            end = start + len(chunk)
            if pa.types.is_large_binary(chunk.type):
                rows += _binary_rows(
                    chunk, n_channels[start:end], None if n_seconds is None else n_seconds[start:end]
                )
            elif isinstance(chunk.type, pa.FixedShapeTensorType):
                rows += list(chunk.to_numpy_ndarray())
            else:  # a plain list column (format 1 flattened by older readers)
                rows += [np.asarray(v) for v in chunk.to_numpy(zero_copy_only=False)]
            start = end
        return [r if r.ndim == 2 else r.reshape(int(c), -1) for r, c in zip(rows, n_channels, strict=True)]
    if isinstance(signal, np.ndarray) and signal.dtype != object:
        if signal.ndim == 3:  # (B, C, T) from format 1 shards of one shape
            return list(signal)
        if signal.ndim == 2:  # (B, C·T) flattened
            return [row.reshape(int(c), -1) for row, c in zip(signal, n_channels, strict=True)]
    out = []
    for i, (row, c) in enumerate(zip(signal, n_channels, strict=True)):
        if isinstance(row, bytes | bytearray | memoryview):
            dtype = _row_dtype(len(row), int(c), None if n_seconds is None else int(n_seconds[i]))
            out.append(np.frombuffer(row, dtype=dtype).reshape(int(c), -1))
        else:
            out.append(np.asarray(row).reshape(int(c), -1))
    return out


def batch_to_signals(batch: Mapping[str, Any] | pa.Table) -> list[np.ndarray]:
    """Per-sample ``(C, T·200)`` signals of a Ray Data batch (``map_batches`` with ``batch_format="numpy"`` or
    ``"pyarrow"``).

    Accepts every form Ray Data produces from our shards (see :func:`signal_rows`). Pure; no Ray.

    Parameters
    ----------
    batch : mapping or pyarrow.Table
        Column name → array, with at least ``signal`` and ``n_channels`` (and ``n_seconds`` for float16
        format 2 rows).

    Returns
    -------
    list of numpy.ndarray
        One ``(C, T·200)`` array per sample, in batch order (views where possible, no copy).
    """
    if isinstance(batch, pa.Table):
        n_seconds = batch.column("n_seconds").to_numpy() if "n_seconds" in batch.column_names else None
        return signal_rows(batch.column(SIGNAL_COLUMN), batch.column("n_channels").to_numpy(), n_seconds)
    return signal_rows(batch[SIGNAL_COLUMN], batch["n_channels"], batch.get("n_seconds"))


def table_to_signals(table: pa.Table) -> list[np.ndarray]:
    """Per-sample ``(C, T·200)`` signals of a table from :func:`read_shards` (either shard format)."""
    return batch_to_signals(table)


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


# The preprocessing a model's inputs went through, as far as a raw recording at prediction time must match it.
PREPROCESSING_KEYS = ("corpus", "dataset", "l_freq", "h_freq", "notch", "sfreq", "normalize", "trial_scale")


def split_preprocessing(split_uri: str) -> dict[str, Any] | None:
    """The preprocessing settings of the dataset a split directory (``<dataset>/train``) belongs to, from its
    manifest: :data:`PREPROCESSING_KEYS` and the config hash. None when the dataset has no readable manifest."""
    dataset_uri = posixpath.dirname(split_uri.rstrip("/"))
    try:
        manifest = read_manifest(dataset_uri)
    except (OSError, ValueError):
        return None
    cfg = manifest.get("config") or {}
    return {**{k: cfg.get(k) for k in PREPROCESSING_KEYS}, "config_hash": manifest.get("config_hash")}
