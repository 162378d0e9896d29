"""Token layout and training targets: pure functions on numpy batches (Ray Data ``map_batches`` steps).

Layout (docs/reference.md §1.2): a sample ``(C, T·200)`` in units of 100 µV becomes ``T·C`` patches of 200 samples,
**time-major** (all channels of second 0, then second 1, …), padded with zero patches to ``max_tokens``:

- ``x`` (N, L, 200) float32 patches;
- ``input_chans`` (N, L) int64: 10-20 vocabulary index of each token's channel, ``PAD_INDEX`` (136) for padding;
- ``input_time`` (N, L) int64: second index, 0 for padding;
- ``input_mask`` (N, L) bool: True for real tokens;
- ``num_chans`` / ``num_tokens`` (N,) int64: C and C·T per sample.

Tokenizer targets (docs/reference.md §2.3), zero on padding rows:

- :func:`fourier_amplitude_target`: ``|FFT|`` of each patch, z-scored with one mean and one (unbiased) std over
  all real tokens × 200 bins of the sample, first 100 bins kept;
- :func:`raw_signal_target`: the patches z-scored the same way.

Pre-training targets (docs/reference.md §3.2) are built from the model's own codes: ``neurolm.models.neurolm.next_code_targets``.
Instruction tuning (docs/reference.md §4.1): :func:`instruction_text_batch` / :func:`prompt_batch` build
``[SEP] Question: … Answer: <answer> <|endoftext|>`` rows, padded with ``<|endoftext|>``, with targets on the
answer tokens only. Attention masks are *not* built here: the model builds them on the device
(:mod:`neurolm.models.masks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurolm.channels import PAD_INDEX
from neurolm.data.shards import batch_to_signals
from neurolm.vocab import EOT_ID

if TYPE_CHECKING:
    from neurolm.data.tasks import TaskTokens

__all__ = [
    "instruction_layout",
    "PATCH_SIZE",
    "FREQ_BINS",
    "patchify",
    "patchify_into",
    "fourier_amplitude_target",
    "raw_signal_target",
    "layout_batch",
    "make_layout_fn",
    "shard_columns",
    "instruction_text_batch",
    "prompt_batch",
    "layout_instruction_batch",
]

PATCH_SIZE = 200
"""Samples per patch: 1 s at 200 Hz."""
FREQ_BINS = 100
"""Fourier-amplitude bins kept as the frequency target."""
TEXT_PAD_ID = EOT_ID
"""Instruction text is padded with ``<|endoftext|>`` (official)."""


def patchify(signal: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """``(C, T·P)`` → ``(T·C, P)``, time-major: row ``t·C + c`` is second ``t`` of channel ``c``."""
    C, n = signal.shape
    return patchify_into(np.empty((C * (n // patch_size), patch_size), dtype=signal.dtype), signal, patch_size)


def patchify_into(out: np.ndarray, signal: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """:func:`patchify` written straight into ``out`` (``(T·C, P)``, C-contiguous): one strided copy, where
    ``patchify`` then a copy into the batch make two. Returns ``out``."""
    C, n = signal.shape
    if n % patch_size:
        raise ValueError(f"signal length {n} is not a whole number of {patch_size}-sample patches")
    T = n // patch_size
    out.reshape(T, C, patch_size)[...] = signal.reshape(C, T, patch_size).transpose(1, 0, 2)
    return out


def _zscore(values: np.ndarray) -> np.ndarray:
    """One mean and one unbiased std over all values of a sample (official ``std_norm``)."""
    return (values - values.mean()) / values.std(ddof=1)


def fourier_amplitude_target(patches: np.ndarray, n_bins: int = FREQ_BINS) -> np.ndarray:
    """``(n, P)`` real patches of one sample → ``(n, n_bins)`` z-scored ``|FFT|`` (docs/reference.md §2.3)."""
    amplitude = np.abs(np.fft.fft(patches.astype(np.float64), axis=-1))  # (n, P)
    return _zscore(amplitude)[:, :n_bins].astype(np.float32)


def raw_signal_target(patches: np.ndarray) -> np.ndarray:
    """``(n, P)`` real patches of one sample → the same z-scored per sample (docs/reference.md §2.3)."""
    return _zscore(patches.astype(np.float64)).astype(np.float32)


def _as_samples(
    signal: Any, channels: Any, n_channels: Any, n_seconds: Any, patch_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalise the accepted input forms to a list of ((C, T·P) float32, (C,) int64)."""
    out = []
    for i in range(len(signal)):
        sig = np.asarray(signal[i], dtype=np.float32)
        chans = np.asarray(channels[i]).astype(np.int64).reshape(-1)
        C = int(n_channels[i]) if n_channels is not None else (sig.shape[0] if sig.ndim == 2 else len(chans))
        if sig.ndim == 1:
            sig = sig.reshape(C, -1)  # flat row-major (C·T·P,) storage
        sig = sig[:C]
        chans = chans[:C]
        if n_seconds is not None:
            sig = sig[:, : int(n_seconds[i]) * patch_size]
        if sig.shape[0] != len(chans):
            raise ValueError(f"sample {i}: {sig.shape[0]} signal rows but {len(chans)} channel indices")
        out.append((sig, chans))
    return out


