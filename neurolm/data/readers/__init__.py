"""Corpus readers, one module per corpus (docs/reference.md §1.5, §1.7); see :mod:`neurolm.data.readers.base` for the
interface. :func:`get_reader` maps a ``PreprocessConfig.corpus`` name to its module."""

from __future__ import annotations

import importlib
from types import MappingProxyType, ModuleType

__all__ = ["READER_MODULES", "get_reader"]

READER_MODULES = MappingProxyType(
    {
        "edf": "neurolm.data.readers.edf",
        "tueg": "neurolm.data.readers.tueg",
        "tuab": "neurolm.data.readers.tuab",
        "tuev": "neurolm.data.readers.tuev",
        "seed": "neurolm.data.readers.seed",
        "hmc": "neurolm.data.readers.hmc",
        "workload": "neurolm.data.readers.workload",
        "tusl": "neurolm.data.readers.tusl",
        "ts": "neurolm.data.readers.ts",
        "events": "neurolm.data.readers.events",
    }
)


def get_reader(corpus: str) -> ModuleType:
    """The reader module of a corpus (``list_recordings``, ``read_recording``, ``DEFAULT_NOTCH_HZ``)."""
    if corpus not in READER_MODULES:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(READER_MODULES)}")
    return importlib.import_module(READER_MODULES[corpus])
