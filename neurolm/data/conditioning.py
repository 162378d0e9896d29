"""Signal conditioning for small real tasks whose recordings differ from the paper corpora (issue 16).

Three rules, each configurable in :class:`~neurolm.config.PreprocessConfig` and written to the manifest by the
reader that applies them:

- :func:`fit_band_to_rate` (``below_nyquist``): a source rate whose Nyquist frequency is at or below the
  band-pass upper edge (EyesOpenShut 128 Hz, FingerMovements 100 Hz against 75 Hz) gets the edge lowered to
  0.9 x the source Nyquist frequency, and a notch at or above that edge is dropped (no mains line survives
  there); ``refuse`` keeps the old error.
- :func:`pad_to_whole_seconds` (``short_trials``): a trial shorter than one 1-s patch (FingerMovements: 0.5 s)
  is extended to 1 s with each channel's own trial mean, so the patch keeps the trial's level (slow potentials
  carry the class in SCP-like and readiness-potential tasks) without a step to zero; ``refuse`` fails it.
  Resampling the trial to 1 s instead would halve every frequency (alpha would read as theta), so it is not
  offered.
- :func:`fit_normalization` / :func:`apply_normalization` (``normalize=dataset``): the 100 µV convention only
  fits recordings whose values are µV around zero. Consumer headsets ship a DC offset in every value (Emotiv
  EyesOpenShut ~4300 µV, Muse Blink ~850 µV) that a 0.1 Hz high-pass cannot remove from a 1–2 s trial (the
  FIR is ~33 s long), so the model would see offsets of 8–43 units against a within-trial signal of ~0.1.
  ``dataset`` subtracts each channel's mean and divides by one dataset-wide scale (the median within-trial std
  of the train split), mapping it to ``normalize_std``; both come from the train split only. Per-trial
  offsets are kept on purpose: the slow potentials that separate SelfRegulationSCP1's classes are exactly
  those offsets. ``recording`` applies the same two statistics per recording (each ``.ts`` file measured on
  itself, label-free), for problems whose test file is a session recorded apart, with offsets of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurolm.data.signal import RecordingError, SignalParams

__all__ = [
    "NYQUIST_MARGIN",
    "Normalization",
    "apply_normalization",
    "fit_band_to_rate",
    "fit_normalization",
    "pad_to_whole_seconds",
]

NYQUIST_MARGIN = 0.9
"""A lowered upper edge sits at this fraction of the source Nyquist frequency (room for the FIR transition)."""


def fit_band_to_rate(
    params: SignalParams, source_sfreq: float, rule: str = "lower", source: str = "<array>"
) -> tuple[SignalParams, list[str]]:
    """``params`` usable at ``source_sfreq`` and the notes saying what changed (empty when nothing did).

    Raises
    ------
    RecordingError
        ``rule="refuse"`` and the rate is too low (the message of :meth:`SignalParams.check_source_rate`).
    """
    nyquist = source_sfreq / 2
    if rule == "refuse" or (params.h_freq < nyquist and (params.notch is None or params.notch < nyquist)):
        params.check_source_rate(source, source_sfreq)
        return params, []
    notes = []
    h_freq, notch = params.h_freq, params.notch
    if h_freq >= nyquist:
        h_freq = round(NYQUIST_MARGIN * nyquist, 3)
        if h_freq <= params.l_freq:
            raise RecordingError(
                source, f"sampling rate {source_sfreq:g} Hz leaves no band above {params.l_freq:g} Hz"
            )
        notes.append(
            f"band-pass upper edge lowered from {params.h_freq:g} Hz to {h_freq:g} Hz "
            f"(source rate {source_sfreq:g} Hz, Nyquist {nyquist:g} Hz)"
        )
    if notch is not None and notch >= h_freq:
        notes.append(f"notch at {notch:g} Hz dropped: at or above the band-pass upper edge {h_freq:g} Hz")
        notch = None
    return SignalParams(l_freq=params.l_freq, h_freq=h_freq, notch=notch, sfreq=params.sfreq), notes


def pad_to_whole_seconds(
    signals: np.ndarray, sfreq: float, rule: str = "pad", source: str = "<array>"
) -> tuple[np.ndarray, list[str]]:
    """Trials ``(n, C, N)`` at ``sfreq`` cropped to whole seconds, or, when shorter than 1 s, padded to 1 s with
    each channel's trial mean (``rule="pad"``); the notes say which."""
    per_second = int(round(sfreq))
    n_times = signals.shape[2]
    seconds = n_times // per_second
    if seconds >= 1:
        return np.ascontiguousarray(signals[:, :, : seconds * per_second]), []
    if rule != "pad":
        raise RecordingError(
            source, f"trials are {n_times / sfreq:.2f} s, shorter than one 1-s patch (short_trials=refuse)"
        )
    fill = signals.mean(axis=2, keepdims=True)
    tail = np.broadcast_to(fill, (*signals.shape[:2], per_second - n_times))
    padded = np.concatenate([signals, tail.astype(signals.dtype)], axis=2)
    note = (
        f"trials of {n_times / sfreq:.3g} s padded to 1 s with each channel's trial mean (short_trials=pad)"
    )
    return np.ascontiguousarray(padded), [note]


@dataclass(frozen=True)
class Normalization:
    """``x' = (x - offset[c]) * gain``: per-channel offsets and one gain, in model units."""

    offset: np.ndarray
    gain: float
    train_cases: int

    def describe(self, kind: str = "dataset", source: str = "train trials") -> str:
        offsets = ", ".join(f"{v:.3g}" for v in self.offset)
        return (
            f"normalize={kind}: per-channel offsets [{offsets}] (100 uV units) subtracted, gain {self.gain:.4g}, "
            f"from {self.train_cases} {source}"
        )


def fit_normalization(train: np.ndarray, target_std: float = 0.1) -> Normalization:
    """Statistics of the train trials ``(n, C, N)`` (model units): each channel's mean over trials and time, and
    the gain taking the median within-trial std (over trials and channels) to ``target_std``."""
    if train.ndim != 3 or train.shape[0] == 0:
        raise ValueError(f"need train trials as (n, C, N) with n > 0, got shape {train.shape}")
    offset = train.mean(axis=(0, 2))
    within = float(np.median(train.std(axis=2)))
    if not np.isfinite(within) or within <= 0:
        raise ValueError(f"train trials have no within-trial variation (median std {within})")
    return Normalization(
        offset=offset.astype(np.float64), gain=target_std / within, train_cases=int(train.shape[0])
    )


def scale_trials(signals: np.ndarray, target_rms: float = 0.1) -> np.ndarray:
    """Trials ``(n, C, N)`` with each channel of each trial divided by its own RMS over the trial (not centred)
    and set to ``target_rms``, keeping the dtype; a flat (all-zero) channel stays zero."""
    x = signals.astype(np.float64)
    rms = np.sqrt((x ** 2).mean(axis=2, keepdims=True))
    out = np.divide(x * target_rms, rms, out=np.zeros_like(x), where=rms > 0)
    return out.astype(signals.dtype)


def apply_normalization(signals: np.ndarray, norm: Normalization) -> np.ndarray:
    """Apply ``norm`` to trials ``(n, C, N)``, keeping the dtype."""
    if signals.shape[1] != len(norm.offset):
        raise ValueError(f"{signals.shape[1]} channels, normalization fitted on {len(norm.offset)}")
    out = (signals.astype(np.float64) - norm.offset[None, :, None]) * norm.gain
    return out.astype(signals.dtype)
