"""The 10-20 channel vocabulary of NeuroLM and the normalisation of channel names found in real files.

A token's spatial embedding row is the index of its channel name in :data:`STANDARD_1020` (docs/reference.md §1.3): the
official list of 139 names, in the official order, padding at :data:`PAD_INDEX`. Old and new names of the same
site (T3/T7, T5/P7, T4/T8, T6/P8) keep their own rows, exactly as in the official code.

Real files spell channels many ways: ``EEG FP1-REF`` and ``EEG FP1-LE`` (TUH), ``Fc5.`` (PhysioNet EEGMMIDB),
``Fp1`` (BrainVision, EEGMAT), ``EEG F4-M1`` (HMC), ``FP1-A1``. :func:`normalize_channel_name` maps such a
name to its vocabulary entry or returns ``None``; it never guesses. :func:`select_channels` applies it to a
whole recording and reports what it could not map::

    sel = select_channels(["EEG FP1-REF", "EEG T3-REF", "EEG EKG1-REF"])
    sel.names      # ('FP1', 'T3')
    sel.indices    # array([ 0, 88], dtype=int16)
    sel.unknown    # ('EEG EKG1-REF',)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

__all__ = [
    "STANDARD_1020",
    "PAD_INDEX",
    "PAD_NAME",
    "REFERENCE_SUFFIXES",
    "UnknownChannelError",
    "ChannelSelection",
    "normalize_channel_name",
    "channel_index",
    "channel_indices",
    "select_channels",
]

# docs/reference.md §1.3 (official `dataset.py: standard_1020`): the index is the embedding row; do not reorder.
STANDARD_1020: tuple[str, ...] = (
    "FP1", "FPZ", "FP2",
    "AF9", "AF7", "AF5", "AF3", "AF1", "AFZ", "AF2", "AF4", "AF6", "AF8", "AF10",
    "F9", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "F10",
    "FT9", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "FT10",
    "T9", "T7", "C5", "C3", "C1", "CZ", "C2", "C4", "C6", "T8", "T10",
    "TP9", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "TP10",
    "P9", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "P10",
    "PO9", "PO7", "PO5", "PO3", "PO1", "POZ", "PO2", "PO4", "PO6", "PO8", "PO10",
    "O1", "OZ", "O2", "O9", "CB1", "CB2",
    "IZ", "O10", "T3", "T5", "T4", "T6", "M1", "M2", "A1", "A2",
    "CFC1", "CFC2", "CFC3", "CFC4", "CFC5", "CFC6", "CFC7", "CFC8",
    "CCP1", "CCP2", "CCP3", "CCP4", "CCP5", "CCP6", "CCP7", "CCP8",
    "T1", "T2", "FTT9h", "TTP7h", "TPP9h", "FTT10h", "TPP8h", "TPP10h",
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
    "pad", "I1", "I2",
)  # fmt: skip

PAD_NAME = "pad"
PAD_INDEX = 136

# Reference electrodes written after a hyphen in referential montages: TUH "-REF" (average/common reference)
# and "-LE" (linked ears), "-AR"/"-AVG" (average), mastoids and ear lobes ("F4-M1", "FP1-A1"). A name with any
# other suffix ("F3-P3") is a bipolar derivation and stays unknown unless the vocabulary lists it.
REFERENCE_SUFFIXES: frozenset[str] = frozenset({"REF", "LE", "AR", "AVG", "AV", "M1", "M2", "A1", "A2"})

# Prefixes that name the signal type or the amplifier's channel group before the electrode ("EEG FP1-REF",
# "POL Fp1" from Nihon Kohden exports).
_TYPE_PREFIXES = ("EEG", "POL")

# Upper-cased vocabulary name -> canonical spelling ("FTT9H" -> "FTT9h"); read-only.
_CANONICAL = MappingProxyType({name.upper(): name for name in STANDARD_1020})
_INDEX = MappingProxyType({name: i for i, name in enumerate(STANDARD_1020)})
_TRAILING_JUNK = re.compile(r"[.\s_]+$")


class UnknownChannelError(KeyError):
    """A channel name has no entry in the 10-20 vocabulary (docs/reference.md §1.3)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown channel"


def _lookup(name: str) -> str | None:
    return _CANONICAL.get(name.upper())


