"""Corpus readers, one module per corpus (docs/reference.md §1.5, §1.7); see :mod:`neurolm.data.readers.base` for the
interface. Which module reads which corpus is declared in the corpus registry (:mod:`neurolm.corpora`):
:func:`get_reader` maps a ``PreprocessConfig.corpus`` name to the module its declaration names."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType, ModuleType

from neurolm.corpora import CORPORA, get_corpus

__all__ = ["READER_MODULES", "get_reader"]

READER_MODULES: Mapping[str, str] = MappingProxyType({name: corpus.reader for name, corpus in CORPORA.items()})
"""Reader module path by corpus name (a view of the registry)."""


def get_reader(corpus: str) -> ModuleType:
    """The reader module of a corpus (``list_recordings``, ``read_recording``, ``DEFAULT_NOTCH_HZ``)."""
    return importlib.import_module(get_corpus(corpus).reader)
