"""One place that turns URIs into file systems: ``s3://bucket/key`` and local paths (``/x``, ``file:///x``).

The S3 endpoint and credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``) or from the shared AWS config that boto3 reads; never from code. The same settings are
handed to pyarrow (Ray Data, Parquet) and boto3 (bucket management, small objects), and can be forwarded to Ray
workers with :func:`storage_env`.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

__all__ = [
    "StorageError",
    "S3Settings",
    "is_s3",
    "bucket_of",
    "slug",
    "join",
    "resolve",
    "exists",
    "read_bytes",
    "write_bytes",
    "read_text",
    "write_text",
    "list_files",
    "delete_tree",
    "storage_env",
    "boto3_client",
    "ensure_bucket",
    "check_reachable",
    "ray_storage",
    "retry_budget_s",
    "retry_attempts",
    "RETRY_BUDGET_ENV",
    "RetryingS3FileSystem",
    "unreachable_cause",
    "outage_error",
]

_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "NEUROLM_S3_RETRY_BUDGET_S",
)

RETRY_BUDGET_ENV = "NEUROLM_S3_RETRY_BUDGET_S"
DEFAULT_RETRY_BUDGET_S = 60.0
_RETRY_BASE_S = 0.025  # the AWS SDK's default strategy waits 25 ms x 2^n before retry n


def retry_attempts(budget_s: float) -> int:
    """Retries of the AWS SDK's default strategy (waits 25 ms x 2^n, no retry quota) whose waits add up to at
    least ``budget_s``: an object store that is back within the budget is never noticed by the caller."""
    attempts, waited = 0, 0.0
    while waited < budget_s:
        waited += _RETRY_BASE_S * 2**attempts
        attempts += 1
    return max(attempts, 1)


def boto3_retry_attempts(budget_s: float) -> int:
    """Retries of botocore's standard mode (waits uniform in [0, min(2^n, 20)] s) whose expected waits add up
    to ``budget_s``."""
    attempts, waited = 0, 0.0
    while waited < budget_s:
        waited += min(2.0**attempts, 20.0) / 2
        attempts += 1
    return max(attempts, 1)


def retry_budget_s() -> float:
    """How long S3 may be unreachable before an operation fails (``NEUROLM_S3_RETRY_BUDGET_S``, default 60 s)."""
    raw = os.environ.get(RETRY_BUDGET_ENV)
    if not raw:
        return DEFAULT_RETRY_BUDGET_S
    try:
        value = float(raw)
    except ValueError:
        raise StorageError(f"{RETRY_BUDGET_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise StorageError(f"{RETRY_BUDGET_ENV}={raw!r} must be >= 0")
    return value


class StorageError(OSError):
    """An object or directory is missing, or the object store is unreachable or refuses us (names the URI)."""


@dataclass(frozen=True)
class S3Settings:
    """S3 connection settings read from the standard AWS environment variables."""

    endpoint_url: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    region: str

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def describe(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def bucket_of(uri: str) -> str:
    """The bucket of an ``s3://bucket/key`` URI."""
    if not is_s3(uri):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    return str(uri)[5:].split("/", 1)[0]


def slug(name: str) -> str:
    """``name`` made safe for file names and CSV columns (runs of other characters become ``_``)."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    if not out:
        raise ValueError(f"{name!r} has no characters usable in a file name")
    return out


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or local path with ``/``."""
    if is_s3(uri):
        return "s3://" + posixpath.join(str(uri)[5:].rstrip("/"), *parts)
    return str(Path(_local_path(uri), *parts))


def _local_path(uri: str) -> str:
    uri = str(uri)
    if uri.startswith("file://"):
        return urlparse(uri).path
    return os.path.abspath(os.path.expanduser(uri))