def layout_batch(
    signal: Sequence[np.ndarray] | np.ndarray,
    channels: Sequence[np.ndarray] | np.ndarray,
    max_tokens: int,
    *,
    n_channels: Sequence[int] | np.ndarray | None = None,
    n_seconds: Sequence[int] | np.ndarray | None = None,
    targets: bool = True,
    max_seconds: int | None = None,
    truncate: bool = False,
    patch_size: int = PATCH_SIZE,
) -> dict[str, np.ndarray]:
    """Lay out a batch of samples as padded token sequences (docs/reference.md §1.2), with tokenizer targets.

    ``signal``: per sample ``(C_i, T_i·P)`` (or flat ``(C_i·T_i·P,)`` with ``n_channels``), units of 100 µV;
    samples may differ in C and T. ``channels``: per sample ``(C_i,)`` 10-20 indices (int16 is fine).
    ``n_channels``/``n_seconds`` crop padded inputs. A sample with more than ``max_tokens`` tokens raises,
    unless ``truncate`` drops its trailing seconds; one longer than ``max_seconds`` (the model's time table)
    raises. Returns the arrays listed in the module docstring, plus ``freq_target`` (N, L, 100) and
    ``raw_target`` (N, L, P) when ``targets``.
    """
    samples = _as_samples(signal, channels, n_channels, n_seconds, patch_size)
    N, L = len(samples), max_tokens
    x = np.empty((N, L, patch_size), dtype=np.float32)  # every row written below: real patches, then zeros
    input_chans = np.full((N, L), PAD_INDEX, dtype=np.int64)
    input_time = np.zeros((N, L), dtype=np.int64)
    input_mask = np.zeros((N, L), dtype=bool)
    num_chans = np.zeros(N, dtype=np.int64)
    num_tokens = np.zeros(N, dtype=np.int64)
    if targets:
        freq_target = np.zeros((N, L, FREQ_BINS), dtype=np.float32)
        raw_target = np.zeros((N, L, patch_size), dtype=np.float32)
    for i, (sig, chans) in enumerate(samples):
        C = sig.shape[0]
        T = sig.shape[1] // patch_size
        if C * T > L:
            if not truncate:
                raise ValueError(
                    f"sample {i} has {C} channels x {T} s = {C * T} tokens > max_tokens {L}; "
                    "cut shorter windows or pass truncate=True"
                )
            T = L // C
            sig = sig[:, : T * patch_size]
        if max_seconds is not None and T > max_seconds:
            raise ValueError(
                f"sample {i} lasts {T} s but the model's time table has {max_seconds} rows "
                "(raise max_seconds in the model config)"
            )
        n = C * T
        patches = patchify_into(x[i, :n], sig, patch_size)  # (n, P), a view of x
        x[i, n:] = 0.0
        input_chans[i, :n] = np.tile(chans, T)
        input_time[i, :n] = np.repeat(np.arange(T), C)
        input_mask[i, :n] = True
        num_chans[i], num_tokens[i] = C, n
        if targets and n:
            freq_target[i, :n] = fourier_amplitude_target(patches)
            raw_target[i, :n] = raw_signal_target(patches)
    out = {
        "x": x,
        "input_chans": input_chans,
        "input_time": input_time,
        "input_mask": input_mask,
        "num_chans": num_chans,
        "num_tokens": num_tokens,
    }
    if targets:
        out["freq_target"], out["raw_target"] = freq_target, raw_target
    return out


