"""Token layout and targets (spec §1.2, §2.3, §3.2, §4.1): pure numpy, as Ray Data map_batches steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolm.channels import PAD_INDEX
from neurolm.data.layout import (
    instruction_text_batch,
    layout_batch,
    make_layout_fn,
    patchify,
)

RNG = np.random.default_rng(0)


def test_patches_are_time_major() -> None:
    signal = np.arange(3 * 2 * 200, dtype=np.float32).reshape(3, 400)  # 3 channels, 2 s
    patches = patchify(signal)
    assert patches.shape == (6, 200)
    assert np.array_equal(patches[1], signal[1, :200])  # second 0, channel 1
    assert np.array_equal(patches[3], signal[0, 200:])  # second 1, channel 0


def test_mixed_channel_counts_and_lengths_are_padded() -> None:
    signals = [RNG.standard_normal((3, 800)).astype(np.float32), RNG.standard_normal((5, 400)).astype(np.float32)]
    channels = [np.array([0, 41, 82], dtype=np.int16), np.array([17, 43, 63, 88, 90], dtype=np.int16)]
    b = layout_batch(signals, channels, 16)
    assert b["x"].shape == (2, 16, 200) and b["x"].dtype == np.float32
    assert b["input_mask"].sum(1).tolist() == [12, 10] and b["num_chans"].tolist() == [3, 5]
    assert b["input_time"][0, :12].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert b["input_chans"][1, :10].tolist() == [17, 43, 63, 88, 90] * 2
    assert (b["input_chans"][0, 12:] == PAD_INDEX).all() and (b["input_time"][0, 12:] == 0).all()
    assert not b["x"][0, 12:].any() and not b["freq_target"][0, 12:].any() and not b["raw_target"][1, 10:].any()


def test_targets_are_zscored_per_sample_like_the_official_loader() -> None:
    signal = (RNG.standard_normal((2, 600)) * 3 + 1).astype(np.float32)
    b = layout_batch([signal], [np.array([0, 1])], 8)
    patches = torch.from_numpy(patchify(signal))  # official: torch FFT in float32, unbiased std over all
    amplitude = torch.fft.fft(patches, dim=-1).abs()
    expected_freq = ((amplitude - amplitude.mean()) / amplitude.std())[:, :100]
    expected_raw = (patches - patches.mean()) / patches.std()
    assert np.allclose(b["freq_target"][0, :6], expected_freq.numpy(), atol=1e-5)
    assert np.allclose(b["raw_target"][0, :6], expected_raw.numpy(), atol=1e-5)


def test_too_long_samples_raise_or_lose_whole_seconds() -> None:
    signal = [RNG.standard_normal((4, 1000)).astype(np.float32)]  # 4 channels x 5 s = 20 tokens
    with pytest.raises(ValueError, match="20 tokens > max_tokens 10"):
        layout_batch(signal, [np.arange(4)], 10)
    b = layout_batch(signal, [np.arange(4)], 10, truncate=True)
    assert b["num_tokens"].tolist() == [8] and b["input_time"][0].max() == 1


def test_layout_fn_reads_shard_columns_with_flat_signals() -> None:
    flat = RNG.standard_normal(2 * 3 * 200).astype(np.float32)
    batch = {"signal": np.array([flat, flat[:400]], dtype=object), "channels": np.array([[0, 1], [5, 6]]),
             "n_channels": np.array([2, 2]), "n_seconds": np.array([3, 1]), "label": np.array([1, 0])}
    out = make_layout_fn(8, targets=False)(batch)
    assert out["num_tokens"].tolist() == [6, 2] and out["label"].tolist() == [1, 0]
    assert np.array_equal(out["x"][0, 1], flat.reshape(2, 600)[1, :200])


def test_instruction_targets_cover_the_answer_only() -> None:
    texts = [(50257, 10, 11, 12, 40, 220, 50256), (50257, 10, 11, 12, 41, 220, 50256)]
    out = instruction_text_batch([1, 0], texts, target_start=4, text_max_len=9)
    assert out["text"][0].tolist() == [50257, 10, 11, 12, 41, 220, 50256, 50256, 50256]
    assert out["text_targets"][0].tolist() == [-1, -1, -1, 41, 220, 50256, -1, -1, -1]
    with pytest.raises(ValueError, match="exceeds text_max_len"):
        instruction_text_batch([0], texts, 4, 5)