class RetryingS3FileSystem(pafs.S3FileSystem):
    """A pyarrow ``S3FileSystem`` with the AWS SDK's default retry strategy that keeps it when pickled.

    pyarrow pickles an ``S3FileSystem`` without its retry strategy, so every copy unpickled in a Ray process (Ray
    Data read tasks, Ray Train's checkpoint uploads through ``RunConfig(storage_filesystem=...)``) would fall back
    to pyarrow's default (the standard strategy, 3 attempts) and fail within about two seconds of an outage
    (docs/resilience.md, "The retry budget"). This one is rebuilt with the same number of attempts.
    """

    def __init__(self, retry_attempts: int, **options: Any) -> None:
        # The default strategy (plain exponential backoff) rather than the standard one: the standard strategy's
        # retry quota runs dry during an outage of more than a few seconds and then fails at once.
        super().__init__(
            retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=retry_attempts), **options
        )
        self.retry_attempts = retry_attempts
        self._options = dict(options)

    def __reduce__(self) -> tuple[Any, tuple[int, dict[str, Any]]]:
        return _rebuild_s3_filesystem, (self.retry_attempts, self._options)


def _rebuild_s3_filesystem(retry_attempts: int, options: dict[str, Any]) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(retry_attempts, **options)


def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict = {
        "region": settings.region,
        "connect_timeout": 5.0,
        "request_timeout": 60.0,
    }
    if settings.access_key:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key)
        if settings.session_token:
            kwargs["session_token"] = settings.session_token
    if settings.endpoint_url:
        parsed = urlparse(settings.endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(
                f"AWS_ENDPOINT_URL={settings.endpoint_url!r} is not an http(s)://host:port URL"
            )
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    return RetryingS3FileSystem(retry_attempts(retry_budget_s()), **kwargs)


def resolve(uri: str, *, memory_map: bool = False) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a URI: ``s3://b/k`` → (S3FileSystem, ``b/k``); else the local path.

    ``memory_map``: a local file system that memory-maps the files it opens for reading, so that Arrow reads a
    Parquet file straight from the page cache instead of copying it into a buffer first (one pass over every
    byte fewer: half the read time of a shard file, docs/platform.md §4). For files that are only ever replaced
    whole, as :func:`write_bytes` does: a file truncated in place under a mapping faults its reader."""
    if is_s3(uri):
        path = str(uri)[5:].rstrip("/")
        if not path or path.startswith("/"):
            raise StorageError(f"{uri!r} names no bucket")
        return _s3_filesystem(S3Settings.from_env()), path
    if "://" in str(uri) and not str(uri).startswith("file://"):
        raise StorageError(f"{uri!r}: only s3:// URIs and local paths are supported")
    return pafs.LocalFileSystem(use_mmap=memory_map), _local_path(uri)


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig`` with our S3 settings."""
    fs, path = resolve(uri)
    return (path, fs) if is_s3(uri) else (path, None)


def _wrap(uri: str, err: Exception) -> StorageError:
    where = f" at {S3Settings.from_env().describe()}" if is_s3(uri) else ""
    return StorageError(f"{uri}{where}: {err}")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise _wrap(uri, err) from err


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{uri}: no such object or file")
        with fs.open_input_stream(path) as f:
            return f.read()
    except StorageError:
        raise
    except OSError as err:
        raise _wrap(uri, err) from err


def write_bytes(uri: str, data: bytes) -> None:
    """Write an object or file whole. Local writes go through a temp file and a rename (never half-written);
    an S3 PUT is atomic per object."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)
    except OSError as err:
        raise _wrap(uri, err) from err


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str, suffix: str = "", recursive: bool = True) -> list[str]:
    """Files below a directory/prefix as URIs of the same kind, sorted; [] when the prefix does not exist."""
    return [f for f, _ in list_file_sizes(uri, suffix, recursive)]


def list_file_sizes(uri: str, suffix: str = "", recursive: bool = True) -> list[tuple[str, int]]:
    """(URI, size in bytes) of the files below a directory/prefix, sorted by URI; [] when it does not exist."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except OSError as err:
        raise _wrap(uri, err) from err
    out = []
    for info in infos:
        if info.type == pafs.FileType.File and info.path.endswith(suffix):
            out.append(("s3://" + info.path if is_s3(uri) else info.path, int(info.size or 0)))
    return sorted(out)


def delete_tree(uri: str) -> None:
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
    except OSError as err:
        raise _wrap(uri, err) from err


# What the S3 clients say when they gave up reaching the endpoint (pyarrow/AWS SDK, botocore), as opposed to an
# answer from the server (missing key, refused credentials).
_UNREACHABLE = re.compile(
    r"AWS Error NETWORK_CONNECTION|curlCode: (6|7|28)\b|Could not connect to the endpoint URL|Connect timeout on endpoint"
)


def unreachable_cause(err: BaseException) -> BaseException | None:
    """The error inside ``err`` that says the object store could not be reached, or None.

    Looks through causes and contexts and through what Ray wraps around a failed run (Ray Train's
    ``WorkerGroupError.worker_failures``, ``ControllerError.controller_failure``, a task error's ``cause``),
    without importing Ray."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        client_error = isinstance(current, OSError) or type(current).__module__.startswith("botocore")
        if client_error and _UNREACHABLE.search(str(current)):
            return current
        nested = [current.__cause__, current.__context__, getattr(current, "cause", None),
                  getattr(current, "controller_failure", None),
                  *(getattr(current, "worker_failures", None) or {}).values()]  # fmt: skip
        todo += [e for e in nested if isinstance(e, BaseException)]
    return None


def outage_error(run: str, cause: BaseException) -> StorageError:
    """One line for a run stopped by an object store unreachable for longer than the retry budget: the endpoint,
    the budget and how to continue (docs/resilience.md)."""
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    return StorageError(
        f"object storage at {S3Settings.from_env().describe()} unreachable for longer than the retry budget "
        f"({RETRY_BUDGET_ENV}={retry_budget_s():g} s); {run} stopped. Rerun it with the same name when the storage "
        f"is back: it resumes from its latest checkpoint. Last error: {first}"
    )


def storage_env() -> dict[str, str]:
    """The AWS variables of this process, to forward to Ray workers via ``runtime_env={"env_vars": ...}``."""
    return {k: os.environ[k] for k in _ENV_KEYS if os.environ.get(k)}


# Pre-flight checks (before any Ray resource is requested) fail fast instead of waiting out the retry budget.
_PREFLIGHT_BUDGET_S = 2.0


_BOTO3 = threading.local()


def boto3_client(budget_s: float | None = None):
    """A boto3 S3 client with the same settings as the pyarrow file system; retries for ``budget_s`` seconds
    (default: :func:`retry_budget_s`)."""
    import boto3
    from botocore.config import Config

    s = S3Settings.from_env()
    budget = retry_budget_s() if budget_s is None else budget_s
    # One session per thread: boto3's sessions (the default one too) are not thread-safe, and a pipeline's
    # side-by-side runs (members_at_once) make clients from several threads; a new session per client would
    # cost ~0.1 s of loading botocore's models each time.
    session = getattr(_BOTO3, "session", None)
    if session is None:
        session = _BOTO3.session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=s.endpoint_url,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        aws_session_token=s.session_token,
        region_name=s.region,
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "total_max_attempts": 1 + boto3_retry_attempts(budget)},
        ),
    )


def ensure_bucket(bucket: str) -> None:
    """Create a bucket if it does not exist (idempotent)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    client = boto3_client(_PREFLIGHT_BUDGET_S)
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"s3://{bucket} at {S3Settings.from_env().describe()}: {err}") from err
    except EndpointConnectionError as err:
        raise StorageError(f"s3://{bucket}: cannot reach {S3Settings.from_env().describe()}: {err}") from err
    client.create_bucket(Bucket=bucket)


def check_reachable(uri: str) -> None:
    """Fail fast, naming the endpoint, if an ``s3://`` URI's bucket cannot be reached or read."""
    if not is_s3(uri):
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = bucket_of(uri)
    try:
        boto3_client(_PREFLIGHT_BUDGET_S).head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        hint = "the bucket does not exist" if code in ("404", "NoSuchBucket", "NotFound") else str(err)
        raise StorageError(f"{uri}: {hint} (endpoint {S3Settings.from_env().describe()})") from err
    except BotoCoreError as err:
        raise StorageError(f"{uri}: cannot reach {S3Settings.from_env().describe()}: {err}") from err