def shard_columns(batch: Any) -> dict[str, Any]:
    """The columns :func:`layout_batch` needs from a Ray Data batch of shard rows, decoded without copying the
    signal: ``signal`` as per-sample ``(C, T·200)`` arrays, ``channels`` as per-sample index arrays, and
    ``n_channels``, ``n_seconds``, ``label`` (when present) as numpy arrays.

    ``batch`` is a ``pyarrow.Table`` (``map_batches(batch_format="pyarrow")``) or a dict of numpy arrays
    (``batch_format="numpy"``), from shards of either format (:mod:`neurolm.data.shards`).
    """
    import pyarrow as pa

    from neurolm.data.shards import batch_to_signals

    if isinstance(batch, pa.Table):
        names = batch.column_names
        channels = batch.column("channels").combine_chunks()
        flat = channels.flatten().to_numpy()
        offsets = channels.offsets.to_numpy()
        out = {
            "signal": batch_to_signals(batch),
            "channels": [flat[offsets[i] : offsets[i + 1]] for i in range(len(channels))],
        }
        for name in ("n_channels", "n_seconds", "label"):
            out[name] = batch.column(name).to_numpy() if name in names else None
        if "sample_id" in names:  # strings, for train.record_samples (neurolm.data.layout.sample_keys)
            out["sample_id"] = batch.column("sample_id").to_pylist()
        return {k: v for k, v in out.items() if v is not None or k in ("n_channels", "n_seconds")}
    out = {
        "signal": batch_to_signals(batch) if "n_channels" in batch else batch["signal"],
        "channels": batch["channels"],
        "n_channels": batch.get("n_channels"),
        "n_seconds": batch.get("n_seconds"),
    }
    for name in ("label", "sample_id"):
        if name in batch:
            out[name] = batch[name]
    return out


def make_layout_fn(
    max_tokens: int, targets: bool = True, keep: Sequence[str] = ("label",), truncate: bool = False
) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """A ``map_batches`` function over sample-shard columns (``signal``, ``channels``, optional ``n_channels``,
    ``n_seconds``) returning :func:`layout_batch`'s arrays plus the ``keep`` columns that are present.

    It takes ``batch_format="pyarrow"`` batches (fastest: the signal is read in place from the Arrow buffer) or
    ``"numpy"`` ones, of either shard format (see :func:`shard_columns`)."""

    def layout_fn(batch: Any) -> dict[str, np.ndarray]:
        columns = shard_columns(batch)
        out = layout_batch(
            columns["signal"],
            columns["channels"],
            max_tokens,
            n_channels=columns["n_channels"],
            n_seconds=columns["n_seconds"],
            targets=targets,
            truncate=truncate,
        )
        for name in keep:
            if name in columns:
                out[name] = np.asarray(columns[name])
        if "sample_key" in keep:
            out["sample_key"] = sample_keys(columns["sample_id"])
        return out

    return layout_fn


