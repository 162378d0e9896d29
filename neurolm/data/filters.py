"""MNE's FIR band-pass, FIR notch and FFT resampling, applied to many channels at once (docs/data.md, "Speed
references").

``Raw.filter``, ``Raw.notch_filter`` and ``Raw.resample`` loop over channels in Python, and the FIR filters also
loop over ~4-40 overlap-add blocks per channel: on a 64-channel recording, over a thousand small FFT calls, none
using pocketfft's SIMD batching of several transforms. Here:

- the kernels are MNE's (``mne.filter.create_filter`` with the arguments those methods pass), re-derived in a few
  lines of numpy so that ``scipy.signal`` is never imported (:func:`bandpass_kernel`, :func:`notch_kernel`; equal
  to ``create_filter`` bit for bit);
- :func:`bandpass` and :func:`notch` repeat MNE's overlap-add step by step (same padding, FFT length, blocks, order
  of additions and trimming) on a ``(C, N)`` array: MNE's result bit for bit. They serve recordings shorter than
  the kernels;
- :func:`bandpass_notch` computes both filters as one FFT convolution, with the ends done exactly as MNE does
  them, and :func:`resample` is MNE's FFT resampling on all rows at once: MNE's result to ~1e-15 of the signal
  scale. :func:`filter_and_resample` chains them a block of channels at a time.

Every function takes float64 ``(C, N)`` arrays in any unit (the operations are linear) and treats them as one
contiguous segment: recordings whose annotations split them (``EDGE``/``BAD_ACQ_SKIP``) are left to MNE by the
caller (``neurolm.data.signal``).
"""

from __future__ import annotations

import mne
import numpy as np
from scipy import fft

__all__ = [
    "bandpass",
    "notch",
    "resample",
    "resampled_length",
    "bandpass_notch",
    "filter_and_resample",
    "bandpass_kernel",
    "notch_kernel",
    "SKIP_ANNOTATIONS",
]

SKIP_ANNOTATIONS = ("EDGE", "BAD_ACQ_SKIP")
"""Annotation prefixes at which ``Raw.filter``/``Raw.notch_filter`` split a recording (their
``skip_by_annotation`` default); a recording with any of them is filtered by MNE itself."""


def _pad(x: np.ndarray, left: int, right: int, mode: str) -> np.ndarray:
    """``mne.cuda._smart_pad(x, (left, right), mode)`` on the last axis of a 2-D array."""
    if left == 0 and right == 0:
        return x
    if mode == "reflect_limited":
        # Odd reflection about the end samples, zero-filled where the pad is longer than the signal.
        n_times = x.shape[-1]
        left_zeros = np.zeros((x.shape[0], max(left - n_times + 1, 0)), dtype=x.dtype)
        right_zeros = np.zeros((x.shape[0], max(right - n_times + 1, 0)), dtype=x.dtype)
        return np.concatenate(
            [
                left_zeros,
                2 * x[:, :1] - x[:, left:0:-1],
                x,
                2 * x[:, -1:] - x[:, -2 : -right - 2 : -1],
                right_zeros,
            ],
            axis=-1,
        )
    if mode == "edge":
        return np.pad(x, [(0, 0), (left, right)], "edge")
    raise ValueError(f"unsupported pad mode {mode!r}")


def _fft_length(n_h: int, n_x: int) -> int:
    """The block length ``mne.filter._overlap_add_filter`` picks (its cost model, unchanged)."""
    min_fft = 2 * n_h - 1
    if n_x < min_fft:
        return int(mne.filter.next_fast_len(min_fft))
    sizes = 2 ** np.arange(np.ceil(np.log2(min_fft)), np.ceil(np.log2(n_x)) + 1, dtype=int)
    cost = np.ceil(n_x / (sizes - n_h + 1).astype(np.float64)) * sizes * (np.log2(sizes) + 1)
    cost += 4e-5 * sizes * n_x
    return int(sizes[np.argmin(cost)])


