"""Stage 3's channel dropout (``augment_channel_dropout``): whole channels of a sample silenced together, at the
requested rate, at least one real channel kept, padding untouched, replayed by the same seed; validated config."""

from __future__ import annotations

import pytest
import torch

from neurolm.config import InstructJobConfig
from neurolm.train.stages.instruct import drop_channels


def _batch(b: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chans = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 0, 0]] * b)  # 4 channels x 2 s, then padding
    mask = torch.tensor([[1] * 8 + [0] * 4] * b)
    x = torch.randn(b, 12, 200) + 3.0  # no real patch is zero by chance
    x[:, 8:] = 0.0
    return x, chans, mask


def test_whole_channels_are_silenced_at_the_rate_and_padding_stays_zero() -> None:
    x, chans, mask = _batch(512)
    torch.manual_seed(7)
    y = drop_channels(x, chans, mask, 0.25)
    silenced = (y[:, :8] == 0).all(-1)  # (b, 8) per token
    kept = (y[:, :8] == x[:, :8]).all(-1)
    assert bool((silenced | kept).all())  # a token is either untouched or zero
    assert torch.equal(silenced[:, :4], silenced[:, 4:8])  # both seconds of a channel together
    assert bool((~silenced[:, :4]).any(1).all())  # every sample keeps a channel
    assert 0.2 < float(silenced[:, :4].float().mean()) < 0.3
    assert torch.equal(y[:, 8:], x[:, 8:])
    torch.manual_seed(7)
    assert torch.equal(drop_channels(x, chans, mask, 0.25), y)


def test_a_sample_that_would_lose_every_channel_keeps_one() -> None:
    x, chans, mask = _batch(32)
    y = drop_channels(x, chans, mask, 0.999999)
    kept = ~(y[:, :4] == 0).all(-1)  # (b, 4)
    assert torch.equal(kept.sum(1), torch.ones(32, dtype=torch.long))


def test_off_by_default_and_validated() -> None:
    fields = InstructJobConfig.model_fields
    assert fields["augment_channel_dropout"].default == 0.0
    with pytest.raises(ValueError, match="augment_channel_dropout"):
        InstructJobConfig.model_validate({"augment_channel_dropout": 1.0})