def sample_keys(sample_ids: Sequence[str]) -> np.ndarray:
    """A stable int64 per ``sample_id`` (the first 8 bytes of its BLAKE2b digest), for batches that carry sample
    identity as tensors (``train.record_samples``)."""
    import hashlib

    return np.array(
        [int.from_bytes(hashlib.blake2b(str(s).encode(), digest_size=8).digest(), "little", signed=True)
         for s in sample_ids],
        dtype=np.int64,
    )


def instruction_text_batch(
    labels: Sequence[int] | np.ndarray,
    texts: Sequence[Sequence[int]],
    target_start: int,
    text_max_len: int,
) -> dict[str, np.ndarray]:
    """Training text rows (docs/reference.md §4.1): ``text`` (N, text_max_len) = the label's token ids (``texts[label]``,
    ``[SEP] + encode(question + " " + answer + " <|endoftext|>")``) padded with ``<|endoftext|>``; and
    ``text_targets`` (N, text_max_len) = -1 except ``targets[p-1 : v-1] = text[p : v]`` with
    ``p = target_start`` (see :class:`neurolm.data.tasks.TaskTokens`) and ``v`` the unpadded length.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    N = len(labels)
    text = np.full((N, text_max_len), TEXT_PAD_ID, dtype=np.int64)
    text_targets = np.full((N, text_max_len), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        if not 0 <= label < len(texts):
            raise ValueError(f"label {label} outside the task's {len(texts)} classes")
        ids = np.asarray(texts[label], dtype=np.int64)
        v = len(ids)
        if v > text_max_len:
            raise ValueError(f"instruction text of {v} tokens exceeds text_max_len {text_max_len}")
        text[i, :v] = ids
        text_targets[i, target_start - 1 : v - 1] = ids[target_start:v]
    return {"text": text, "text_targets": text_targets}


def prompt_batch(n: int, prompt: Sequence[int]) -> dict[str, np.ndarray]:
    """Evaluation prompts (N, P): ``[SEP] + encode(question ending "Answer:" or "Answer: (")``."""
    return {"prompt": np.tile(np.asarray(prompt, dtype=np.int64), (n, 1))}


def layout_instruction_batch(
    signal: Sequence[np.ndarray] | np.ndarray,
    channels: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    task_tokens: Any,
    eeg_max_len: int = 276,
    text_max_len: int = 80,
    evaluation: bool = False,
    **layout_kwargs: Any,
) -> dict[str, np.ndarray]:
    """EEG layout (no tokenizer targets) + training text (or, with ``evaluation``, prompts) for one task.

    ``task_tokens`` is a :class:`neurolm.data.tasks.TaskTokens`. Official lengths: EEG 276, text 80 tokens.
    """
    out = layout_batch(signal, channels, eeg_max_len, targets=False, **layout_kwargs)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    out["label"] = labels
    if evaluation:
        out.update(prompt_batch(len(labels), task_tokens.prompt))
    else:
        out.update(instruction_text_batch(labels, task_tokens.texts, task_tokens.target_start, text_max_len))
    return out


def instruction_layout(
    batch: dict[str, Any], tokens: TaskTokens, eeg_max_len: int, text_max_len: int, evaluation: bool,
    sample_key: bool = False,
) -> dict[str, np.ndarray]:
    """Ray Data step of stage 3 and evaluation: shard rows → EEG layout + instruction text (or, with
    ``evaluation``, the evaluation prompt); every row needs a label. ``sample_key`` adds :func:`sample_keys` of
    the rows' ``sample_id`` (``train.record_samples``)."""
    labels = np.asarray(batch["label"])
    if (labels < 0).any():
        raise ValueError("instruction shards need a label on every sample (found -1)")
    out = layout_instruction_batch(
        batch_to_signals(batch), list(batch["channels"]), labels, tokens,
        eeg_max_len=eeg_max_len, text_max_len=text_max_len, evaluation=evaluation, truncate=True,
    )
    out.pop("num_chans", None)
    out.pop("num_tokens", None)
    if sample_key:
        out["sample_key"] = sample_keys(batch["sample_id"])
    return out
