"""Input checks that run on the driver before any Ray resource is requested: shard directories exist, hold
Parquet files and follow their schema. Each failure is a :class:`~neurolm.config.ConfigError` of one line that
names the config key and its value (the CLIs print it and exit 2)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from neurolm import storage
from neurolm.config import ConfigError
from neurolm.data import shards

__all__ = ["as_uris", "check_shard_inputs", "check_text_inputs"]


def as_uris(value: str | Sequence[str] | None) -> list[str]:
    """A config value that is one URI, a list of URIs or None, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _parquet_files(key: str, uri: str) -> list[str]:
    """The ``.parquet`` files below ``uri``; ConfigError when the store, the directory or the files are missing."""
    try:
        storage.check_reachable(uri)
        if not storage.is_s3(uri) and not storage.exists(uri):
            raise ConfigError(f"{key} = {uri!r}: no such directory")
        files = storage.list_files(uri, suffix=".parquet")
    except storage.StorageError as err:
        raise ConfigError(f"{key} = {uri!r}: {err}") from None
    if not files:
        raise ConfigError(f"{key} = {uri!r}: no .parquet shards found (write them with `neurolm preprocess`)")
    return files


def _schema(key: str, uri: str, file: str) -> pa.Schema:
    try:
        fs, path = storage.resolve(file)
        return pq.read_schema(path, filesystem=fs)
    except (OSError, pa.ArrowException, storage.StorageError) as err:
        raise ConfigError(f"{key} = {uri!r}: {file} is not a readable Parquet file ({err})") from None


def check_shard_inputs(key: str, value: str | Sequence[str] | None, *, required: bool = True) -> list[str]:
    """Check EEG sample shard directories: each exists, holds ``.parquet`` files, and the first file of each
    follows the sample schema (:func:`neurolm.data.shards.validate_table`; only the footer is read).

    Parameters
    ----------
    key : str
        The config key, for the message (``data.train``, ``tasks[0].train``).
    value : str, list of str or None
        One or more directory URIs (local or ``s3://``).
    required : bool
        An empty value is an error.

    Returns
    -------
    list of str
        The directory URIs.
    """
    uris = as_uris(value)
    if required and not uris:
        raise ConfigError(f"{key} = {value!r}: no shards given; set {key}=[<directory of part-*.parquet>]")
    for uri in uris:
        if not isinstance(uri, str) or not uri:
            raise ConfigError(f"{key} = {value!r}: every entry must be a non-empty directory URI")
        first = _parquet_files(key, uri)[0]
        try:
            shards.validate_table(_schema(key, uri, first), first)
        except shards.ShardSchemaError as err:
            raise ConfigError(f"{key} = {uri!r}: not sample shards: {err}") from None
    return uris


def check_text_inputs(key: str, value: str | None) -> None:
    """Check a GPT-2 token shard directory (``neurolm text prepare``): Parquet files with a ``tokens`` column."""
    if value is None:
        return
    first = _parquet_files(key, value)[0]
    schema = _schema(key, value, first)
    if "tokens" not in schema.names:
        raise ConfigError(
            f"{key} = {value!r}: not text shards: {first} has no 'tokens' column (have {schema.names}); "
            "write them with `neurolm text prepare`"
        )