def _overlap_add_zero_phase(x: np.ndarray, h: np.ndarray, pad: str) -> np.ndarray:
    """``mne.filter._overlap_add_filter(x, h, phase="zero", pad=pad)`` for every row of ``x`` (C, N) at once."""
    n_h = len(h)
    if n_h == 1:
        return x * h
    n_times = x.shape[1]
    n_edge = max(min(n_h, n_times) - 1, 0)
    x_ext = _pad(x, n_edge, n_edge, pad)  # (C, N + 2·n_edge)
    n_x = x_ext.shape[1]
    n_fft = _fft_length(n_h, n_x)
    h_fft = fft.rfft(h, n=n_fft)
    n_seg = n_fft - n_h + 1
    shift = (n_h - 1) // 2 + n_edge
    filtered = np.zeros_like(x_ext)
    for start in range(0, n_x, n_seg):
        # Same block, zero-padded to n_fft, as MNE's per-channel loop; the additions run in the same order.
        spectrum = fft.rfft(x_ext[:, start : start + n_seg], n=n_fft, axis=-1)  # (C, n_fft // 2 + 1)
        spectrum *= h_fft
        block = fft.irfft(spectrum, n=n_fft, axis=-1)  # (C, n_fft)
        start_filt, stop_filt = max(0, start - shift), min(start - shift + n_fft, n_x)
        start_prod = max(0, shift - start)
        filtered[:, start_filt:stop_filt] += block[:, start_prod : start_prod + stop_filt - start_filt]
    return filtered[:, :n_times]


# ---- filter design: mne.filter.create_filter(method="fir", fir_design="firwin", fir_window="hamming", phase="zero")
# MNE designs with scipy.signal.firwin, and importing scipy.signal (which imports scipy.stats) costs ~1.2 CPU-s in
# every fresh process -- more than filtering a 10-minute recording. The few lines of arithmetic below are MNE's
# and SciPy's, in the same order; the unit tests compare the kernels with create_filter's.

_HAMMING_LENGTH_FACTOR = 3.3  # mne.filter._length_factors["hamming"]: filter length × transition width


def _hamming(n_taps: int) -> np.ndarray:
    """``scipy.signal.get_window("hamming", n_taps, fftbins=False)``."""
    if n_taps <= 1:
        return np.ones(n_taps)
    angle = np.linspace(-np.pi, np.pi, n_taps)
    window = np.zeros(n_taps)
    for k, weight in enumerate(np.asarray([0.54, 1.0 - 0.54])):
        window += weight * np.cos(k * angle)
    return window


def _firwin_lowpass(n_taps: int, cutoff: float) -> np.ndarray:
    """``scipy.signal.firwin(n_taps, cutoff, window="hamming", pass_zero=True, fs=2)`` (cutoff in units of
    Nyquist)."""
    m = np.arange(0, n_taps, dtype=np.float64) - 0.5 * (n_taps - 1)
    h = cutoff * np.sinc(cutoff * m)
    h -= 0.0 * np.sinc(0.0 * m)  # the band's left edge, 0 (kept: SciPy's arithmetic, term for term)
    h *= _hamming(n_taps)
    h /= np.sum(h * np.cos(np.pi * m * 0.0))  # unit gain at 0 Hz
    return h


