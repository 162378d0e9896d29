"""Measure what each way of turning a trial shorter than one 1-s patch into a patch does to the signal the
tokenizer sees (docs/data-events.md "Short windows"): on real EEG (PhysioNet S001R02, processed as the events corpus
does: 0.1-75 Hz, 60 Hz notch, 200 Hz), for trials of L seconds cut every second:

* pad: the L s of EEG followed by zeros;
* resample: the L s stretched to 200 samples (every frequency divided by 1/L);
* extend: the real 1 s centred on the trial.

Reported per option, against real 1-s patches of the same channels: the correlation of the mean log |FFT| (bins
1-75 Hz) with the real patches' mean, the frequency of the 4-30 Hz spectral peak of the mean spectrum, and the
ratio of RMS amplitude.

    python scripts/measure_short_windows.py
"""

from __future__ import annotations

import numpy as np
from scipy.signal import resample

from neurolm.data.samples import fetch_sample
from neurolm.data.signal import SignalParams, load_recording

P = 200


def spectrum(patches: np.ndarray) -> np.ndarray:
    return np.log(np.abs(np.fft.rfft(patches, axis=-1))[:, 1:76] + 1e-6).mean(axis=0)  # 1..75 Hz


def main() -> None:
    rec = load_recording(fetch_sample("S001R02.edf"), SignalParams(notch=60.0))
    data = rec.data.astype(np.float64)  # (64, N) at 200 Hz
    starts = np.arange(P, data.shape[1] - 2 * P, P)
    real = np.concatenate([data[:, s : s + P] for s in starts])  # every channel's 1-s patches
    ref = spectrum(real)
    freqs = np.arange(1, 76)
    band = (freqs >= 4) & (freqs <= 30)
    print(
        f"real 1-s patches: n={len(real)}, peak {freqs[band][np.argmax(ref[band])]} Hz, rms {real.std():.3f}"
    )
    for seconds in (0.25, 0.5, 0.75):
        n = int(seconds * P)
        trials = [data[:, s : s + n] for s in starts]
        pad = np.concatenate([np.pad(t, ((0, 0), (0, P - n))) for t in trials])
        res = np.concatenate([resample(t, P, axis=-1) for t in trials])
        ext = np.concatenate([data[:, s - (P - n) // 2 : s - (P - n) // 2 + P] for s in starts])
        for name, patches in (("pad", pad), ("resample", res), ("extend", ext)):
            spec = spectrum(patches)
            corr = np.corrcoef(spec, ref)[0, 1]
            peak = freqs[band][np.argmax(spec[band])]
            print(
                f"L={seconds:.2f} s {name:8s}: spectrum corr {corr:.3f}, 4-30 Hz peak {peak:2d} Hz, "
                f"rms ratio {patches.std() / real.std():.2f}"
            )


if __name__ == "__main__":
    main()
