"""Small generated stand-ins for the six paper corpora, built on demand into a cache (pipeline ``synthetic:<corpus>``).

The paper's downstream corpora (TUAB, TUEV, SEED, HMC, Workload, TUSL) need registration or are too large here
(docs/data.md). A stand-in is a tree in the corpus's real layout written by :mod:`neurolm.data.synthetic` from
*generated* EEG-like signals, with the corpus's file names, channel labels and label files, so the real reader
and the real task (question, answers, metrics) run on it. Its labels carry no signal: a stand-in makes an
instruction mixture multi-task and exercises every reader, it says nothing about accuracy on the real corpus.

Sizes are kept small: each stand-in preprocesses in a few seconds and gives a few dozen samples per split (enough
that an instruction-tuning worker does not restart a pass over a task's shard every few steps)::

    root = standin_tree("tuab")          # $NEUROLM_CACHE/synthetic/tuab-<hash>/ (built once)

Which corpora have a stand-in, and the builder's arguments, are declared with each corpus in the registry
(:mod:`neurolm.corpora`); this module builds them. The directory name carries a hash of the builder's arguments; a tree is written into a temporary sibling and
renamed into place, so concurrent or interrupted builds never leave a half-written tree behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from neurolm.corpora import CORPORA
from neurolm.data import synthetic
from neurolm.data.samples import cache_dir

__all__ = ["STANDINS", "Standin", "standin_tree"]


@dataclass(frozen=True)
class Standin:
    """How to build one corpus's stand-in: a :mod:`neurolm.data.synthetic` builder and its keyword arguments."""

    corpus: str
    """Reader name (``neurolm.data.readers``) and the ``corpus`` of the preprocessing step."""
    task: str
    """Instruction task of the corpus (``neurolm.data.tasks``)."""
    build: Callable[..., Path]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        payload = json.dumps({"build": self.build.__name__, "kwargs": dict(self.kwargs)}, sort_keys=True)
        return f"{self.corpus}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def _standins() -> Mapping[str, Standin]:
    """One stand-in per corpus whose registry declaration has one (:data:`neurolm.corpora.CORPORA`)."""
    return MappingProxyType({
        corpus.name: Standin(corpus.name, corpus.task or corpus.name, getattr(synthetic, corpus.standin.builder),
                             corpus.standin.kwargs)
        for corpus in CORPORA.values()
        if corpus.standin is not None
    })  # fmt: skip


STANDINS: Mapping[str, Standin] = _standins()
"""Stand-ins by corpus name (the six paper corpora)."""


def standin_tree(corpus: str, root: str | Path | None = None) -> Path:
    """The stand-in tree of ``corpus`` under ``root`` (default ``$NEUROLM_CACHE/synthetic``), built on first use."""
    if corpus not in STANDINS:
        raise KeyError(f"no synthetic stand-in for {corpus!r}; known: {sorted(STANDINS)}")
    spec = STANDINS[corpus]
    base = Path(root) if root is not None else cache_dir() / "synthetic"
    target = base / spec.key
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=base))
    try:
        spec.build(tmp, **spec.kwargs)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent build that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
