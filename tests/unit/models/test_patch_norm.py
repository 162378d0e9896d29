"""``patch_norm=dataset``: the temporal convolution's GroupNorms use statistics of the training data, not each
sample's own (docs/recipe.md §19)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neurolm.models.eeg_transformer import TemporalConv
from neurolm.models.io import load_pretrained, neurolm_from_tokenizer, save_pretrained
from neurolm.models.neurolm import NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig


def _real_mask(lengths: list[int], n: int) -> torch.Tensor:
    real = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, k in enumerate(lengths):
        real[i, :k] = True
    return real[:, None, :].expand(-1, n, -1)  # (B, N, N): every patch pools the sample's real patches


def test_official_default_has_no_statistics() -> None:
    conv = TemporalConv(16)
    assert conv.norm_stats == "sample" and not any("running" in k for k in conv.state_dict())


def test_training_batches_pool_their_real_patches_then_eval_only_reads_them() -> None:
    torch.manual_seed(0)
    conv = TemporalConv(16, norm_stats="dataset").train()
    batches = [(torch.randn(2, 5, 200) * 3 + 1, [5, 2]), (torch.randn(3, 5, 200), [1, 4, 5])]
    for x, lengths in batches:
        x[_real_mask(lengths, 5)[:, 0] == 0] = 0.0  # padding patches are zero, as laid out
        conv(x, _real_mask(lengths, 5))
    # The first GroupNorm's statistics = mean and variance of conv1's outputs over every real patch seen.
    with torch.no_grad():
        # conv1 output (B, 16, N, T) -> (B, N, 16, T), then the real patches only.
        outs = [conv.conv1(x.unsqueeze(1)).permute(0, 2, 1, 3)[_real_mask(lengths, 5)[:, 0]] for x, lengths in batches]
    h = torch.cat(outs).double()  # (real patches, 16, T)
    groups = h.reshape(h.shape[0], 4, 4, -1).transpose(0, 1).reshape(4, -1)
    assert conv.running_count[0].item() == groups.shape[1]
    assert torch.allclose(conv.running_mean[0].double(), groups.mean(dim=1), atol=1e-5)
    assert torch.allclose(conv.running_var[0].double(), groups.var(dim=1, unbiased=False), rtol=1e-4)

    conv.eval()
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    x = torch.randn(2, 5, 200)
    alone = conv(x[:1, :3], _real_mask([3], 3))
    together = conv(x, _real_mask([3, 5], 5))[:1, :3]
    assert all(torch.equal(v, conv.state_dict()[k]) for k, v in state.items())  # eval: read only
    # Each sample's features depend on itself only (not its batch companions, not its padding length) ...
    assert torch.allclose(alone, together, atol=1e-6)
    # ... and keep its amplitude: twice the signal is not the same token (per-sample statistics divide it out).
    assert not torch.allclose(conv(2 * x[:1, :3], _real_mask([3], 3)), alone, atol=1e-3)


def test_the_tokenizer_statistics_reach_the_frozen_encoder_of_neurolm(make_batch, tmp_path) -> None:
    tok = NeuralTokenizer(TokenizerConfig.preset("debug", exclude_padding=True, patch_norm="dataset")).train()
    b = make_batch([(4, 6), (3, 8)], 32, targets=True)
    tok(b["x"], b["freq_target"], b["raw_target"], b["input_chans"], b["input_time"], b["input_mask"])
    stats = {k: v.clone() for k, v in tok.encoder.patch_embed.state_dict().items() if "running" in k}
    real = int(b["input_mask"].sum())
    assert stats["running_count"].tolist() == [real * 4 * 25] * 3  # 4 channels per group, 25 conv steps

    lm = neurolm_from_tokenizer(NeuroLMConfig.preset("debug"), tok).train()
    assert lm.config.encoder.patch_norm == "dataset"
    for k, v in stats.items():
        assert torch.equal(getattr(lm.encoder.patch_embed, k), v)
    lm.encode_eeg(b["x"], b["input_chans"], b["input_time"], b["input_mask"].bool())  # train mode, frozen encoder
    for k, v in stats.items():
        assert torch.equal(getattr(lm.encoder.patch_embed, k), v)
    loaded = load_pretrained(save_pretrained(lm, str(tmp_path / "export")))
    assert loaded.encoder.patch_embed.norm_stats == "dataset"
    for k, v in stats.items():
        assert torch.equal(getattr(loaded.encoder.patch_embed, k), v)


def _rank_stats(rank: int, port: int, x: torch.Tensor, weights: dict, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        conv = TemporalConv(16, norm_stats="dataset").train()
        conv.load_state_dict(weights)
        conv(x[rank : rank + 1])
        out[rank] = {k: v.clone() for k, v in conv.state_dict().items() if "running" in k}
    finally:
        dist.destroy_process_group()


def test_statistics_are_all_reduced_across_ranks() -> None:
    """Under torch.distributed every rank measures the global batch: the same buffers on every rank, equal to one
    process seeing both ranks' samples."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 200) * torch.tensor([1.0, 4.0])[:, None, None]
    single = TemporalConv(16, norm_stats="dataset").train()
    weights = {k: v.clone() for k, v in single.state_dict().items()}
    out = mp.Manager().dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_stats, args=(port, x, weights, out), nprocs=2, join=True)
    single(x)
    for k in ("running_mean", "running_var", "running_count"):
        assert torch.equal(out[0][k], out[1][k]), k
        assert torch.allclose(out[0][k], getattr(single, k), rtol=1e-5, atol=1e-6), k


def test_no_official_export_of_dataset_statistics() -> None:
    """The official layout has no place for the statistics, and the official encoder would compute other features."""
    from neurolm.models.official import export_official_lm, export_official_vq

    tok = NeuralTokenizer(TokenizerConfig.preset("debug", patch_norm="dataset"))
    with pytest.raises(ValueError, match="patch_norm='dataset' has no official equivalent"):
        export_official_vq(tok)
    with pytest.raises(ValueError, match="no official equivalent"):
        export_official_lm(neurolm_from_tokenizer(NeuroLMConfig.preset("debug"), tok))
    export_official_vq(NeuralTokenizer(TokenizerConfig.preset("debug")))  # the official default exports
