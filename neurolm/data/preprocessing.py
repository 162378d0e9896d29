"""Preprocessing as plain functions: plan the recordings, process one, finalise the dataset (no Ray here).

:mod:`neurolm.preprocess` runs :func:`process_recording` as one Ray task per recording; tests and the benchmark
call it directly. The resumability contract (idempotent and resumable; docs/architecture.md, "Contracts") rests
on three facts:

1. a recording's shards and record depend only on its files and the config (its *fingerprint*);
2. a recording commits by writing its record ``_records/<key>.json`` *after* its shards, each object whole;
3. :func:`finalize` deletes every shard and record no current record accounts for, then writes
   ``_manifest.json``.

So a rerun reuses every record whose fingerprint matches (status ``written`` or ``skipped``; ``failed`` ones are
retried), redoes the rest, and ends with exactly the files a clean run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from neurolm import storage
from neurolm.config import PreprocessConfig, config_hash
from neurolm.config_preprocess import TsOptions
from neurolm.data import leakage, shards
from neurolm.data.readers import get_reader
from neurolm.data.readers.base import RecordingTask
from neurolm.data.signal import RecordingError

__all__ = [
    "PREPROCESSING_VERSION",
    "FINAL_STATUSES",
    "dataset_uri",
    "plan",
    "task_fingerprint",
    "process_recording",
    "failed_record",
    "read_records",
    "finalize",
    "summarize",
]

# Bump when a change to the processing would change shards: every fingerprint changes and all is redone.
PREPROCESSING_VERSION = 1
FINAL_STATUSES = ("written", "skipped")  # outcomes a rerun reuses; "failed" is retried
# Config fields that cannot change a shard's content.
_RUN_ONLY_FIELDS = ("output", "input", "ray_address", "num_cpus_per_task", "max_files", "leakage")


def dataset_uri(cfg: PreprocessConfig, dataset: str) -> str:
    return storage.join(cfg.output, dataset)


def plan(cfg: PreprocessConfig) -> list[RecordingTask]:
    """The recordings of a run in a deterministic order (at most ``cfg.max_files``); raises RecordingError if
    the input does not look like the corpus."""
    tasks = leakage.guard(cfg, get_reader(cfg.corpus).list_recordings(cfg))
    keys = [shards.recording_key(t.recording) for t in tasks]
    if len(set(keys)) != len(keys):
        raise RecordingError(cfg.input, "two recordings map to the same identifier")
    return tasks[: cfg.max_files] if cfg.max_files else tasks


def _source_stats(sources: Iterable[str]) -> list[dict[str, Any]]:
    stats = []
    for source in sources:
        try:
            st = os.stat(source)
            stats.append({"path": source, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        except OSError:
            stats.append({"path": source, "size": None, "mtime_ns": None})
    return stats


def task_fingerprint(task: RecordingTask, cfg: PreprocessConfig) -> str:
    """Hash of everything a recording's output depends on: its task (files, subject, split, label), the
    processing settings and the source files' sizes and modification times."""
    settings = cfg.model_dump(mode="json", exclude=set(_RUN_ONLY_FIELDS))
    if cfg.ts == TsOptions():
        # Unset `ts` options add nothing: shards written before the section existed are still reused.
        del settings["ts"]
    if cfg.trial_scale == "none":
        # Likewise the per-trial scaling when off (docs/recipe.md §10).
        del settings["trial_scale"]
    payload = {
        "version": PREPROCESSING_VERSION,
        "task": asdict(task),
        "settings": settings,
        "sources": _source_stats(task.sources),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _base_record(task: RecordingTask, fingerprint: str) -> dict[str, Any]:
    return {
        "recording": task.recording,
        "key": shards.recording_key(task.recording),
        "fingerprint": fingerprint,
        "subject": task.subject,
        "split": task.split,
        "label": task.label,
        "sources": [
            {"path": s["path"], "size": s["size"], "sha256": _sha256(s["path"])}
            for s in _source_stats(task.sources)
        ],
        "status": "failed",
        "reason": None,
        "n_samples": {},
        "shards": [],
        "warnings": [],
    }


def failed_record(task: RecordingTask, fingerprint: str, reason: str) -> dict[str, Any]:
    """The record of a recording whose task died outside :func:`process_recording` (worker crash)."""
    record = _base_record(task, fingerprint)
    record["reason"] = reason
    return record


def process_recording(
    task: RecordingTask, cfg: PreprocessConfig, fingerprint: str | None = None
) -> dict[str, Any]:
    """Read, process and window one recording, write its shards, then commit its record; never raises for
    bad input (the record says ``failed`` or ``skipped`` and why).

    Returns
    -------
    dict
        The record written to ``_records/<key>.json``: status, reason, sample counts per split, shards, source
        sizes and sha256, channels, warnings, and the seconds of EEG, CPU and wall time spent.
    """
    fingerprint = fingerprint or task_fingerprint(task, cfg)
    wall, cpu = time.perf_counter(), time.process_time()
    record = _base_record(task, fingerprint)
    target = dataset_uri(cfg, task.dataset)
    try:
        samples = get_reader(task.corpus).read_recording(task, cfg)
        table = shards.samples_to_table(task, samples, cfg.sfreq)
        record["shards"] = shards.write_recording_shards(table, target, record["key"], cfg.samples_per_shard)
        n_samples: dict[str, int] = {}
        for shard in record["shards"]:
            n_samples[shard["split"]] = n_samples.get(shard["split"], 0) + shard["rows"]
        record.update(
            status="written",
            n_samples=n_samples,
            channels=list(samples.channel_names),
            unknown_channels=list(samples.unknown_channels),
            flat_channels=list(samples.flat_channels),
            source_sfreq=samples.source_sfreq,
            source_seconds=samples.source_seconds,
            warnings=samples.warnings,
        )
    except RecordingError as err:
        record.update(status=err.status, reason=str(err))
    except storage.StorageError as err:
        record.update(status="failed", reason=f"storage: {err}")
    except Exception as err:  # a reader bug must not stop the other recordings; the record keeps the reason
        record.update(status="failed", reason=f"unexpected {type(err).__name__}: {err}")
    record["cpu_s"] = round(time.process_time() - cpu, 4)
    # Peak resident memory of this (worker) process so far, for the benchmark.
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    record["wall_s"] = round(time.perf_counter() - wall, 4)
    try:
        shards.write_json(shards.record_uri(target, record["key"]), record)
    except storage.StorageError as err:
        record.update(status="failed", reason=f"{record['reason'] or 'written'}; record not saved: {err}")
    return record


def read_records(uri: str) -> dict[str, dict[str, Any]]:
    """Every committed record of a dataset directory, by key (unreadable records are ignored: redone)."""
    files = storage.list_files(shards.records_uri(uri), suffix=".json")

    def load(file: str) -> dict[str, Any] | None:
        try:
            return json.loads(storage.read_text(file))
        except (storage.StorageError, json.JSONDecodeError):
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        loaded = list(pool.map(load, files))
    return {r["key"]: r for r in loaded if r and "key" in r}


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over records: recordings by status, samples by split, shards, seconds of EEG."""
    samples: dict[str, int] = {}
    for record in records:
        for split, n in record.get("n_samples", {}).items():
            samples[split] = samples.get(split, 0) + n
    return {
        "recordings": len(records),
        "written": sum(r["status"] == "written" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "samples": dict(sorted(samples.items())),
        "shards": sum(len(r.get("shards", [])) for r in records),
        "source_seconds": round(sum(r.get("source_seconds", 0.0) for r in records), 3),
    }


def finalize(
    cfg: PreprocessConfig,
    dataset: str,
    records: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Delete shards and records that no current record accounts for, then write ``_manifest.json``.

    Parameters
    ----------
    cfg : PreprocessConfig
        The run's config (recorded in the manifest).
    dataset : str
        Dataset name (directory below ``cfg.output``).
    records : sequence of dict
        One record per planned recording (fresh or reused).
    extra : mapping, optional
        More run information for the manifest (timings).

    Returns
    -------
    dict
        The manifest.
    """
    target = dataset_uri(cfg, dataset)
    keep_shards = {storage.join(target, s["path"]) for r in records for s in r.get("shards", [])}
    keep_records = {shards.record_uri(target, r["key"]) for r in records}
    for uri in shards.list_shards(target):
        if uri not in keep_shards:
            storage.delete_tree(uri)
    for uri in storage.list_files(shards.records_uri(target), suffix=".json"):
        if uri not in keep_records:
            storage.delete_tree(uri)
    ordered = sorted(records, key=lambda r: r["key"])
    manifest = {
        "dataset": dataset,
        "corpus": cfg.corpus,
        "preprocessing_version": PREPROCESSING_VERSION,
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg),
        "summary": summarize(ordered),
        "shards": [{**s, "recording": r["recording"]} for r in ordered for s in r.get("shards", [])],
        "recordings": ordered,
        **dict(extra or {}),
    }
    shards.write_json(shards.manifest_uri(target), manifest)
    return manifest
