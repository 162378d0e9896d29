"""NeuroLM building blocks: one encoder pass in pre-training, GPT-2 weights from Hugging Face, configs."""

from __future__ import annotations

import shutil

import pytest
import torch

from neurolm.models.gpt import load_hf_gpt2
from neurolm.models.io import neurolm_from_tokenizer
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig, next_code_targets, tokens_per_second
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig


def test_pretraining_runs_the_encoder_once_with_the_official_targets(make_batch) -> None:
    tok = NeuralTokenizer(TokenizerConfig.preset("debug"))
    b = make_batch([(3, 4), (2, 5), (4, 2)], 16)
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"])
    with torch.no_grad():
        tok.train()(*args[:1], torch.zeros(3, 16, 100), torch.zeros(3, 16, 200), *args[1:])  # k-means init
    model = neurolm_from_tokenizer(NeuroLMConfig.preset("debug"), tok.eval()).eval()
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = model(*args, eeg_targets="next_code")
        codes = tok.codes(*args)  # the official way: a second, separate VQ encoder pass
    assert len(calls) == 1
    expected = next_code_targets(codes, *tokens_per_second(b["input_time"], b["input_mask"]))
    assert torch.equal(torch.where(out.targets >= 0, out.targets - 50304, -1), expected)
    # token (t, c) predicts the code of (t+1, c): sample 0 has 3 channels x 4 s
    assert torch.equal(expected[0, :9], codes[0, 3:12]) and (expected[0, 9:] == -1).all()


def test_pretraining_without_code_head_explains_what_is_missing(make_batch) -> None:
    model = NeuroLM(NeuroLMConfig.preset("debug"))
    b = make_batch([(3, 4)], 16)
    with pytest.raises(RuntimeError, match="code_head=True"):
        model(b["x"], b["input_chans"], b["input_time"], b["input_mask"], eeg_targets="next_code")


def test_gpt2_weights_from_a_hugging_face_directory(tmp_path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50257, n_positions=1024)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    model = NeuroLM(NeuroLMConfig.preset("debug")).eval()
    sep_row = model.gpt.wte.weight[50257].clone()
    load_hf_gpt2(model, tmp_path / "gpt2")
    text = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        ours = model(text=text, return_logits=True).logits[..., :50257]
        theirs = hf(text).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(model.gpt.wte.weight[50257], sep_row)  # [SEP] keeps its own init
    # object storage: the directory is fetched to a temporary directory by a download callable
    fresh = NeuroLM(NeuroLMConfig.preset("debug")).eval()
    load_hf_gpt2(fresh, "s3://bucket/gpt2", download=lambda uri, dst: shutil.copytree(tmp_path / "gpt2", dst,
                                                                                         dirs_exist_ok=True))
    assert torch.equal(fresh.gpt.blocks[1].mlp.c_fc.weight, model.gpt.blocks[1].mlp.c_fc.weight)
    wrong = NeuroLM(NeuroLMConfig.preset("debug", gpt={"n_embd": 32}))
    with pytest.raises(ValueError, match="does not fit"):
        load_hf_gpt2(wrong, tmp_path / "gpt2")


def test_configs_round_trip_and_reject_unknown_fields() -> None:
    for name in ("debug", "tiny", "base", "large", "xl"):
        cfg = NeuroLMConfig.preset(name)
        assert NeuroLMConfig.from_dict(cfg.to_dict()) == cfg
    cfg = NeuroLMConfig.preset("base", gpt={"n_layer": 2}, causal_encoder_inputs=True)
    assert cfg.gpt.n_layer == 2 and cfg.gpt.n_embd == 768 and cfg.causal_encoder_inputs
    with pytest.raises(ValueError, match="unknown NeuroLMConfig fields"):
        NeuroLMConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        TokenizerConfig.preset("huge")
    assert TokenizerConfig.from_dict(TokenizerConfig.preset("tiny").to_dict()) == TokenizerConfig.preset("tiny")


def test_next_code_targets_shift_by_one_second_per_sample() -> None:
    codes = torch.arange(2 * 10).reshape(2, 10)
    y = next_code_targets(codes, torch.tensor([2, 3]), torch.tensor([8, 9]))
    assert y[0].tolist() == [2, 3, 4, 5, 6, 7, -1, -1, -1, -1]
    assert y[1].tolist() == [13, 14, 15, 16, 17, 18, -1, -1, -1, -1]


def _loss_and_grads(model: NeuroLM, return_logits: bool, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**kwargs, return_logits=return_logits)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fixes", [{}, {"causal_encoder_inputs": True, "patch_norm_over_real_tokens": True,
                                        "per_sample_text_positions": True}])
@pytest.mark.parametrize("objective", ["pretrain", "instruct"])
def test_training_losses_and_gradients_do_not_depend_on_skipping_the_padded_tail(make_batch, fixes,
                                                                                   objective) -> None:
    """The training path leaves out the padded EEG tail and the text after the last answer token; the loss and
    every gradient equal those of the full layout (``return_logits`` computes every position)."""
    model = NeuroLM(NeuroLMConfig.preset("debug", code_head=True, **fixes)).train()
    model.code_head.codebook.copy_(torch.nn.functional.normalize(torch.randn_like(model.code_head.codebook), dim=-1))
    b = make_batch([(3, 2), (2, 5), (4, 2)], 20)  # longest sample 10 tokens of 20: the tail is padding
    kwargs = {"x_eeg": b["x"], "input_chans": b["input_chans"], "input_time": b["input_time"],
              "input_mask": b["input_mask"]}
    if objective == "pretrain":
        kwargs["eeg_targets"] = "next_code"
    else:
        kwargs["text"] = torch.randint(0, 50257, (3, 9))
        kwargs["text_targets"] = torch.full((3, 9), -1)
        kwargs["text_targets"][:, 3:6] = torch.randint(0, 50257, (3, 3))  # answer tokens; 6..8 are padding
    calls: list[int] = []
    model.gpt.blocks[0].register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[1]))
    loss, grads = _loss_and_grads(model, False, **kwargs)
    full_loss, full_grads = _loss_and_grads(model, True, **kwargs)
    assert calls == ([10, 20] if objective == "pretrain" else [10 + 6, 20 + 9])  # the tails were skipped
    assert torch.allclose(loss, full_loss, atol=1e-6, rtol=0)
    assert grads.keys() == full_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, full_grads[name], atol=1e-6, rtol=1e-5), name


def test_the_encoder_is_frozen_by_default_and_trains_only_when_made_trainable(make_batch) -> None:
    """Official: the encoder is frozen and its features carry no graph. ``scripts/probe_task.py --train-encoder``
    (docs/recipe.md §18) sets requires_grad on it: then it gets gradients from the answer loss."""
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset("debug")).train()
    b = make_batch([(3, 4), (2, 5)], 16)
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"])
    assert not model.encoder_trainable() and not model.encode_eeg(*args).requires_grad
    model.encoder.requires_grad_(True)
    features = model.encode_eeg(*args)
    assert features.requires_grad
    features.square().mean().backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        assert not model.encode_eeg(*args).requires_grad
