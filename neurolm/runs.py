"""Look at runs, fetch artefacts and remove what is no longer needed: ``neurolm runs list|show|rm`` and
``neurolm s3 get``.

A run is a directory ``<storage_path>/<run name>/`` written by a training stage (:mod:`neurolm.train`):
``metrics.jsonl`` (one JSON object per report, rank 0), ``step_<n>/state.json`` (the step and config of each
kept checkpoint, beside its DeepSpeed files), ``export/config.json`` (the consolidated weights) and ``final_metrics.json``. Everything is
read through :mod:`neurolm.storage`, so a local directory and an ``s3://`` prefix work the same way.

For ``s3://`` URIs without ``AWS_ENDPOINT_URL`` in the environment, the local S3 server of ``--s3-dir``
(default ``.cache/s3``, the demo's) is used: the running one if there is one, else one started for the command.

``neurolm runs rm TARGET --yes`` removes every object below a run, a pipeline workdir or any prefix (without
``--yes`` it only says what it would remove); on the local server the disk space is reclaimed at once (its
volumes are vacuumed), since every pipeline run adds a few GB that nothing else removes (docs/platform.md §4).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import posixpath
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurolm import storage
from neurolm.progress import _fmt, format_table

# Metrics shown in tables, in this order, when a run reports them.
_KEY_METRICS = (
    "train/loss",
    "train/rec_loss",
    "train/eeg_loss",
    "train/text_loss",
    "val/loss",
    "val/mean_balanced_accuracy",
    "perf/samples_per_s",
)


def _rel(root: str, uri: str) -> str:
    """``uri`` relative to ``root`` with ``/`` separators, for local paths and s3:// alike."""
    base = root[5:].rstrip("/") if storage.is_s3(root) else os.path.abspath(root)
    path = uri[5:] if storage.is_s3(uri) else os.path.abspath(uri)
    return posixpath.relpath(path.replace(os.sep, "/"), base.replace(os.sep, "/"))


def _read_json(uri: str) -> Any:
    try:
        return json.loads(storage.read_text(uri))
    except (storage.StorageError, json.JSONDecodeError):
        return None


