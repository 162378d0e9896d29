"""``neurolm preprocess``: raw recordings → Parquet sample shards, one Ray task per recording (docs/reference.md §1).

::

    neurolm preprocess --corpus edf --input S001R02.edf --output s3://bucket/shards [--config YAML] [key=value ...]
    python ray_jobs/preprocess.py --corpus tuab --input /data/tuab --output s3://bucket/shards split_seed=1

    summary = run_preprocess(load_config(PreprocessConfig, overrides=[...]))   # the pipeline job's API

The driver validates the config and checks that the output store is reachable *before* starting Ray, plans the
recordings (cheap: file names only), reuses every record committed by an earlier run with the same fingerprint,
runs the rest as Ray tasks with a progress bar, and finalises the dataset (see :mod:`neurolm.data.preprocessing` for
why a killed and rerun job ends with exactly the shards of a clean run). A bad recording is recorded in the
manifest and never stops the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from neurolm import runtime, storage
from neurolm.config import CORPORA, ConfigError, PreprocessConfig, load_config
from neurolm.data import preprocessing, shards
from neurolm.data.manifest_extra import manifest_extra
from neurolm.data.readers.base import RecordingTask
from neurolm.data.signal import RecordingError

__all__ = [
    "cli",
    "run_preprocess",
    "choose_executor",
    "validate_config",
    "build_config",
    "outcome_summary",
    "format_summary",
]

SUMMARY_REASONS = 3  # reasons shown per outcome in the console summary (all of them are in the manifest)
INLINE_MAX_BYTES = 32 * 2**20
"""``executor="auto"`` processes in this process when the recordings to do hold at most this many bytes (or are
one recording): starting a local Ray instance costs ~6 s, more than such a job takes on one core."""
LOCAL_OBJECT_STORE_BYTES = int(5e8)  # docs/platform.md §8: always cap the object store on small machines
MAX_IN_FLIGHT = 1000  # submitted but unfinished recording tasks (bounds driver memory on 30k-file corpora)


def validate_config(cfg: PreprocessConfig) -> None:
    """Cross-field checks that must hold before any resource is requested; raise :class:`ConfigError` naming
    the key, the value and what is allowed."""
    problems = []
    if not Path(cfg.input).expanduser().exists():
        problems.append(f"input = {cfg.input!r}: no such file or directory")
    if cfg.l_freq >= cfg.h_freq:
        problems.append(f"l_freq = {cfg.l_freq}: must be below h_freq = {cfg.h_freq}")
    if cfg.h_freq >= cfg.sfreq / 2:
        problems.append(
            f"h_freq = {cfg.h_freq}: must be below the target Nyquist frequency sfreq / 2 = {cfg.sfreq / 2}"
        )
    if cfg.sfreq != int(cfg.sfreq):
        problems.append(
            f"sfreq = {cfg.sfreq}: must be a whole number of samples per second (one patch = 1 s)"
        )
    if cfg.window_s is not None and cfg.window_s != int(cfg.window_s):
        problems.append(
            f"window_s = {cfg.window_s}: must be a whole number of seconds (samples are T x 1 s patches)"
        )
    if cfg.notch is not None and cfg.notch < 0:
        problems.append(
            f"notch = {cfg.notch}: must be a frequency in Hz, 0 to disable, or null for the corpus default"
        )
    if cfg.subject_regex is not None:
        try:
            re.compile(cfg.subject_regex)
        except re.error as err:
            problems.append(f"subject_regex = {cfg.subject_regex!r}: not a regular expression ({err})")
    try:
        storage.resolve(cfg.output)
    except storage.StorageError as err:
        problems.append(f"output = {cfg.output!r}: {err}")
    if problems:
        raise ConfigError("invalid preprocess config:\n  " + "\n  ".join(problems))


def _process_in_task(task: RecordingTask, cfg: PreprocessConfig, fingerprint: str) -> dict[str, Any]:
    return preprocessing.process_recording(task, cfg, fingerprint)


def _run_tasks(
    tasks: Sequence[tuple[RecordingTask, str]], cfg: PreprocessConfig, progress: bool
) -> list[dict[str, Any]]:
    """One Ray task per recording, at most :data:`MAX_IN_FLIGHT` submitted at a time, with a progress bar."""
    import ray  # imported only here: an in-process job never pays for it
    from tqdm.auto import tqdm

    remote = ray.remote(max_retries=1)(_process_in_task).options(num_cpus=cfg.num_cpus_per_task)
    queue = list(tasks)
    owner: dict[ray.ObjectRef, tuple[RecordingTask, str]] = {}
    records: list[dict[str, Any]] = []
    with tqdm(total=len(tasks), desc=f"preprocess {cfg.corpus}", unit="rec", disable=not progress) as bar:
        while queue or owner:
            while queue and len(owner) < MAX_IN_FLIGHT:
                task, fingerprint = queue.pop(0)
                owner[remote.remote(task, cfg, fingerprint)] = (task, fingerprint)
            # Collect whatever finished within the timeout: one O(n) wait per round, not per task.
            done, _ = ray.wait(list(owner), num_returns=len(owner), timeout=0.5)
            for ref in done:
                task, fingerprint = owner.pop(ref)
                try:
                    record = ray.get(ref)
                except (ray.exceptions.RayError, OSError) as err:  # worker died (OOM, killed node)
                    reason = f"task crashed: {type(err).__name__}: {err}"
                    record = preprocessing.failed_record(task, fingerprint, reason)
                records.append(record)
                bar.update(1)
                if record["status"] == "failed":
                    bar.write(f"failed: {record['reason']}")
    return records


def _run_inline(tasks: Sequence[tuple[RecordingTask, str]], cfg: PreprocessConfig) -> list[dict[str, Any]]:
    return [preprocessing.process_recording(task, cfg, fingerprint) for task, fingerprint in tasks]


def _notes(record: dict[str, Any]) -> list[str]:
    """What is worth a warning in a written recording: reader notes (truncated file, dropped labels...) and flat
    channels that were dropped."""
    notes = list(record.get("warnings") or [])
    if record.get("flat_channels"):
        notes.append(f"flat channel(s) {', '.join(record['flat_channels'])} dropped")
    return notes


def outcome_summary(records: Sequence[dict[str, Any]], limit: int = SUMMARY_REASONS) -> dict[str, Any]:
    """Counts of written / skipped / failed / warned (written, with notes) recordings and the first ``limit``
    reasons of each non-written outcome, as ``"<recording>: <reason>"``."""
    reasons: dict[str, list[str]] = {"skipped": [], "failed": [], "warned": []}
    warned = 0
    for record in records:
        name = str(record.get("recording", "?"))

        def named(reason: str, name: str = name) -> str:  # readers' reasons usually name the file already
            return reason if name in reason else f"{name}: {reason}"

        if record["status"] in ("skipped", "failed"):
            reasons[record["status"]].append(named(record.get("reason") or "no reason recorded"))
        elif notes := _notes(record):
            warned += 1
            reasons["warned"].extend(named(n) for n in notes)
    return {
        "written": sum(r["status"] == "written" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "warned": warned,
        "reasons": {k: v[:limit] for k, v in reasons.items() if v},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The console summary: one count line, then the first reasons per outcome (the manifest has them all)."""
    lines = [
        f"neurolm preprocess: {summary['recordings']} recording(s): {summary['written']} written, "
        f"{summary['skipped']} skipped, {summary['failed']} failed, {summary['warned']} warned "
        f"({summary.get('reused', 0)} reused from an earlier run)"
    ]
    for outcome in ("failed", "skipped", "warned"):
        shown = summary.get("reasons", {}).get(outcome, [])
        lines += [f"  {outcome}: {reason}" for reason in shown]
    if summary.get("reasons"):
        lines.append(f"  all reasons: {summary['manifest']}")
    return "\n".join(lines)


