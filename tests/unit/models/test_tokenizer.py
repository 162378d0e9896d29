"""The neural tokenizer trains as the official one: k-means init, EMA codebook, DANN gradient reversal."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neurolm.models.quantizer import NormEMAQuantizer
from neurolm.models.tokenizer import GradientReversal, NeuralTokenizer, TokenizerConfig, dann_alpha


def _step(tok, b, text=None, alpha=0.0):
    return tok(b["x"], b["freq_target"], b["raw_target"], b["input_chans"], b["input_time"], b["input_mask"],
               text_tokens=text, alpha=alpha)


def test_first_training_batch_initialises_then_ema_moves_the_codebook(debug_tokenizer, make_batch) -> None:
    b = make_batch([(4, 6), (3, 8)], 32, targets=True)
    q = debug_tokenizer.quantizer
    assert q.initialized.item() == 0.0
    out = _step(debug_tokenizer.train(), b)
    assert q.initialized.item() == 1.0 and q.kmeans_counts.sum() == 64  # k-means saw every token (official)
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(q.num_codes), atol=1e-5)
    before = q.codebook.clone()
    out = _step(debug_tokenizer, make_batch([(4, 6), (3, 8)], 32, seed=1, targets=True))  # new data
    used = torch.zeros(q.num_codes, dtype=torch.bool)
    used[out.codes.flatten()] = True
    moved = (q.codebook - before).abs().amax(dim=1) > 1e-6  # unused codes are only re-normalised
    assert torch.equal(moved, used)  # only codes that received vectors move
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(q.num_codes), atol=1e-5)


def test_eval_mode_keeps_the_codebook_but_updates_usage_like_the_official_code(make_batch) -> None:
    b = make_batch([(4, 6)], 32, targets=True)
    for in_eval in (True, False):
        tok = NeuralTokenizer(TokenizerConfig.preset("debug", usage_ema_in_eval=in_eval))
        _step(tok.train(), b)
        codebook, usage = tok.quantizer.codebook.clone(), tok.quantizer.usage.clone()
        with torch.no_grad():
            _step(tok.eval(), b)
        assert torch.equal(codebook, tok.quantizer.codebook)
        assert (not torch.equal(usage, tok.quantizer.usage)) == in_eval


def test_losses_and_gradients(debug_tokenizer, make_batch) -> None:
    b = make_batch([(4, 6), (3, 8)], 32, targets=True)
    text = torch.randint(0, 50257, (2, 16))
    out = _step(debug_tokenizer.train(), b, text, alpha=0.5)
    terms = out.losses
    total = terms["commit"] + terms["rec_freq"] + terms["rec_raw"] + terms["domain_eeg"] + terms["domain_text"]
    assert torch.allclose(out.loss, total)
    out.loss.backward()
    assert debug_tokenizer.encoder.blocks[0].attn.c_attn.weight.grad is not None
    assert debug_tokenizer.domain_classifier[0].weight.grad is not None
    assert all(not b.requires_grad for b in debug_tokenizer.quantizer.buffers())


def test_gradient_reversal_and_dann_schedule() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    (GradientReversal.apply(x, 0.3) * 2.0).sum().backward()
    assert torch.allclose(x.grad, torch.full((3, 4), -0.6))
    assert dann_alpha(0.0) == 0.0
    assert math.isclose(dann_alpha(0.5), 2 / (1 + math.exp(-5)) - 1)
    assert 0.999 < dann_alpha(1.0) < 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_update(rank: int, port: int, z: torch.Tensor, codebook: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different local k-means draws: rank 0's codebook must win
        q = NormEMAQuantizer(codebook.shape[0], codebook.shape[1], kmeans_iters=2).train()
        q(z[rank : rank + 1])  # k-means init + first EMA update
        q.codebook.copy_(codebook)
        q(z[rank : rank + 1])
        out[rank] = q.codebook.clone()
    finally:
        dist.destroy_process_group()


def test_ema_statistics_are_all_reduced_across_ranks() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 40, 8)
    codebook = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    manager = mp.Manager()
    out = manager.dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_update, args=(_free_port(), z, codebook, out), nprocs=2, join=True)
    single = NormEMAQuantizer(16, 8, kmeans_init=False).train()
    single.codebook.copy_(codebook)
    single(z)  # one process seeing both ranks' vectors
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], single.codebook, atol=1e-6)


@pytest.mark.parametrize("enabled", [False, True])
def test_activation_checkpointing_keeps_gradients(enabled: bool, make_batch, debug_lm) -> None:
    b = make_batch([(3, 4), (2, 5)], 16)
    debug_lm.train().set_activation_checkpointing(enabled)
    out = debug_lm(b["x"], b["input_chans"], b["input_time"], b["input_mask"], eeg_targets="next_code")
    out.loss.backward()
    grad = debug_lm.gpt.blocks[0].mlp.c_fc.weight.grad.clone()
    debug_lm.zero_grad()
    debug_lm.set_activation_checkpointing(not enabled)
    debug_lm(b["x"], b["input_chans"], b["input_time"], b["input_mask"], eeg_targets="next_code").loss.backward()
    assert torch.allclose(grad, debug_lm.gpt.blocks[0].mlp.c_fc.weight.grad, atol=1e-6)


def test_freeze_encoder_trains_everything_but_the_encoder(make_batch) -> None:
    """``freeze_encoder`` (the small-task recipe, docs/recipe.md §8): the encoder whose features stages 2 and 3
    read keeps its initial weights through an optimizer step; the code projection and decoders move."""
    from neurolm.config import TokenizerJobConfig, load_config
    from neurolm.train.engine import param_groups
    from neurolm.train.stages.tokenizer import TokenizerStage

    cfg = load_config(TokenizerJobConfig, "configs/tokenizer/debug.yaml",
                      ["data.train=/tmp/unused", "freeze_encoder=true"])  # fmt: skip
    torch.manual_seed(0)
    model = TokenizerStage(cfg).build_model().train()
    trainable = {id(p) for g in param_groups(model, 0.1) for p in g["params"]}
    assert not any(id(p) in trainable for p in model.encoder.parameters())
    assert all(id(p) in trainable for p in model.code_proj.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    b = make_batch([(4, 6), (3, 8)], 32, targets=True)
    for _ in range(2):  # the first call initialises the codebook
        out = _step(model, b, alpha=0.5)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith("encoder.") for n in moved)
    assert any(n.startswith("code_proj.") for n in moved) and any(n.startswith("decoder_freq.") for n in moved)
