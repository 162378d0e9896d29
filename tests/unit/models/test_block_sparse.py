"""Block-sparse attention (docs/architecture.md, "Block-sparse attention"): a bool mask closed above a staircase
runs one SDPA call per block of query rows on the keys those rows can see. Same outputs and gradients as the
dense masked call (to float32 rounding), the dense call wherever the blocks would not pay or cannot apply."""

from __future__ import annotations

import pytest
import torch

from neurolm.models import layers
from neurolm.models.layers import KeyExtents, SelfAttention, key_extents, run_blocks
from neurolm.models.masks import key_padding_mask, stair_mask, time_causal_mask
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig


def _stair_layout(B: int = 2, chans: int = 23, seconds: int = 40, pad: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """input_time / input_mask of B samples of ``chans`` x ``seconds``, the second one ``pad`` tokens shorter."""
    L = chans * seconds
    time = (torch.arange(L) // chans).expand(B, L).clone()
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L - pad :] = False
    time[1, L - pad :] = 0
    return time, mask


def test_key_extents_cover_every_open_key_and_no_more() -> None:
    time, real = _stair_layout()
    mask = stair_mask(time, real, text_len=30)  # (2, 1, 950, 950)
    sparse = key_extents(mask)
    assert isinstance(sparse, KeyExtents) and sparse.mask is mask
    S = mask.shape[-1]
    assert [b[:2] for b in sparse.blocks] == [(0, 256), (256, 512), (512, 768), (768, S)]
    for start, end, keys in sparse.blocks:
        rows = mask[..., start:end, :]
        assert not rows[..., keys:].any()  # nothing open is skipped
        assert rows[..., keys - 1].any()  # the smallest such extent
    # the stair: rows of a second see that whole second, so a block's extent is the end of its last second
    assert sparse.blocks[0][2] == 23 * 12


@pytest.mark.parametrize(
    "mask",
    [
        None,
        key_padding_mask(torch.ones(2, 900, dtype=torch.bool)),  # (B, 1, 1, S): no closed block
        torch.ones(1, 1, 900, 900, dtype=torch.bool),  # bidirectional
        torch.zeros(1, 1, 900, 900),  # float masks are added, not skipped
        torch.ones(700, 700, dtype=torch.bool).tril()[None, None],  # fewer than three blocks of rows
    ],
    ids=["none", "key-padding", "dense", "float", "short"],
)
def test_masks_that_stay_dense(mask) -> None:
    assert key_extents(mask) is None


def _attention_and_grads(attn: SelfAttention, x: torch.Tensor, mask, seed: int = 0):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    y = attn(x, mask)
    y.backward(torch.cos(torch.arange(y.numel(), dtype=torch.float32)).view_as(y))
    grads = [x.grad] + [p.grad.clone() for p in attn.parameters()]
    attn.zero_grad()
    return y.detach(), grads


@pytest.mark.parametrize("kind", ["stair", "stair+text", "time-causal"])
def test_block_sparse_attention_equals_the_dense_masked_call(kind: str) -> None:
    time, real = _stair_layout()
    mask = {
        "stair": lambda: stair_mask(time, real),
        "stair+text": lambda: stair_mask(time, real, text_len=40),
        "time-causal": lambda: time_causal_mask(time, real),
    }[kind]()
    attn = SelfAttention(32, 4, bias=True)
    x = torch.randn(2, mask.shape[-1], 32)
    sparse = key_extents(mask)
    assert sparse is not None and sum((e - s) * k for s, e, k in sparse.blocks) < 0.7 * mask.shape[-1] ** 2
    dense_y, dense_g = _attention_and_grads(attn, x, mask)
    sparse_y, sparse_g = _attention_and_grads(attn, x, sparse)
    torch.testing.assert_close(sparse_y, dense_y, rtol=0, atol=1e-5)
    for a, b in zip(sparse_g, dense_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dropout_and_row_subsets_use_the_dense_mask() -> None:
    """Attention dropout draws one random stream for the whole call: block calls would draw it differently."""
    time, real = _stair_layout()
    mask = stair_mask(time, real)
    attn = SelfAttention(32, 4, bias=True, dropout=0.3).train()
    x = torch.randn(2, mask.shape[-1], 32)
    dense_y, _ = _attention_and_grads(attn, x, mask, seed=5)
    sparse_y, _ = _attention_and_grads(attn, x, key_extents(mask), seed=5)
    assert torch.equal(sparse_y, dense_y)
    with torch.no_grad():
        assert torch.equal(attn.eval()(x, key_extents(mask), queries=3), attn(x, mask, queries=3))


def test_neurolm_pretraining_step_is_unchanged(make_batch, monkeypatch) -> None:
    """A whole pre-training forward/backward at 23 channels x 40 s: the loss and every gradient as with dense masks."""
    model = NeuroLM(NeuroLMConfig.preset("debug")).train()
    b = make_batch([(23, 40), (23, 39)], 920, seed=3)
    targets = torch.randint(0, 64, b["input_mask"].shape).masked_fill(~b["input_mask"].bool(), -1)
    calls: list[KeyExtents | None] = []
    real_key_extents = layers.key_extents

    def recorded(mask, rows=None):
        calls.append(real_key_extents(mask, rows))
        return calls[-1]

    monkeypatch.setattr(layers, "key_extents", recorded)

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], eeg_targets=targets)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        return out.loss.detach(), grads

    sparse_loss, sparse_grads = step()
    assert any(isinstance(c, KeyExtents) for c in calls)  # the GPT's stair mask went block-sparse
    monkeypatch.setattr(layers, "SPARSE_ROWS", 10_000)  # every mask dense
    dense_loss, dense_grads = step()
    assert all(c is None for c in calls[-2:]) and len(sparse_grads) == len(dense_grads) > 10
    torch.testing.assert_close(sparse_loss, dense_loss, rtol=0, atol=1e-5)
    for a, c in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_run_blocks_with_a_cache_keeps_the_dense_mask() -> None:
    """Keys from a KV cache are not the mask's columns: decoding never goes block-sparse."""
    time, real = _stair_layout()
    mask = stair_mask(time, real)
    blocks = torch.nn.ModuleList([layers.Block(32, 4, bias=True)]).eval()
    x = torch.randn(2, mask.shape[-1], 32)
    cache = layers.KVCache(1)
    with torch.no_grad():
        assert torch.allclose(run_blocks(blocks, x, mask, cache=cache), run_blocks(blocks, x, mask), atol=1e-5)
    assert cache.length == mask.shape[-1]


def test_activation_checkpointing_recomputes_the_same_block_sparse_attention() -> None:
    """Checkpointed blocks receive the block-sparse mask as an argument and recompute with it in the backward."""
    time, real = _stair_layout()
    mask = stair_mask(time, real, text_len=20)
    blocks = torch.nn.ModuleList([layers.Block(32, 4, bias=True) for _ in range(2)]).train()
    x = torch.randn(2, mask.shape[-1], 32)
    results = []
    for checkpointing in (False, True):
        xi = x.clone().requires_grad_(True)
        run_blocks(blocks, xi, mask, activation_checkpointing=checkpointing).square().sum().backward()
        results.append([xi.grad] + [p.grad.clone() for p in blocks.parameters()])
        blocks.zero_grad()
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