def read_metrics(run_uri: str) -> list[dict[str, Any]]:
    """Every report of a run (``metrics.jsonl``), oldest first; [] when the run has not reported yet."""
    uri = storage.join(run_uri, "metrics.jsonl")
    try:
        text = storage.read_text(uri)
    except storage.StorageError:
        return []
    rows = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def _last_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of every metric over the history (validation is reported less often than training)."""
    last: dict[str, Any] = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if not k.startswith("_")})
    return last


def describe_run(
    run_uri: str, files: list[str] | None = None, sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """Stage, step, last metrics, checkpoints, export and size of one run directory.

    ``files`` (every file below the run, from one listing of its parent) and their ``sizes`` save a listing per run.
    """
    if files is None:
        listed = storage.list_file_sizes(run_uri)
        files, sizes = [f for f, _ in listed], dict(listed)
    rel = [_rel(run_uri, f) for f in files]
    rows = read_metrics(run_uri) if "metrics.jsonl" in rel else []
    checkpoints = []
    stage = None
    # A checkpoint is a directory with a state.json sidecar (named step_<n> by the training loop).
    for name in sorted({r.split("/", 1)[0] for r in rel if r.count("/") == 1 and r.endswith("/state.json")}):
        state = _read_json(storage.join(run_uri, name, "state.json")) or {}
        stage = stage or (state.get("config") or {}).get("stage")
        checkpoints.append(
            {
                "name": name,
                "uri": storage.join(run_uri, name),
                "step": state.get("step"),
                "epoch": state.get("epoch"),
                "samples": state.get("samples"),
            }
        )
    checkpoints.sort(key=lambda c: (c["step"] is None, c["step"] or 0))
    export = None
    if "export/config.json" in rel:
        export_cfg = _read_json(storage.join(run_uri, "export", "config.json")) or {}
        export = {
            "uri": storage.join(run_uri, "export"),
            "files": sorted(r.removeprefix("export/") for r in rel if r.startswith("export/")),
            "kind": export_cfg.get("kind") or export_cfg.get("stage"),
        }
        stage = stage or export["kind"]
    final = _read_json(storage.join(run_uri, "final_metrics.json")) if "final_metrics.json" in rel else None
    last = _last_values(rows)
    step = last.get("step")
    if step is None and checkpoints:
        step = checkpoints[-1]["step"]
    if stage is None and rows:
        stage = rows[-1].get("stage")
    return {
        "name": posixpath.basename(run_uri.rstrip("/")),
        "uri": run_uri,
        "stage": stage,
        "step": step,
        "reports": len(rows),
        "last_metrics": last,
        "checkpoints": checkpoints,
        "export": export,
        "final_metrics": final,
        "bytes": sum((sizes or {}).get(f, 0) for f in files),
    }


def _runs_root(uri: str, files: list[str]) -> str:
    """A pipeline workdir holds its runs under ``runs/``; any other directory is taken as the runs root."""
    if any(_rel(uri, f).startswith("runs/") for f in files):
        return storage.join(uri, "runs")
    return uri


def list_runs(uri: str) -> list[dict[str, Any]]:
    """Every run below ``uri`` (a run storage path, or a pipeline workdir and its ``runs/``), by name."""
    listed = storage.list_file_sizes(uri)
    files, sizes = [f for f, _ in listed], dict(listed)
    root = _runs_root(uri, files)
    by_run: dict[str, list[str]] = {}
    for f in files:
        parts = _rel(root, f).split("/")
        if len(parts) >= 2 and parts[0] not in ("..", "."):
            by_run.setdefault(parts[0], []).append(f)
    runs = []
    for name, run_files in sorted(by_run.items()):
        names = {_rel(storage.join(root, name), f) for f in run_files}
        if (
            "metrics.jsonl" in names
            or "export/config.json" in names
            or any(n.count("/") == 1 and n.endswith("/state.json") for n in names)
        ):
            runs.append(describe_run(storage.join(root, name), run_files, sizes))
    return runs


def _metric_summary(last: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(last[k])}" for k in _KEY_METRICS if k in last)


def format_runs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs found"
    rows = [
        [
            r["name"],
            r["stage"],
            r["step"],
            len(r["checkpoints"]),
            "yes" if r["export"] else "no",
            _size(r.get("bytes", 0)),
            _metric_summary(r["last_metrics"]),
        ]
        for r in runs
    ]
    return format_table(["run", "stage", "step", "ckpts", "export", "size", "last metrics"], rows)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def remove(target: str, yes: bool, s3_dir: str | None = None) -> tuple[int, int, bool]:
    """Remove every file below ``target`` (``yes``), or only count them. Returns (files, bytes, vacuumed): with
    ``s3_dir`` the local server running there, when it is the endpoint in use, is vacuumed afterwards, so its disk
    space comes back at once.

    A whole bucket (``s3://name``) or a filesystem root is refused: one typo away from every run."""
    bare = target.rstrip("/")
    if (storage.is_s3(bare) and "/" not in bare[5:]) or (not storage.is_s3(bare) and Path(bare or "/").resolve() in (
        Path("/"), Path.home().resolve(), Path.cwd().resolve())):
        raise storage.StorageError(f"{target}: refusing to remove a whole bucket, /, ~ or the current directory")
    listed = storage.list_file_sizes(target)
    total = sum(n for _, n in listed)
    vacuumed = False
    if yes and listed:
        storage.delete_tree(target)
        if s3_dir is not None and storage.is_s3(target):
            from neurolm.runtime.s3server import S3ServerError, vacuum_running

            try:
                vacuumed = vacuum_running(s3_dir, total, endpoint=os.environ.get("AWS_ENDPOINT_URL"))
            except S3ServerError as err:
                raise storage.StorageError(f"removed {len(listed)} files below {target}, but {err}") from err
    return len(listed), total, vacuumed


def format_run(run: dict[str, Any]) -> str:
    out = [
        f"run     {run['name']}  ({run['uri']})",
        f"stage   {_fmt(run['stage'])}",
        f"step    {_fmt(run['step'])}  ({run['reports']} reports in metrics.jsonl)",
    ]
    last = {k: v for k, v in run["last_metrics"].items() if k != "step"}
    if last:
        out += ["", format_table(["metric", "last value"], [[k, v] for k, v in sorted(last.items())])]
    if run["checkpoints"]:
        out += [
            "",
            format_table(
                ["checkpoint", "step", "epoch", "samples"],
                [[c["name"], c["step"], c["epoch"], c["samples"]] for c in run["checkpoints"]],
            ),
        ]
    else:
        out += ["", "checkpoints: none"]
    if run["export"]:
        out += ["", f"export  {run['export']['uri']}: {', '.join(run['export']['files'])}"]
    if run.get("bytes"):
        out += [f"size    {_size(run['bytes'])}"]
    return "\n".join(out)


def copy_tree(uri: str, dest: str | Path) -> list[Path]:
    """Copy one object/file, or every file below a prefix/directory, to the local ``dest``.

    A single file lands at ``dest`` (or inside it when ``dest`` is an existing directory); a prefix keeps its
    layout below ``dest``.
    """
    import pyarrow.fs as pafs

    dest = Path(dest)
    fs, path = storage.resolve(uri)
    try:
        kind = fs.get_file_info(path).type
    except OSError as err:
        raise storage.StorageError(f"{uri}: {err}") from err
    files = storage.list_files(uri) if kind == pafs.FileType.Directory else []
    if not files:
        if kind != pafs.FileType.File:
            raise storage.StorageError(f"{uri}: no such object, file or prefix")
        target = dest / posixpath.basename(uri.rstrip("/")) if dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(uri))
        return [target]
    written = []
    for f in files:
        target = dest / _rel(uri, f)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(f))
        written.append(target)
    return written


