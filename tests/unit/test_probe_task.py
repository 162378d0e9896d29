"""scripts/probe_task.py: the mixup loss of ``train --mixup`` and the two readers of ``read`` (docs/recipe.md §20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolm.data.layout import layout_batch
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("probe_task")


def _batch(n: int, channels: int = 3, seconds: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` trials of one layout with a 6-token text whose last two tokens are the supervised answer."""
    rng = np.random.default_rng(seed)
    signals = [rng.standard_normal((channels, seconds * 200)).astype(np.float32) for _ in range(n)]
    out = layout_batch(signals, [np.arange(channels, dtype=np.int16)] * n, channels * seconds + 2, targets=False)
    b = {k: torch.from_numpy(v) for k, v in out.items()}
    b["text"] = torch.as_tensor(rng.integers(0, 1000, (n, 6)))
    targets = torch.full((n, 6), -1)
    targets[:, 3] = torch.as_tensor(rng.integers(32, 34, n))  # the answer letter: the class
    targets[:, 4] = 8
    b["text_targets"] = targets
    return b


def _plain_loss(model: NeuroLM, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], text=b["text"],
                 text_targets=b["text_targets"]).loss


def test_mixup_at_lambda_one_is_the_plain_loss_and_restores_the_model(probe) -> None:
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset("debug")).eval()
    b = _batch(4)
    perm = torch.tensor([1, 0, 3, 2])
    with torch.no_grad():
        assert torch.allclose(probe.mixup_loss(model, b, 1.0, perm), _plain_loss(model, b), atol=1e-6)
        assert "encode_eeg" not in vars(model)  # the instance patch is gone: the class method again
        mixed = probe.mixup_loss(model, b, 0.3, perm)
        swapped = {**b, "x": b["x"][perm], "text_targets": b["text_targets"][perm]}
        # At lambda 0 every trial becomes its partner: its features, and its answer as the target.
        assert torch.allclose(probe.mixup_loss(model, b, 0.0, perm), _plain_loss(model, swapped), atol=1e-5)
    assert torch.isfinite(mixed) and not torch.allclose(mixed, _plain_loss(model, b))


def test_mixup_refuses_trials_of_different_layouts(probe) -> None:
    model = NeuroLM(NeuroLMConfig.preset("debug")).eval()
    b = _batch(2)
    b["input_mask"][1, 2] = False  # the second trial has one channel fewer
    with pytest.raises(ValueError, match="one layout"):
        probe.mixup_loss(model, b, 0.5, torch.tensor([1, 0]))


def test_the_linear_reader_sees_which_token_is_which_and_attention_pooling_does_not(probe) -> None:
    """Attention pooling over tokens (the answer position's view of EEG) is blind to the tokens' order unless the
    tokens carry it themselves; the linear reader has weights per token — the difference §20 measures."""
    torch.manual_seed(0)
    x = torch.randn(5, 7, 16)
    shuffled = x[:, torch.randperm(7)]
    attention = probe.AttentionRead(16, 4, dropout=0.0).eval()
    linear = probe.LinearRead(7, 16, dropout=0.0).eval()
    with torch.no_grad():
        assert attention(x).shape == linear(x).shape == (5, 2)
        assert torch.allclose(attention(x), attention(shuffled), atol=1e-5)
        assert not torch.allclose(linear(x), linear(shuffled), atol=1e-3)
