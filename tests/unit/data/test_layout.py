"""Token layout and targets (docs/reference.md §1.2, §2.3, §3.2, §4.1): pure numpy, as Ray Data map_batches steps."""

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
    signals = [
        RNG.standard_normal((3, 800)).astype(np.float32),
        RNG.standard_normal((5, 400)).astype(np.float32),
    ]
    channels = [np.array([0, 41, 82], dtype=np.int16), np.array([17, 43, 63, 88, 90], dtype=np.int16)]
    b = layout_batch(signals, channels, 16)
    assert b["x"].shape == (2, 16, 200) and b["x"].dtype == np.float32
    assert b["input_mask"].sum(1).tolist() == [12, 10] and b["num_chans"].tolist() == [3, 5]
    assert b["input_time"][0, :12].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert b["input_chans"][1, :10].tolist() == [17, 43, 63, 88, 90] * 2
    assert (b["input_chans"][0, 12:] == PAD_INDEX).all() and (b["input_time"][0, 12:] == 0).all()
    assert (
        not b["x"][0, 12:].any() and not b["freq_target"][0, 12:].any() and not b["raw_target"][1, 10:].any()
    )


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
    batch = {
        "signal": np.array([flat, flat[:400]], dtype=object),
        "channels": np.array([[0, 1], [5, 6]]),
        "n_channels": np.array([2, 2]),
        "n_seconds": np.array([3, 1]),
        "label": np.array([1, 0]),
    }
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


@pytest.mark.parametrize("targets", [False, True])
def test_layout_of_format_2_arrow_batches_equals_the_format_1_numpy_path(targets):
    """The training path now maps shard format 2 with ``batch_format="pyarrow"``; its model inputs must be
    bit-identical to the old path (format 1 shards, ``batch_format="numpy"``: a (B, C, T·200) ndarray)."""
    import pyarrow as pa

    from neurolm.data.readers.base import RecordingSamples, RecordingTask
    from neurolm.data.shards import samples_to_table

    rng = np.random.default_rng(3)
    samples = RecordingSamples(
        signals=rng.standard_normal((5, 6, 7 * 200)).astype(np.float32), start_s=np.arange(5) * 7.0,
        labels=np.arange(5) % 2, splits=["train"] * 5, channel_indices=np.array([3, 9, 1, 40, 22, 7], np.int16),
        channel_names=tuple("abcdef"), source_sfreq=250.0, source_seconds=35.0,
    )  # fmt: skip
    task = RecordingTask("edf", "edf", "r", ("/r.edf",), "s", "train")
    old = samples_to_table(task, samples, version=1)
    new = samples_to_table(task, samples)
    old_batch = {  # what Ray Data's numpy batches hold for format 1 shards of one shape
        "signal": old.column("signal").combine_chunks().to_numpy_ndarray(),
        "channels": np.array(old.column("channels").to_pylist(), dtype=np.int16),
        "n_channels": old.column("n_channels").to_numpy(), "n_seconds": old.column("n_seconds").to_numpy(),
        "label": old.column("label").to_numpy(),
    }  # fmt: skip
    fn = make_layout_fn(
        32, targets=targets, keep=("label",), truncate=True
    )  # 6 ch x 7 s = 42 tokens: truncated
    want, got = fn(old_batch), fn(new)
    assert isinstance(new, pa.Table) and sorted(want) == sorted(got)
    for key in want:
        assert want[key].dtype == got[key].dtype
        np.testing.assert_array_equal(want[key], got[key], err_msg=key)
    assert got["num_tokens"].tolist() == [30] * 5  # 5 whole seconds of 6 channels fit in 32 tokens


def test_instruction_layout_carries_sample_keys_only_when_asked() -> None:
    """``train.record_samples`` in stage 3: each laid-out row carries the key of its shard row's ``sample_id``."""
    from neurolm.data.layout import instruction_layout, sample_keys
    from neurolm.data.readers.base import RecordingSamples, RecordingTask
    from neurolm.data.shards import samples_to_table
    from neurolm.data.tasks import get_task
    from neurolm.train.stages.instruct import task_tokens

    rng = np.random.default_rng(4)
    samples = RecordingSamples(
        signals=rng.standard_normal((4, 6, 2 * 200)).astype(np.float32), start_s=np.arange(4) * 2.0,
        labels=np.arange(4) % 2, splits=["train"] * 4, channel_indices=np.arange(6, dtype=np.int16),
        channel_names=tuple("abcdef"), source_sfreq=256.0, source_seconds=8.0,
    )  # fmt: skip
    table = samples_to_table(RecordingTask("ts", "ts", "r", ("/r",), "s", "train"), samples)
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}  # Ray's numpy
    tokens = task_tokens(get_task("SelfRegulationSCP1"))
    plain = instruction_layout(batch, tokens, eeg_max_len=16, text_max_len=40, evaluation=False)
    keyed = instruction_layout(batch, tokens, eeg_max_len=16, text_max_len=40, evaluation=False, sample_key=True)
    assert "sample_key" not in plain and sorted(keyed) == sorted([*plain, "sample_key"])
    np.testing.assert_array_equal(keyed["sample_key"], sample_keys([f"ts/r/{i:06d}" for i in range(4)]))
    assert len(set(keyed["sample_key"].tolist())) == 4


def test_patchify_into_writes_patchify_into_the_batch_and_padding_is_zero() -> None:
    from neurolm.data.layout import layout_batch, patchify, patchify_into

    rng = np.random.default_rng(0)
    sig = rng.standard_normal((3, 4 * 200)).astype(np.float32)
    out = np.full((12, 200), np.nan, dtype=np.float32)
    assert patchify_into(out, sig) is out
    np.testing.assert_array_equal(out, patchify(sig))
    with pytest.raises(ValueError, match="whole number"):
        patchify_into(out, sig[:, :-1])
    # x is allocated uninitialised: every padded row must still be exactly 0, whatever the allocator hands out
    for _ in range(3):
        garbage = np.full((2, 40, 200), 7.0, dtype=np.float32)  # leave non-zero memory behind
        del garbage
        b = layout_batch([sig, sig[:2, :400]], [np.arange(3), np.arange(2)], 40, targets=False)
        np.testing.assert_array_equal(b["x"][0, :12], patchify(sig))
        np.testing.assert_array_equal(b["x"][1, :4], patchify(sig[:2, :400]))
        assert not b["x"][0, 12:].any() and not b["x"][1, 4:].any()
