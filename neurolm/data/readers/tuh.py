"""Conventions shared by the TUH corpora (TUEG, TUAB, TUEV, TUSL; docs/reference.md §1.5, §1.7).

TUH file names start with the subject: ``aaaaaaav_s004_t000.edf`` (subject ``aaaaaaav``, session 4, token 0).
The downstream makers keep the same 23 average-reference channels, in this order.
"""

from __future__ import annotations

from pathlib import Path

import mne

from neurolm import corpora
from neurolm.data.signal import RecordingError

__all__ = ["TUH_CHANNELS", "tuh_subject", "reject_linked_ears", "is_ar_montage_path"]

# docs/reference.md §1.7: declared with the TUH corpora in the registry.
TUH_CHANNELS: tuple[str, ...] = corpora.TUH_CHANNELS


def tuh_subject(path: Path) -> str:
    """The subject of a TUH file: its name up to the first ``_``."""
    return path.stem.split("_")[0]


def is_ar_montage_path(path: Path) -> bool:
    """False for files inside a TUH montage folder other than ``01_tcp_ar`` (``02_tcp_le``, ``03_tcp_ar_a``...).

    The downstream makers use the average-reference montage only (docs/reference.md §1.1, §1.7).
    """
    montages = [part for part in path.parts if "_tcp_" in part]
    return not montages or montages[-1] == "01_tcp_ar"


def reject_linked_ears(raw: mne.io.BaseRaw) -> None:
    """Skip files whose first channel is linked-ears referenced (``EEG FP1-LE``), as
    ``prepare_TUH_pretrain.py`` does (docs/reference.md §1.1)."""
    if raw.ch_names and raw.ch_names[0].split("-")[-1].strip().upper() == "LE":
        raise RecordingError(
            raw.filenames[0] if raw.filenames else "<raw>",
            f"linked-ears (-LE) montage (first channel {raw.ch_names[0]!r}); only -REF files are used (docs/reference.md §1.1)",
            status="skipped",
        )