def choose_executor(cfg: PreprocessConfig, tasks: Sequence[RecordingTask]) -> Literal["ray", "inline"]:
    """``auto``: Ray when a cluster is already there (running, ``ray_address`` or ``RAY_ADDRESS``) or the job is
    big; in this process when it is one recording or at most :data:`INLINE_MAX_BYTES` of source files."""
    ray = sys.modules.get("ray")  # a running Ray was imported by whoever started it
    if (ray is not None and ray.is_initialized()) or cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    if len(tasks) <= 1:
        return "inline"
    size = 0
    for task in tasks:
        for source in task.sources:
            try:
                size += os.path.getsize(source)
            except OSError:  # not a local file (or gone): let the workers report it
                return "ray"
            if size > INLINE_MAX_BYTES:
                return "ray"
    return "inline"


def run_preprocess(
    cfg: PreprocessConfig,
    progress: bool = True,
    executor: Literal["ray", "inline", "auto"] = "ray",
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) a preprocessing job and return its summary.

    Parameters
    ----------
    cfg : PreprocessConfig
        The job; ``output`` may be a local directory or ``s3://bucket/prefix``.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    executor : {"ray", "inline", "auto"}
        ``ray``: one Ray task per recording (default). ``inline``: process in this process, one after the other
        (small jobs, debugging, tests without a cluster); the output is identical. ``auto``: see
        :func:`choose_executor`.
    num_cpus : int, optional
        CPUs of a local Ray instance started for this job (default: all).

    Returns
    -------
    dict
        ``dataset``, ``output`` (the dataset URI), ``manifest`` (its URI), ``recordings``, ``written``,
        ``skipped``, ``failed``, ``warned`` (written with notes: truncated, flat channels...), ``reasons`` (the
        first few per outcome), ``reused`` (records kept from an earlier run), ``samples`` per split,
        ``shards``, ``source_seconds``, ``cpu_s`` (summed over this run's tasks), ``wall_s``.

    Raises
    ------
    ConfigError
        Invalid config (nothing was started).
    StorageError
        The output store is unreachable or refuses us.
    RecordingError
        The input does not look like the corpus (no recording found).
    """
    start = time.perf_counter()
    validate_config(cfg)
    storage.check_reachable(cfg.output)
    tasks = preprocessing.plan(cfg)
    if not tasks:
        raise RecordingError(cfg.input, f"no recordings found for corpus {cfg.corpus!r}")
    dataset = tasks[0].dataset
    target = preprocessing.dataset_uri(cfg, dataset)
    previous = preprocessing.read_records(target)
    present = set(shards.list_shards(target)) if previous else set()
    reused, todo = [], []
    for task in tasks:
        fingerprint = preprocessing.task_fingerprint(task, cfg)
        old = previous.get(shards.recording_key(task.recording))
        if (
            old
            and old.get("fingerprint") == fingerprint
            and old.get("status") in preprocessing.FINAL_STATUSES
            and all(storage.join(target, s["path"]) in present for s in old.get("shards", []))
        ):
            reused.append(old)
        else:
            todo.append((task, fingerprint))
    fresh: list[dict[str, Any]] = []
    if executor == "auto":
        executor = choose_executor(cfg, [task for task, _ in todo])
    if todo and executor == "inline":
        fresh = _run_inline(todo, cfg)
    elif todo:
        # One task per recording: no dashboard needed, and worker logs stay out of the progress bar.
        started = runtime.ensure_ray(
            cfg.ray_address, include_dashboard=False, log_to_driver=False, local_num_cpus=num_cpus,
            local_object_store_bytes=LOCAL_OBJECT_STORE_BYTES,
        )
        try:
            fresh = _run_tasks(todo, cfg, progress)
        finally:
            if started:
                import ray

                ray.shutdown()
    wall_s = round(time.perf_counter() - start, 3)
    cpu_s = round(sum(r.get("cpu_s", 0.0) for r in fresh), 3)
    manifest = preprocessing.finalize(cfg, dataset, reused + fresh, extra=manifest_extra(cfg, tasks))
    return {
        "dataset": dataset,
        "output": target,
        "manifest": shards.manifest_uri(target),
        **manifest["summary"],
        **outcome_summary(reused + fresh),
        "reused": len(reused),
        "processed": len(fresh),
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "executor": executor if todo else "none",
    }


def _quoted(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string: paths stay strings whatever they contain


def build_config(argv: Sequence[str]) -> tuple[PreprocessConfig, argparse.Namespace]:
    """Parse ``neurolm preprocess`` arguments into a validated config (flags win over the YAML preset; dotted
    ``key=value`` overrides win over both)."""
    parser = argparse.ArgumentParser(
        prog="neurolm preprocess",
        description="Raw EEG recordings -> Parquet sample shards (local directory or s3://bucket/prefix).",
    )
    parser.add_argument("--corpus", choices=CORPORA, help="corpus reader")
    parser.add_argument("--input", help="corpus root directory (or one file for --corpus edf)")
    parser.add_argument("--output", help="output directory or s3://bucket/prefix")
    parser.add_argument("--dataset", help="dataset name (default: the corpus name)")
    parser.add_argument("--config", help="YAML preset (PreprocessConfig keys)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 if any recording failed")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="0: process in this process, no Ray; N: a local Ray with N CPUs (ignored when joining a cluster); "
        "default: in this process for one recording or a few MB of input, else Ray with every CPU",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. split_seed=1 notch=60")
    args = parser.parse_args(list(argv))
    flags = [f"{key}={_quoted(getattr(args, key))}" for key in ("corpus", "input", "output", "dataset")
             if getattr(args, key) is not None]  # fmt: skip
    return load_config(PreprocessConfig, args.config, flags + list(args.overrides)), args


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``neurolm preprocess``; returns 0 when the run completed (failed recordings are listed
    in the manifest; with ``--strict`` they give 3). A storage or input error (1) and a config error (2) are
    raised and mapped by :func:`neurolm.cli.run_command`."""
    cfg, args = build_config(sys.argv[1:] if argv is None else argv)
    validate_config(cfg)
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers = {args.workers}: must be 0 (in-process) or a CPU count")
    executor = "auto" if args.workers is None else "inline" if args.workers == 0 else "ray"
    summary = run_preprocess(cfg, progress=not args.no_progress, executor=executor, num_cpus=args.workers or None)
    print(json.dumps(summary, indent=1))
    print(format_summary(summary), file=sys.stderr)
    if summary["failed"]:
        return 3 if args.strict else 0
    return 0

