"""What a dataset's ``_manifest.json`` records beyond its records and config: the reader's own facts (the
``events`` corpus's label mapping, window and band-edge changes) and the leakage guard's exclusions.

:func:`neurolm.preprocess.run_preprocess` passes ``manifest_extra(cfg, tasks)`` to
:func:`neurolm.data.preprocessing.finalize`. A reader module may define
``manifest_extra(cfg, tasks) -> dict``; it runs on the driver over the planned tasks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from neurolm import storage
from neurolm.config import PreprocessConfig
from neurolm.data import leakage
from neurolm.data.readers import get_reader
from neurolm.data.readers.base import RecordingTask

__all__ = ["manifest_extra"]


def manifest_extra(cfg: PreprocessConfig, tasks: Sequence[RecordingTask]) -> dict[str, Any]:
    """Extra manifest keys for a run of ``cfg`` over the planned ``tasks``."""
    extra: dict[str, Any] = {}
    hook = getattr(get_reader(cfg.corpus), "manifest_extra", None)
    if hook is not None:
        extra.update(hook(cfg, tasks))
    if tasks and cfg.corpus in cfg.leakage.corpora:
        uri = storage.join(cfg.output, tasks[0].dataset, leakage.LEAKAGE_NAME)
        if storage.exists(uri):
            extra["leakage"] = json.loads(storage.read_text(uri))
    return extra