def normalize_channel_name(raw_name: str) -> str | None:
    """Map a channel name as written in a file to its entry in :data:`STANDARD_1020`, or ``None``.

    Accepted forms: any case (``Fp1``), PhysioNet's dot padding (``Fc5.``, ``Cz..``), a type prefix
    (``EEG FP1-REF``, ``POL Fp1``), and a reference suffix from :data:`REFERENCE_SUFFIXES` (``FP1-REF``,
    ``FP1-LE``, ``F4-M1``, ``FP1-A1``). Bipolar names are kept only when the vocabulary lists them
    (``FP1-F7``). The padding name ``pad`` is never a channel.

    Parameters
    ----------
    raw_name : str
        The channel label from the recording.

    Returns
    -------
    str or None
        The canonical vocabulary name (e.g. ``"FP1"``, ``"FTT9h"``), or ``None`` if the name cannot be mapped
        without guessing.
    """
    name = _TRAILING_JUNK.sub("", raw_name.strip())
    parts = name.split()
    if len(parts) == 2 and parts[0].upper() in _TYPE_PREFIXES:
        name = parts[1]
    elif len(parts) != 1:
        return None
    name = _TRAILING_JUNK.sub("", name)
    direct = _lookup(name)
    if direct is not None:
        return None if direct == PAD_NAME else direct
    electrode, sep, reference = name.rpartition("-")
    if sep and reference.upper() in REFERENCE_SUFFIXES:
        found = _lookup(electrode)
        if found is not None and found != PAD_NAME and "-" not in found:
            return found
    return None


def channel_index(name: str) -> int:
    """Vocabulary index (embedding row) of a channel name; raises :class:`UnknownChannelError` if none.

    ``name`` may be any form :func:`normalize_channel_name` accepts; ``"pad"`` gives :data:`PAD_INDEX`.
    """
    if name == PAD_NAME:
        return PAD_INDEX
    canonical = normalize_channel_name(name)
    if canonical is None:
        raise UnknownChannelError(f"channel {name!r} is not in the 10-20 vocabulary (docs/reference.md §1.3)")
    return _INDEX[canonical]


def channel_indices(names: Iterable[str]) -> np.ndarray:
    """Vocabulary indices (int16) of several channel names; raises on the first unknown one."""
    return np.asarray([channel_index(n) for n in names], dtype=np.int16)


@dataclass(frozen=True)
class ChannelSelection:
    """The usable channels of one recording, in the order they will be stored.

    Attributes
    ----------
    source_names : tuple of str
        Names as written in the file, one per kept channel.
    names : tuple of str
        Their vocabulary names.
    indices : numpy.ndarray
        Their vocabulary indices, int16.
    unknown : tuple of str
        Source names that map to no vocabulary entry (dropped, reported).
    duplicates : tuple of str
        Source names that map to a vocabulary entry already taken by an earlier channel (dropped, reported).
    missing : tuple of str
        Required vocabulary names the recording does not have (only when ``required`` was given).
    """

    source_names: tuple[str, ...]
    names: tuple[str, ...]
    indices: np.ndarray = field(repr=False)
    unknown: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)


def select_channels(
    source_names: Sequence[str],
    required: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> ChannelSelection:
    """Map a recording's channel names to the vocabulary, keeping the mappable ones.

    Parameters
    ----------
    source_names : sequence of str
        Channel names as in the file.
    required : sequence of str, optional
        Vocabulary names to keep, in this order (a corpus's fixed channel list, e.g. the 23 TUH channels of
        docs/reference.md §1.7). Channels not listed are dropped silently (the corpus does not use them); listed names the
        recording lacks are reported in ``missing``. Without it every mappable channel is kept, in file order.
    exclude : iterable of str
        Vocabulary names never to keep (e.g. SEED's M1/M2, docs/reference.md §1.5).

    Returns
    -------
    ChannelSelection
    """
    excluded = {normalize_channel_name(n) or n for n in exclude}
    first_by_name: dict[str, str] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    for source in source_names:
        canonical = normalize_channel_name(source)
        if canonical is None:
            unknown.append(source)
        elif canonical in excluded:
            continue
        elif canonical in first_by_name:
            duplicates.append(source)
        else:
            first_by_name[canonical] = source
    if required is None:
        names = list(first_by_name)
        missing: list[str] = []
    else:
        wanted = [normalize_channel_name(n) or n for n in required]
        names = [n for n in wanted if n in first_by_name]
        missing = [n for n in wanted if n not in first_by_name]
    return ChannelSelection(
        source_names=tuple(first_by_name[n] for n in names),
        names=tuple(names),
        indices=np.asarray([_INDEX[n] for n in names], dtype=np.int16),
        unknown=tuple(unknown),
        duplicates=tuple(duplicates),
        missing=tuple(missing),
    )
