"""Signal processing of one recording with MNE, as the official data makers do it (docs/reference.md §1.1).

read (any MNE reader) → pick and rename channels to the 10-20 vocabulary → check the values → a list of named
steps (braindecode style; by default 0.1–75 Hz FIR band-pass, notch at 50 or 60 Hz, resample to 200 Hz) →
µV / 100 as float32 (units of 100 µV, the scale the official loaders feed the model)::

    params = SignalParams(l_freq=0.1, h_freq=75.0, notch=60.0, sfreq=200.0)
    rec = load_recording("aaaaaaaa_s001_t000.edf", params)
    rec.data.shape      # (C, N) float32 in units of 100 µV at 200 Hz
    rec.channels.names  # ('FP1', 'FP2', ...)

Every problem with a file raises :class:`RecordingError` naming the file and the reason; the callers record it
in the manifest and go on with the next recording.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import mne
import numpy as np

from neurolm.channels import ChannelSelection, select_channels
from neurolm.data import filters

__all__ = [
    "RecordingError",
    "SignalParams",
    "Step",
    "ProcessedRecording",
    "standard_steps",
    "apply_steps",
    "apply_standard_steps",
    "read_raw",
    "pick_and_rename",
    "check_values",
    "load_recording",
    "preprocess_array",
    "to_model_units",
    "MODEL_UNIT_UV",
    "FLAT_PTP_UV",
]

MODEL_UNIT_UV = 100.0  # the official loaders divide µV by 100 (docs/reference.md §1.1)
FLAT_PTP_UV = 0.1  # a channel whose peak-to-peak is below this (in µV) carries no EEG


class RecordingError(Exception):
    """One recording cannot become samples. ``status`` is ``"failed"`` (bad input) or ``"skipped"`` (a corpus
    rule excludes it, e.g. TUH ``-LE`` files); the message names the file and the reason."""

    def __init__(self, source: str | Path, reason: str, status: Literal["failed", "skipped"] = "failed"):
        self.source = str(source)
        self.reason = reason
        self.status = status
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class SignalParams:
    """The processing every corpus shares (docs/reference.md §1.1).

    Attributes
    ----------
    l_freq, h_freq : float
        Band-pass edges in Hz (0.1 and 75 in the official code).
    notch : float or None
        Notch (power-line) frequency in Hz; ``None`` skips the notch.
    sfreq : float
        Target sampling rate in Hz (200: one patch is one second).
    """

    l_freq: float = 0.1
    h_freq: float = 75.0
    notch: float | None = 50.0
    sfreq: float = 200.0

    def __post_init__(self) -> None:
        if not 0 < self.l_freq < self.h_freq:
            raise ValueError(
                f"band-pass edges must satisfy 0 < l_freq < h_freq, got {self.l_freq}, {self.h_freq}"
            )
        if self.h_freq >= self.sfreq / 2:
            raise ValueError(
                f"h_freq={self.h_freq} Hz must be below the target Nyquist frequency {self.sfreq / 2} Hz"
            )

    def check_source_rate(self, source: str | Path, source_sfreq: float) -> None:
        """Raise :class:`RecordingError` if a recording's rate cannot carry the band-pass or the notch."""
        nyquist = source_sfreq / 2
        if self.h_freq >= nyquist:
            raise RecordingError(
                source,
                f"sampling rate {source_sfreq:g} Hz is too low for the {self.l_freq:g}-{self.h_freq:g} Hz "
                f"band-pass: its Nyquist frequency {nyquist:g} Hz must exceed h_freq (set h_freq < {nyquist:g})",
            )
        if self.notch is not None and self.notch >= nyquist:
            raise RecordingError(
                source,
                f"notch at {self.notch:g} Hz is at or above the Nyquist frequency {nyquist:g} Hz of a "
                f"{source_sfreq:g} Hz recording",
            )


def _bandpass(raw: mne.io.BaseRaw, l_freq: float, h_freq: float) -> mne.io.BaseRaw:
    return raw.filter(l_freq=l_freq, h_freq=h_freq, verbose="error")


