"""Leakage guard: keep the subjects and recordings of downstream val/test splits out of pre-training.

TUEG, the pre-training corpus, contains the recordings and subjects of TUAB, TUEV and TUSL (the official code
pre-trains on them). With the guard on (the default), planning a pre-training corpus (``leakage.corpora``,
``tueg`` by default) reads the manifests of the downstream datasets, collects every subject and recording that has
samples in a held-out split (``val``, ``test``), and drops the matching pre-training recordings before any is
processed. What was dropped, and why, goes to ``<dataset>/_leakage.json`` and into the manifest::

    kept = guard(cfg, tasks)      # neurolm.data.preprocessing.plan calls this

Why at preprocessing and not when a stage reads its shards: a dropped recording is never read, filtered or
written (TUEG is 1.7 TB), the decision is recorded once beside the shards the stages read, and rerunning the TUEG
preprocessing after a new downstream dataset was added drops the newly held-out recordings (their shards are
deleted by ``finalize``) while every other recording is reused. Matching is by subject (TUH file names start with
the subject, the same in every TUH corpus) and by recording file name without folder and suffix (TUEG and TUAB
store the same ``aaaaaaav_s004_t000`` under different folders).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from neurolm import storage
from neurolm.config import PreprocessConfig
from neurolm.data import shards
from neurolm.data.readers.base import RecordingTask

__all__ = ["LEAKAGE_NAME", "HeldOut", "held_out", "find_downstream", "applies", "guard", "recording_stem"]

LEAKAGE_NAME = "_leakage.json"
log = logging.getLogger(__name__)


def recording_stem(recording: str) -> str:
    """The file name of a recording identifier without folders (identifiers have no suffix)."""
    return recording.rsplit("/", 1)[-1]


@dataclass
class HeldOut:
    """Subjects and recording stems in a held-out split, each with where it was found (``dataset/split``)."""

    subjects: dict[str, set[str]] = field(default_factory=dict)
    recordings: dict[str, set[str]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)


def _held_splits(record: Mapping[str, Any], splits: Sequence[str]) -> list[str]:
    """The held-out splits a downstream record has samples in (its split, or its per-sample split counts)."""
    counts = record.get("n_samples") or {}
    found = {s for s, n in counts.items() if n and s in splits}
    if record.get("split") in splits:
        found.add(record["split"])
    return sorted(found)


def held_out(manifests: Mapping[str, Mapping[str, Any]], splits: Sequence[str]) -> HeldOut:
    """Collect held-out subjects and recordings from downstream manifests (dataset URI → manifest)."""
    out = HeldOut()
    for uri, manifest in manifests.items():
        dataset = manifest.get("dataset") or uri.rstrip("/").rsplit("/", 1)[-1]
        subjects, recordings = set(), set()
        for record in manifest.get("recordings", []):
            for split in _held_splits(record, splits):
                where = f"{dataset}/{split}"
                if record.get("subject"):
                    out.subjects.setdefault(record["subject"], set()).add(where)
                    subjects.add(record["subject"])
                out.recordings.setdefault(recording_stem(record["recording"]), set()).add(where)
                recordings.add(record["recording"])
        out.sources.append(
            {
                "uri": uri,
                "dataset": dataset,
                "corpus": manifest.get("corpus"),
                "config_hash": manifest.get("config_hash"),
                "held_out_subjects": len(subjects),
                "held_out_recordings": len(recordings),
            }
        )
    return out


def find_downstream(cfg: PreprocessConfig, dataset: str) -> dict[str, dict[str, Any]]:
    """The downstream manifests: ``leakage.downstream`` if given (each must have a manifest), else every dataset
    beside ``dataset`` under ``cfg.output`` whose manifest names a corpus outside ``leakage.corpora``."""
    if cfg.leakage.downstream is not None:
        found = {}
        for uri in cfg.leakage.downstream:
            try:
                found[uri] = shards.read_manifest(uri)
            except (storage.StorageError, ValueError) as err:
                raise storage.StorageError(
                    f"leakage.downstream: no readable {shards.MANIFEST_NAME} in {uri!r} ({err})"
                ) from err
        return found
    found = {}
    for uri in _child_dirs(cfg.output):
        if uri.rstrip("/").rsplit("/", 1)[-1] == dataset or not storage.exists(shards.manifest_uri(uri)):
            continue
        try:
            manifest = shards.read_manifest(uri)
        except (storage.StorageError, ValueError):
            log.warning("leakage guard: unreadable manifest in %s, ignored", uri)
            continue
        if manifest.get("corpus") not in cfg.leakage.corpora:
            found[uri] = manifest
    return dict(sorted(found.items()))


def _child_dirs(uri: str) -> list[str]:
    """The directories directly below ``uri`` (one listing call, not a walk over every shard)."""
    fs, path = storage.resolve(uri)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    infos = fs.get_file_info(selector)
    return sorted(storage.join(uri, info.base_name) for info in infos if info.type == pafs.FileType.Directory)


def applies(cfg: PreprocessConfig) -> bool:
    return cfg.leakage.enabled and cfg.corpus in cfg.leakage.corpora


def _reasons(task: RecordingTask, held: HeldOut, match: Iterable[str]) -> list[str]:
    reasons = []
    if "subject" in match and task.subject and task.subject in held.subjects:
        reasons += [f"subject {task.subject} in {w}" for w in sorted(held.subjects[task.subject])]
    stem = recording_stem(task.recording)
    if "recording" in match and stem in held.recordings:
        reasons += [f"recording {stem} in {w}" for w in sorted(held.recordings[stem])]
    return reasons


def guard(cfg: PreprocessConfig, tasks: list[RecordingTask]) -> list[RecordingTask]:
    """Drop the recordings of a pre-training corpus that a downstream held-out split holds, and write
    ``_leakage.json`` beside the dataset's shards; other corpora (and a disabled guard) pass through unchanged."""
    if not tasks or cfg.corpus not in cfg.leakage.corpora:
        return tasks
    target = storage.join(cfg.output, tasks[0].dataset)
    if not cfg.leakage.enabled:
        shards.write_json(storage.join(target, LEAKAGE_NAME), {"enabled": False, "excluded": []})
        return tasks
    held = held_out(find_downstream(cfg, tasks[0].dataset), cfg.leakage.splits)
    kept, excluded = [], []
    for task in tasks:
        reasons = _reasons(task, held, cfg.leakage.match)
        if reasons:
            excluded.append({"recording": task.recording, "subject": task.subject, "reasons": reasons})
        else:
            kept.append(task)
    note = None
    if not held.sources:
        note = (
            "no downstream manifest found: nothing could be excluded; preprocess the downstream datasets first "
            "(or set leakage.downstream), then rerun this one (finished recordings are reused)"
        )
        log.warning("leakage guard (%s): %s", tasks[0].dataset, note)
    report = {
        "enabled": True,
        "corpus": cfg.corpus,
        "dataset": tasks[0].dataset,
        "splits": list(cfg.leakage.splits),
        "match": list(cfg.leakage.match),
        "downstream": held.sources,
        "held_out_subjects": len(held.subjects),
        "held_out_recordings": len(held.recordings),
        "planned": len(tasks),
        "kept": len(kept),
        "excluded": excluded,
        "note": note,
    }
    shards.write_json(storage.join(target, LEAKAGE_NAME), report)
    return kept
