"""Model sizes match the official code (docs/reference.md §2.6, §3.1), built on the meta device (no memory)."""

from __future__ import annotations

import pytest
import torch

from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig


@pytest.mark.parametrize(("preset", "millions"), [("base", 254.3), ("large", 500.3), ("xl", 1736.8)])
def test_neurolm_sizes_follow_get_num_params(preset: str, millions: float) -> None:
    with torch.device("meta"):
        model = NeuroLM(NeuroLMConfig.preset(preset))
    assert round(model.get_num_params() / 1e6, 1) == millions  # official convention: wpe excluded
    assert sum(p.numel() for p in model.encoder.parameters()) == 85_510_272


def test_tokenizer_sizes() -> None:
    with torch.device("meta"):
        tok = NeuralTokenizer(TokenizerConfig.preset("base"))
    modules = (tok.encoder, tok.decoder_freq, tok.decoder_raw, tok.code_proj, tok.freq_head, tok.raw_head)
    learned = sum(p.numel() for m in modules for p in m.parameters())
    # the official VQ module also counts its codebook, k-means counts and EMA average as (frozen) parameters
    q = tok.quantizer
    official_vq = learned + q.codebook.numel() + q.kmeans_counts.numel() + q.embed_avg.numel()
    assert round(official_vq / 1e6, 1) == 147.0
    assert sum(p.numel() for p in tok.encoder.parameters()) == 85_510_272
    assert sum(p.numel() for p in tok.decoder_freq.parameters()) == 28_664_064