def _notch(raw: mne.io.BaseRaw, freqs: float) -> mne.io.BaseRaw:
    return raw.notch_filter(freqs, verbose="error")


def _resample(raw: mne.io.BaseRaw, sfreq: float) -> mne.io.BaseRaw:
    return raw.resample(sfreq, verbose="error")


@dataclass(frozen=True)
class Step:
    """One named, in-place processing step on a preloaded MNE ``Raw`` (like braindecode's ``Preprocessor``)."""

    name: str
    function: Callable[..., mne.io.BaseRaw]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
        return self.function(raw, **self.kwargs)


def standard_steps(params: SignalParams) -> list[Step]:
    """The official steps in the official order (docs/reference.md §1.1): band-pass, notch, resample."""
    steps = [Step("bandpass", _bandpass, {"l_freq": params.l_freq, "h_freq": params.h_freq})]
    if params.notch is not None:
        steps.append(Step("notch", _notch, {"freqs": params.notch}))
    steps.append(Step("resample", _resample, {"sfreq": params.sfreq}))
    return steps


def apply_steps(raw: mne.io.BaseRaw, steps: Sequence[Step]) -> mne.io.BaseRaw:
    """Run steps in order on a preloaded ``Raw``."""
    for step in steps:
        raw = step.apply(raw)
    return raw


def apply_standard_steps(data_uv: np.ndarray, sfreq: float, params: SignalParams) -> np.ndarray:
    """:func:`standard_steps` on a float64 ``(C, N)`` array of one contiguous recording: MNE's band-pass, notch
    and resampling, computed for all channels at once by :mod:`neurolm.data.filters` (the same numbers as the
    ``Raw`` methods to ~1e-15 of the signal scale, several times faster). Returns ``(C, N')`` at ``params.sfreq``,
    in the input's unit."""
    return filters.filter_and_resample(
        data_uv, sfreq, params.l_freq, params.h_freq, params.notch, params.sfreq
    )


def _one_segment(raw: mne.io.BaseRaw) -> bool:
    """True if MNE would filter and resample ``raw`` as one piece (no annotation splits it, not concatenated)."""
    split = any(d.upper().startswith(filters.SKIP_ANNOTATIONS) for d in raw.annotations.description)
    return len(raw.filenames) == 1 and not split


_DIRECT_READERS = {
    ".edf": "read_raw_edf",
    ".bdf": "read_raw_bdf",
    ".gdf": "read_raw_gdf",
    ".vhdr": "read_raw_brainvision",
}


def read_raw(path: str | Path, notes: list[str] | None = None) -> mne.io.BaseRaw:
    """Open any MNE-readable recording lazily; unreadable files raise :class:`RecordingError`.

    A file shorter than its header declares (a recording not stopped properly) is read up to its last complete
    data record, as MNE does; a note saying so is appended to ``notes`` (kept in the manifest).
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(path, "file does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if path.suffix.lower() == ".cnt":
                # Neuroscan CNT as in the official SEED maker (32-bit samples); MNE cannot always infer the width.
                raw = mne.io.read_raw_cnt(path, preload=False, data_format="int32", verbose="warning")
            elif path.suffix.lower() in _DIRECT_READERS:
                # What mne.io.read_raw would call, without first importing every reader it knows (~0.1 CPU-s).
                raw = getattr(mne.io, _DIRECT_READERS[path.suffix.lower()])(
                    path, preload=False, verbose="warning"
                )
            else:
                raw = mne.io.read_raw(path, preload=False, verbose="warning")
        except Exception as err:  # MNE raises many types for corrupt headers
            raise RecordingError(path, f"cannot read the recording ({type(err).__name__}: {err})") from err
    if any("file size" in str(w.message) for w in caught) and notes is not None:
        notes.append(
            f"{path.name}: truncated (the header declares more data than the file holds); "
            f"read its {raw.n_times / raw.info['sfreq']:.1f} s of complete records"
        )
    return raw


def pick_and_rename(raw: mne.io.BaseRaw, selection: ChannelSelection) -> mne.io.BaseRaw:
    """Keep the selected channels in the selection's order, named and typed as EEG vocabulary channels."""
    raw.pick(list(selection.source_names))
    raw.reorder_channels(list(selection.source_names))
    raw.rename_channels(dict(zip(selection.source_names, selection.names, strict=True)), verbose="error")
    # Filters act on data channels only: make sure every kept channel is one, and none is hidden as "bad".
    raw.set_channel_types({name: "eeg" for name in selection.names}, verbose="error")
    raw.info["bads"] = []
    return raw


