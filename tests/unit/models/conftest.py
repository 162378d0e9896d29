"""Shared fixtures of the model tests: tiny random models and padded EEG batches, one CPU thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolm.data.layout import layout_batch
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def eeg_batch(shapes: list[tuple[int, int]], max_tokens: int, seed: int = 0, targets: bool = False) -> dict:
    """A laid-out batch of random samples with (channels, seconds) per sample, as torch tensors."""
    rng = np.random.default_rng(seed)
    signals = [rng.standard_normal((c, t * 200)).astype(np.float32) for c, t in shapes]
    channels = [np.arange(c, dtype=np.int16) * 3 for c, _ in shapes]
    out = layout_batch(signals, channels, max_tokens, targets=targets)
    return {k: torch.from_numpy(v) for k, v in out.items()}


@pytest.fixture
def make_batch():
    """``make_batch([(channels, seconds), ...], max_tokens, seed=0, targets=False)`` → torch batch dict."""
    return eeg_batch


@pytest.fixture
def debug_tokenizer() -> NeuralTokenizer:
    return NeuralTokenizer(TokenizerConfig.preset("debug"))


@pytest.fixture
def debug_lm() -> NeuroLM:
    return NeuroLM(NeuroLMConfig.preset("debug", code_head=True)).eval()