def _firwin_design(n_taps: int, freq: np.ndarray, gain: np.ndarray) -> np.ndarray | None:
    """``mne.filter._firwin_design`` with a Hamming window: the sum of one windowed-sinc low-pass per gain step,
    each as long as its transition band needs. ``None`` where MNE would raise (the caller lets MNE say why)."""
    h = np.zeros(n_taps)
    prev_freq, prev_gain = freq[-1], gain[-1]
    if gain[-1] == 1:
        h[n_taps // 2] = 1
    for this_freq, this_gain in zip(freq[::-1][1:], gain[::-1][1:], strict=True):
        if this_gain != prev_gain:
            transition = (prev_freq - this_freq) / 2.0
            this_n = int(round(_HAMMING_LENGTH_FACTOR / transition))
            this_n += 1 - this_n % 2
            if this_n > n_taps:
                return None
            lowpass = _firwin_lowpass(this_n, (prev_freq + this_freq) / 2.0)
            offset = (n_taps - this_n) // 2
            if this_gain == 0:
                h[offset : n_taps - offset] -= lowpass
            else:
                h[offset : n_taps - offset] += lowpass
        prev_gain, prev_freq = this_gain, this_freq
    return h


def _auto_length(sfreq: float, transition: float) -> int:
    """MNE's ``filter_length="auto"``: 3.3 / (narrowest transition) seconds, rounded up to odd samples."""
    seconds = float(f"{_HAMMING_LENGTH_FACTOR * 1.0 / float(transition)}")  # MNE passes it as a "<x>s" string
    n_taps = max(int(np.ceil(seconds * 1 * sfreq)), 1)
    return n_taps + (n_taps - 1) % 2


def _kernel(
    sfreq: float, n_taps: int, freq: list[float] | np.ndarray, gain: list[float] | np.ndarray
) -> np.ndarray | None:
    freq = np.array(freq) / (sfreq / 2.0)
    gain = np.array(gain)
    if freq[0] != 0 or freq[-1] != 1 or n_taps % 2 == 0:
        return None
    return _firwin_design(n_taps, freq, gain)


def bandpass_kernel(sfreq: float, l_freq: float, h_freq: float) -> np.ndarray:
    """The FIR kernel of ``raw.filter(l_freq, h_freq)`` (MNE's defaults: auto transition bands and length)."""
    sfreq = float(sfreq)
    nyquist = sfreq / 2.0
    l_freq, h_freq = float(l_freq), float(h_freq)
    l_trans = float(np.minimum(np.maximum(0.25 * l_freq, 2.0), l_freq))
    h_trans = float(np.minimum(np.maximum(0.25 * h_freq, 2.0), nyquist - h_freq))
    h = None
    if 0 < l_freq < h_freq < nyquist and h_trans > 0:
        l_stop, h_stop = l_freq - l_trans, h_freq + h_trans
        freq, gain = [l_stop, l_freq, h_freq, h_stop], [0, 1, 1, 0]
        if h_stop != nyquist:
            freq, gain = [*freq, nyquist], [*gain, 0]
        if l_stop != 0:
            freq, gain = [0, *freq], [0, *gain]
        h = _kernel(sfreq, _auto_length(sfreq, min(h_trans, l_trans)), freq, gain)
    if h is None:  # outside what is replicated here: MNE designs it (or raises its own error)
        h = mne.filter.create_filter(
            None, sfreq, l_freq, h_freq, "auto", "auto", "auto", "fir", None, "zero", "hamming", "firwin",
            verbose="error",
        )  # fmt: skip
    return h


def notch_kernel(sfreq: float, freq: float) -> np.ndarray:
    """The FIR kernel of ``raw.notch_filter(freq)`` (MNE's defaults): a band-stop at ``freq ± (freq / 400 +
    0.5)`` Hz with 0.5-Hz transition bands (``notch_widths = freq / 200``, ``trans_bandwidth = 1``)."""
    sfreq = float(sfreq)
    freqs = np.atleast_1d(float(freq))
    widths = freqs / 200.0
    half_transition = 1.0 / 2.0
    lows = np.array(
        [f - w / 2.0 - half_transition for f, w in zip(freqs, widths, strict=True)], float
    ).ravel()
    highs = np.array(
        [f + w / 2.0 + half_transition for f, w in zip(freqs, widths, strict=True)], float
    ).ravel()
    h = None
    if (highs < sfreq / 2.0).all() and (lows > 0).all():
        transition = np.array(half_transition, float).ravel()
        # mne.filter._triage_filter_params(..., reverse=True): stop and pass edges, computed as MNE does.
        stop_low, pass_low = lows + transition, lows - transition
        pass_low += transition
        stop_high, pass_high = highs - transition, highs + transition
        pass_high -= transition
        edges = np.r_[pass_low, stop_low, stop_high, pass_high]
        gains = np.r_[
            np.ones_like(pass_low), np.zeros_like(stop_low), np.zeros_like(stop_high), np.ones_like(pass_high)
        ]
        order = np.argsort(edges)
        edges, gains = edges[order], gains[order]
        if edges[0] != 0:
            edges, gains = np.r_[[0.0], edges], np.r_[[1.0], gains]
        if edges[-1] != sfreq / 2.0:
            edges, gains = np.r_[edges, [sfreq / 2.0]], np.r_[gains, [1.0]]
        n_taps = _auto_length(sfreq, min(transition))
        h = _kernel(sfreq, n_taps, edges, gains)
    if h is None:
        h = mne.filter.create_filter(
            None, sfreq, list(highs), list(lows), "auto", half_transition, half_transition, "fir", None, "zero",
            "hamming", "firwin", verbose="error",
        )  # fmt: skip
    return h


def bandpass(x: np.ndarray, sfreq: float, l_freq: float, h_freq: float) -> np.ndarray:
    """``raw.filter(l_freq, h_freq)`` with MNE's defaults (FIR, firwin, Hamming, zero phase, ``pad="reflect_limited"``)."""
    return _overlap_add_zero_phase(x, bandpass_kernel(sfreq, l_freq, h_freq), pad="reflect_limited")


def notch(x: np.ndarray, sfreq: float, freq: float) -> np.ndarray:
    """``raw.notch_filter(freq)`` with MNE's defaults (FIR band-stop of :func:`notch_kernel`,
    ``pad="reflect_limited"``)."""
    return _overlap_add_zero_phase(x, notch_kernel(sfreq, freq), pad="reflect_limited")


def _conv_at(x: np.ndarray, h: np.ndarray, start: int, count: int) -> np.ndarray:
    """Samples ``start .. start + count`` of the full linear convolution of each row of ``x`` with ``h``, from
    one FFT of the rows' needed part (circular wrap-around lands only outside the kept range)."""
    first = start - len(h) + 1
    assert first >= 0 and start + count <= x.shape[1]
    segment = x[:, first : start + count]
    n_fft = fft.next_fast_len(segment.shape[1], real=True)
    spectrum = fft.rfft(segment, n=n_fft, axis=-1)
    spectrum *= fft.rfft(h, n=n_fft)
    return fft.irfft(spectrum, n=n_fft, axis=-1)[:, len(h) - 1 : len(h) - 1 + count]


def _kernels(
    sfreq: float, l_freq: float, h_freq: float, notch_freq: float | None
) -> tuple[np.ndarray, np.ndarray]:
    notch_h = notch_kernel(sfreq, notch_freq) if notch_freq is not None else np.ones(1)
    return bandpass_kernel(sfreq, l_freq, h_freq), notch_h


def bandpass_notch(
    x: np.ndarray,
    sfreq: float,
    l_freq: float,
    h_freq: float,
    notch_freq: float | None,
    kernels: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """:func:`bandpass` then :func:`notch` (if ``notch_freq``) with one FFT convolution per row.

    MNE filters twice, each time padding the signal's ends by odd reflection. Away from the ends (more than
    half the notch kernel) its result is the convolution of the band-pass's padded input with both kernels
    convolved, which is computed here in one pass; the notch's first and last half-kernel samples, which see
    its own padding of the band-passed signal, are computed exactly that way from the band-passed ends. The
    result equals MNE's up to rounding (~1e-15 of the signal scale; unit tests). Recordings shorter than
    either kernel take the block-by-block replica of MNE instead.
    """
    h1, h2 = kernels or _kernels(sfreq, l_freq, h_freq, notch_freq)
    n1, n2, n_times = len(h1), len(h2), x.shape[1]
    if n_times < max(n1, n2) or n1 == 1:
        filtered = _overlap_add_zero_phase(x, h1, pad="reflect_limited")
        return filtered if n2 == 1 else _overlap_add_zero_phase(filtered, h2, pad="reflect_limited")
    e1, c1 = n1 - 1, (n1 - 1) // 2  # band-pass: padding per side, centre of the kernel
    e2, c2 = n2 - 1, (n2 - 1) // 2
    # (C, N + 2·e1): MNE's band-pass padding; band-passed sample i is the full convolution at e1 + c1 + i.
    padded = _pad(x, e1, e1, "reflect_limited")
    if n2 == 1:
        return _conv_at(padded, h1, e1 + c1, n_times)
    out = np.empty_like(x)
    out[:, c2 : n_times - c2] = _conv_at(padded, np.convolve(h1, h2), e1 + c1 + 2 * c2, n_times - 2 * c2)
    head = _conv_at(padded, h1, e1 + c1, n2)  # band-passed samples 0 .. e2
    tail = _conv_at(padded, h1, e1 + c1 + n_times - n2, n2)  # band-passed samples N - n2 .. N - 1
    # The notch's own padding of the band-passed ends (reflect_limited), then its first/last c2 outputs.
    head_padded = np.concatenate([2 * head[:, :1] - head[:, e2:0:-1], head[:, :e2]], axis=-1)  # (C, 2·e2)
    tail_padded = np.concatenate([tail[:, -e2:], 2 * tail[:, -1:] - tail[:, -2 : -e2 - 2 : -1]], axis=-1)
    out[:, :c2] = _conv_at(head_padded, h2, c2 + e2, c2)
    out[:, n_times - c2 :] = _conv_at(tail_padded, h2, e2, c2)
    return out


def resampled_length(n_times: int, sfreq: float, new_sfreq: float) -> int:
    """The number of samples ``raw.resample(new_sfreq)`` returns."""
    return max(int(round(new_sfreq / sfreq * n_times)), 1)


def resample(x: np.ndarray, sfreq: float, new_sfreq: float) -> np.ndarray:
    """``raw.resample(new_sfreq)`` with MNE's defaults (FFT method, ``npad="auto"``, boxcar window,
    ``pad="reflect_limited"``) on every row of ``x`` (C, N) at once."""
    ratio = float(new_sfreq) / float(sfreq)
    x_len = x.shape[-1]
    final_len = resampled_length(x_len, sfreq, new_sfreq)
    # npad="auto": pad to the next power of two with at least min(N // 8, 100) samples per side.
    min_add = min(x_len // 8, 100) * 2
    n_pad, extra = divmod(2 ** int(np.ceil(np.log2(x_len + min_add))) - x_len, 2)
    orig_len = x_len + 2 * n_pad + extra
    new_len = max(int(round(ratio * orig_len)), 1)
    remove_left = int(round(ratio * n_pad))
    remove_right = new_len - final_len - remove_left
    # MNE multiplies the spectrum by its window, a boxcar (all ones) scaled by new_len / orig_len, and the inverse
    # FFT divides by new_len: together a factor 1 / orig_len, applied here by the forward FFT itself.
    padded = _pad(x, n_pad, n_pad + extra, "reflect_limited")  # (C, orig_len)
    spectrum = fft.rfft(padded, axis=-1, norm="forward")  # (C, orig_len // 2 + 1)
    use_len = min(new_len, orig_len)
    if use_len % 2 == 0:
        nyquist = use_len // 2
        spectrum[:, nyquist : nyquist + 1] *= 2 if new_len < orig_len else 0.5
    y = fft.irfft(spectrum, new_len, axis=-1, norm="forward", overwrite_x=True)  # (C, new_len)
    if remove_left > 0 or remove_right > 0:
        y = y[:, remove_left : new_len - remove_right]
    return y


def filter_and_resample(
    x: np.ndarray,
    sfreq: float,
    l_freq: float,
    h_freq: float,
    notch_freq: float | None,
    new_sfreq: float,
    channels_per_block: int = 16,
) -> np.ndarray:
    """Band-pass, notch (unless ``notch_freq`` is None) and resample ``x`` (C, N) like ``raw.filter``,
    ``raw.notch_filter`` and ``raw.resample``, a block of channels at a time (the working arrays of a block stay
    in cache-sized pieces, and peak memory does not grow with the channel count). Returns (C, N')."""
    kernels = _kernels(sfreq, l_freq, h_freq, notch_freq)
    # MNE returns a recording already at the rate unchanged (Raw.resample's relative tolerance).
    same_rate = np.isclose(new_sfreq, sfreq, atol=0, rtol=1e-6)
    n_out = x.shape[1] if same_rate else resampled_length(x.shape[1], sfreq, new_sfreq)
    out = np.empty((x.shape[0], n_out))
    for start in range(0, x.shape[0], channels_per_block):
        block = bandpass_notch(
            x[start : start + channels_per_block], sfreq, l_freq, h_freq, notch_freq, kernels
        )
        out[start : start + channels_per_block] = block if same_rate else resample(block, sfreq, new_sfreq)
    return out