def check_values(
    source: str | Path, data_uv: np.ndarray, names: Sequence[str], drop_flat: bool
) -> tuple[np.ndarray, list[int]]:
    """Reject non-finite values; find flat channels (peak-to-peak below :data:`FLAT_PTP_UV` µV).

    Returns the channel indices to keep and the flat ones. With ``drop_flat=False`` (corpora with a fixed
    channel list) a flat channel fails the recording.
    """
    finite = np.isfinite(data_uv)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero(~finite.all(axis=1))]
        raise RecordingError(source, f"non-finite values (NaN or inf) in channels {', '.join(bad)}")
    ptp = np.ptp(data_uv, axis=1) if data_uv.shape[1] else np.zeros(len(names))
    flat = [int(i) for i in np.flatnonzero(ptp < FLAT_PTP_UV)]
    if flat and not drop_flat:
        raise RecordingError(
            source, f"flat channels (peak-to-peak < {FLAT_PTP_UV} µV): {', '.join(names[i] for i in flat)}"
        )
    keep = np.asarray([i for i in range(len(names)) if i not in set(flat)], dtype=np.int64)
    if keep.size == 0:
        raise RecordingError(source, f"every channel is flat (peak-to-peak < {FLAT_PTP_UV} µV)")
    return keep, flat


def to_model_units(data_uv: np.ndarray, dtype: str | np.dtype = "float32") -> np.ndarray:
    """µV → units of 100 µV (docs/reference.md §1.1), cast once at the end."""
    return (np.asarray(data_uv, dtype=np.float64) / MODEL_UNIT_UV).astype(dtype)


@dataclass(frozen=True)
class ProcessedRecording:
    """A preprocessed recording: ``data`` (C, N) float in units of 100 µV at ``sfreq`` Hz."""

    source: str
    data: np.ndarray = field(repr=False)
    channels: ChannelSelection
    sfreq: float
    source_sfreq: float
    flat_channels: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.data.shape[1] / self.sfreq


def _subset(selection: ChannelSelection, keep: np.ndarray) -> ChannelSelection:
    return ChannelSelection(
        source_names=tuple(selection.source_names[i] for i in keep),
        names=tuple(selection.names[i] for i in keep),
        indices=selection.indices[keep],
        unknown=selection.unknown,
        duplicates=selection.duplicates,
        missing=selection.missing,
    )