@contextlib.contextmanager
def s3_access(uri: str, s3_dir: str) -> Iterator[None]:
    """Make ``s3://`` URIs readable: the configured endpoint, else the local server of ``s3_dir`` (the running
    one, or one started for the duration of the command)."""
    if not storage.is_s3(uri) or os.environ.get("AWS_ENDPOINT_URL"):
        yield
        return
    from neurolm.runtime.s3server import _STATE_FILE, LocalS3Server

    state_file = Path(s3_dir) / _STATE_FILE
    running = _read_json(str(state_file)) if state_file.exists() else None
    if running is not None:
        try:
            os.kill(running["pid"], 0)
        except (ProcessLookupError, KeyError, TypeError):
            running = None
    saved = dict(os.environ)
    server = None
    try:
        if running is not None:
            os.environ.update({k: v for k, v in running.items() if k.startswith("AWS_")})
        else:
            if not Path(s3_dir).is_dir():
                raise storage.StorageError(
                    f"{uri}: AWS_ENDPOINT_URL is not set and there is no local S3 data directory {s3_dir!r} "
                    "(pass --s3-dir, or export the AWS_* variables of your server)"
                )
            server = LocalS3Server(s3_dir, bucket=uri[5:].split("/", 1)[0]).start()
            os.environ.update(server.env())
        yield
    finally:
        if server is not None:
            server.stop()
        os.environ.clear()
        os.environ.update(saved)


def runs_cli(argv: list[str] | None = None) -> int:
    """``neurolm runs list [ROOT] | show RUN`` (local directory or s3:// prefix)."""
    parser = argparse.ArgumentParser(
        prog="neurolm runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p_list = sub.add_parser("list", help="every run below ROOT (a run storage path or a pipeline workdir)")
    p_list.add_argument("root", nargs="?", default="s3://neurolm/demo")
    p_show = sub.add_parser("show", help="one run: stage, step, last metrics, checkpoints, export")
    p_show.add_argument("run", help="the run directory, e.g. s3://neurolm/demo/runs/demo-instruct")
    p_rm = sub.add_parser("rm", help="remove every file below a run, a pipeline workdir or a prefix")
    p_rm.add_argument("target", help="e.g. s3://neurolm/demo (a workdir) or s3://neurolm/demo/runs/demo-instruct")
    p_rm.add_argument("--yes", action="store_true", help="remove (without it: only say what would be removed)")
    for p in (p_list, p_show, p_rm):
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument(
            "--s3-dir", default=".cache/s3", help="local S3 server data dir when AWS_ENDPOINT_URL is unset"
        )
    args = parser.parse_args(argv)
    target = {"list": getattr(args, "root", None), "show": getattr(args, "run", None)}.get(args.action) or args.target
    result: Any
    try:
        with s3_access(target, args.s3_dir):
            if args.action == "rm":
                n_files, size, vacuumed = remove(target, args.yes, args.s3_dir)
                result = {"target": target, "files": n_files, "bytes": size, "removed": args.yes and n_files > 0,
                          "vacuumed": vacuumed}  # fmt: skip
                if not n_files:
                    text = f"{target}: nothing there"
                elif args.yes:
                    text = f"removed {n_files} files ({_size(size)}) below {target}" + (
                        "; the local S3 server's disk space reclaimed" if vacuumed else ""
                    )
                else:
                    text = f"would remove {n_files} files ({_size(size)}) below {target}; pass --yes to remove them"
            elif args.action == "list":
                result = list_runs(target)
                text = format_runs(result)
            else:
                listed = storage.list_file_sizes(target)
                if not listed:
                    print(f"neurolm runs show: run={target!r}: no files there", file=sys.stderr)
                    return 2
                result = describe_run(target, [f for f, _ in listed], dict(listed))
                text = format_run(result)
    except storage.StorageError as err:
        print(f"neurolm runs: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str) if args.json else text)
    return 0


def s3_cli(argv: list[str] | None = None) -> int:
    """``neurolm s3 get URI DEST``; ``neurolm s3 start|stop|status`` run the local server (neurolm.runtime.s3server)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "get":
        from neurolm.runtime.s3server import main

        return main(argv)
    parser = argparse.ArgumentParser(
        prog="neurolm s3 get", description="Copy an object, or every object below a prefix, to a local path."
    )
    parser.add_argument("uri", help="s3://bucket/key or s3://bucket/prefix/ (a local path works too)")
    parser.add_argument("dest", help="local file or directory")
    parser.add_argument(
        "--s3-dir", default=".cache/s3", help="local S3 server data dir when AWS_ENDPOINT_URL is unset"
    )
    args = parser.parse_args(argv[1:])
    try:
        with s3_access(args.uri, args.s3_dir):
            written = copy_tree(args.uri, args.dest)
    except storage.StorageError as err:
        print(f"neurolm s3 get: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
