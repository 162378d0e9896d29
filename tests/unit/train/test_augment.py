"""Stage 3's channel-gain augmentation (``augment_gain``): one gain per sample and channel, within exp(±a),
padding untouched, replayed by the same seed."""

from __future__ import annotations

import math

import torch

from neurolm.train.stages.instruct import channel_gain


def test_each_sample_channel_gets_one_gain_within_the_range_and_padding_stays_zero() -> None:
    b, n, p, a = 3, 12, 200, 0.25
    x = torch.randn(b, n, p)
    chans = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0]] * b)
    x[:, 9:] = 0.0  # padding tokens
    torch.manual_seed(7)
    y = channel_gain(x, chans, a)
    ratio = (y[:, :9] / x[:, :9]).mean(dim=-1)  # (b, 9): one gain per token
    for c in range(3):
        same = ratio[:, chans[0, :9] == c]
        assert torch.allclose(same, same[:, :1].expand_as(same), rtol=1e-5)
    assert float(ratio.min()) >= math.exp(-a) - 1e-6 and float(ratio.max()) <= math.exp(a) + 1e-6
    assert not torch.allclose(ratio[0], ratio[1])  # samples differ
    assert torch.equal(y[:, 9:], x[:, 9:])
    torch.manual_seed(7)
    assert torch.equal(channel_gain(x, chans, a), y)