def load_recording(
    path: str | Path,
    params: SignalParams,
    required: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    drop_flat: bool = True,
    steps: Sequence[Step] | None = None,
    dtype: str = "float32",
    inspect: Callable[[mne.io.BaseRaw], None] | None = None,
) -> ProcessedRecording:
    """Read, select channels, check and process one recording (docs/reference.md §1.1).

    Parameters
    ----------
    path : str or Path
        Any file ``mne.io.read_raw`` reads (EDF, BDF, BrainVision ``.vhdr``, EEGLAB, FIF, ...; ``.cnt`` as
        32-bit Neuroscan).
    params : SignalParams
        Band-pass, notch and target rate.
    required : sequence of str, optional
        The corpus's fixed channel list in storage order; a recording lacking one of them fails.
    exclude : sequence of str
        Vocabulary names never kept.
    drop_flat : bool
        Drop flat channels (variable-channel corpora) instead of failing the recording.
    steps : sequence of Step, optional
        Processing steps; default :func:`standard_steps`.
    dtype : str
        Output dtype (``float32`` by default).
    inspect : callable, optional
        Called with the unloaded ``Raw`` right after opening; raises :class:`RecordingError` to reject the
        file by its header (e.g. TUH ``-LE`` montages) before any sample is read.

    Raises
    ------
    RecordingError
        Unreadable file, no usable or missing required channels, sampling rate too low, NaN/inf, flat channels.
    """
    notes: list[str] = []
    raw = read_raw(path, notes)
    if inspect is not None:
        inspect(raw)
    selection = select_channels(raw.ch_names, required=required, exclude=exclude)
    if selection.missing:
        raise RecordingError(path, f"missing required channels {', '.join(selection.missing)}")
    if len(selection) == 0:
        shown = ", ".join(raw.ch_names[:8]) + (" ..." if len(raw.ch_names) > 8 else "")
        raise RecordingError(path, f"no usable channels: none of [{shown}] is in the 10-20 vocabulary")
    source_sfreq = float(raw.info["sfreq"])
    params.check_source_rate(path, source_sfreq)
    try:
        raw = pick_and_rename(raw, selection)
        raw.load_data(verbose="error")
    except Exception as err:  # truncated data blocks surface here, not at header reading
        raise RecordingError(path, f"cannot load the samples ({type(err).__name__}: {err})") from err
    if raw.n_times < 2:
        raise RecordingError(path, f"recording has {raw.n_times} sample(s) (truncated?)")
    data_uv = raw.get_data(units="uV")  # (C, N) float64
    keep, flat = check_values(path, data_uv, selection.names, drop_flat)
    flat_names = tuple(selection.names[i] for i in flat)
    if flat:
        raw.drop_channels(list(flat_names))
        selection = _subset(selection, keep)
        data_uv = data_uv[keep]
    if steps is None and _one_segment(raw):
        data_uv, sfreq = apply_standard_steps(data_uv, source_sfreq, params), params.sfreq
    else:  # custom steps, or annotations that make MNE filter piece by piece
        raw = apply_steps(raw, standard_steps(params) if steps is None else steps)
        data_uv, sfreq = raw.get_data(units="uV"), float(raw.info["sfreq"])
    return ProcessedRecording(
        source=str(path),
        data=to_model_units(data_uv, dtype),
        channels=selection,
        sfreq=sfreq,
        source_sfreq=source_sfreq,
        flat_channels=flat_names,
        notes=tuple(notes),
    )


def preprocess_array(
    data_uv: np.ndarray,
    source_sfreq: float,
    params: SignalParams,
    source: str = "<array>",
    steps: Sequence[Step] | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Process many equal-length trials at once: ``(n, C, N)`` µV at ``source_sfreq`` → ``(n, C, N')`` in units
    of 100 µV at ``params.sfreq``.

    Every step acts on each channel on its own, so processing the n·C channel series of all trials as one
    array gives exactly the per-trial result, in one call instead of n.
    """
    if data_uv.ndim != 3:
        raise RecordingError(source, f"expected trials as (n, C, N), got shape {data_uv.shape}")
    n_trials, n_channels, n_times = data_uv.shape
    params.check_source_rate(source, source_sfreq)
    stacked = data_uv.reshape(n_trials * n_channels, n_times)
    names = [f"ch{i}" for i in range(stacked.shape[0])]
    check_values(source, stacked, names, drop_flat=True)
    if steps is None:
        out = to_model_units(apply_standard_steps(stacked.astype(np.float64), source_sfreq, params), dtype)
    else:
        info = mne.create_info(names, source_sfreq, ch_types="eeg", verbose="error")
        raw = mne.io.RawArray(stacked.astype(np.float64) * 1e-6, info, verbose="error")
        raw = apply_steps(raw, steps)
        out = to_model_units(raw.get_data(units="uV"), dtype)
    return out.reshape(n_trials, n_channels, -1)  # (n, C, N')
