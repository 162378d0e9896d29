"""Every fix option: the defect is there without it (official behaviour) and gone with it (docs/reference.md §6.3)."""

from __future__ import annotations

import pytest
import torch

from neurolm.data.layout import layout_batch
from neurolm.models.generate import generate
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.vocab import GPT2_TEXT_VOCAB


def _twin(model: NeuroLM, **fix: object) -> NeuroLM:
    """The same weights under a config with ``fix`` applied."""
    other = NeuroLM(NeuroLMConfig.from_dict({**model.config.to_dict(), **fix})).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_causal_encoder_inputs_stop_future_leakage(debug_lm, make_batch) -> None:
    b = make_batch([(3, 4)], 16)
    changed = {**b, "x": b["x"].clone()}
    last = b["input_time"] == 3
    changed["x"][last] += 5.0  # only the last second's signal changes
    for model, leaks in ((debug_lm, True), (_twin(debug_lm, causal_encoder_inputs=True), False)):
        before = model.encode_eeg(b["x"], b["input_chans"], b["input_time"], b["input_mask"])
        after = model.encode_eeg(changed["x"], b["input_chans"], b["input_time"], b["input_mask"])
        earlier = b["input_mask"] & (b["input_time"] < 3)
        drift = (after - before)[earlier].abs().max().item()
        assert (drift > 1e-3) == leaks, drift
        assert (after - before)[last].abs().max() > 1e-3  # the changed second itself does change


def test_causal_inputs_keep_bidirectional_targets(debug_lm, make_batch) -> None:
    b = make_batch([(3, 4), (2, 5)], 16)
    fixed = _twin(debug_lm, causal_encoder_inputs=True)
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"])
    with torch.no_grad():
        assert torch.equal(debug_lm(*args, eeg_targets="next_code").targets, fixed(*args, eeg_targets="next_code").targets)


def test_per_sample_text_positions_remove_the_batch_dependence(debug_lm, make_batch) -> None:
    text = torch.randint(0, 50000, (2, 6))
    pair = make_batch([(3, 2), (3, 5)], 15)
    alone = {k: v[:1] for k, v in pair.items()}
    for model, depends in ((debug_lm, True), (_twin(debug_lm, per_sample_text_positions=True), False)):
        with torch.no_grad():
            in_batch = model(pair["x"], pair["input_chans"], pair["input_time"], pair["input_mask"],
                             text=text, return_logits=True).logits[0]
            single = model(alone["x"], alone["input_chans"], alone["input_time"], alone["input_mask"],
                           text=text[:1], return_logits=True).logits[0]
        gap = (in_batch[15:] - single[15:]).abs().max().item()
        assert (gap > 1e-3) == depends, gap


def _tokenizer_losses(tok: NeuralTokenizer, max_tokens: int, signal: torch.Tensor) -> dict[str, float]:
    b = layout_batch([signal.numpy()], [torch.arange(2).numpy()], max_tokens)
    t = {k: torch.from_numpy(v) for k, v in b.items()}
    with torch.no_grad():
        out = tok(t["x"], t["freq_target"], t["raw_target"], t["input_chans"], t["input_time"], t["input_mask"])
    return {k: float(v) for k, v in out.losses.items()} | {"codebook": tok.quantizer.codebook.clone()}


@pytest.mark.parametrize("exclude", [False, True])
def test_exclude_padding_from_vq_statistics_and_losses(exclude: bool) -> None:
    cfg = TokenizerConfig.preset("debug", exclude_padding=exclude)
    signal = torch.randn(2, 4 * 200)
    runs = []
    for max_tokens in (8, 32):  # the same sample without and with 24 padding tokens
        torch.manual_seed(1)
        tok = NeuralTokenizer(cfg).train()
        runs.append(_tokenizer_losses(tok, max_tokens, signal))
        counted = int(tok.quantizer.kmeans_counts.sum())
        assert counted == (8 if exclude else max_tokens)  # k-means saw real tokens only with the fix
    short, padded = runs
    same = all(abs(short[k] - padded[k]) < 1e-5 for k in ("commit", "rec_freq", "rec_raw"))
    same_codebook = torch.allclose(short["codebook"], padded["codebook"], atol=1e-6)
    assert same == exclude and same_codebook == exclude


def test_longer_time_tables_accept_samples_beyond_64_seconds() -> None:
    long_sample = layout_batch([torch.randn(1, 65 * 200).numpy()], [[0]], 80, targets=False)
    b = {k: torch.from_numpy(v) for k, v in long_sample.items()}
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"])
    official = NeuralTokenizer(TokenizerConfig.preset("debug"))
    with pytest.raises(IndexError):
        official.encode(*args)  # the official 64-row table crashes (docs/reference.md §6.3-7)
    longer = NeuralTokenizer(TokenizerConfig.preset("debug", max_seconds=128))
    assert longer.encode(*args).shape == (1, 80, 16)
    with pytest.raises(ValueError, match="time table has 64 rows"):
        layout_batch([torch.randn(1, 65 * 200).numpy()], [[0]], 80, max_seconds=64)


def test_scaled_init_of_new_embedding_rows() -> None:
    for scaled, low, high in ((False, 20.0, 100.0), (True, 0.7, 1.4)):
        model = NeuroLM(NeuroLMConfig.preset("debug", scaled_new_embedding_init=scaled))
        wte = model.gpt.wte.weight
        ratio = wte[GPT2_TEXT_VOCAB:].norm(dim=1).mean() / wte[:GPT2_TEXT_VOCAB].norm(dim=1).mean()
        assert low < ratio < high, ratio  # [SEP] and the other new rows vs GPT-2's rows
        chan_ratio = model.channel_embed.weight.std() / wte[:GPT2_TEXT_VOCAB].std()
        assert low < chan_ratio < high


def test_channel_embedding_init_std_overrides_the_scaled_init_of_that_table_only() -> None:
    scaled = NeuroLM(NeuroLMConfig.preset("debug", scaled_new_embedding_init=True))
    torch.manual_seed(0)
    strong = NeuroLM(NeuroLMConfig.preset("debug", scaled_new_embedding_init=True, channel_embed_init_std=1.0))
    assert 0.9 < strong.channel_embed.weight.std() < 1.1  # the official scale for the channel table ...
    assert scaled.channel_embed.weight.std() < 0.03
    wte = strong.gpt.wte.weight  # ... while the new token rows keep the scaled init
    assert wte[GPT2_TEXT_VOCAB:].std() < 0.03
    with pytest.raises(ValueError, match="channel_embed_init_std"):
        NeuroLMConfig.preset("debug", channel_embed_init_std=0.0)


def test_official_generation_mask_unmasks_padding_from_the_second_token(debug_lm, make_batch) -> None:
    b = make_batch([(3, 2), (3, 4)], 16)
    prompt = torch.tensor([[50257, 24361, 25, 1148]] * 2)
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"], prompt)
    perturbed = _twin(debug_lm)
    with torch.no_grad():
        perturbed.channel_embed.weight[136] += torch.randn(16) * 3.0  # only padding tokens use the pad row
    for official, leaks in ((True, True), (False, False)):
        a = generate(debug_lm, *args, max_new_tokens=3, use_cache=False, official_mask=official)
        c = generate(perturbed, *args, max_new_tokens=3, use_cache=False, official_mask=official)
        assert torch.allclose(a.step_logits[0], c.step_logits[0], atol=1e-5)  # first token: proper mask
        assert (not torch.allclose(a.step_logits[1], c.step_logits[1], atol=1e-4)) == leaks


def test_output_head_only_where_a_loss_is_taken(debug_lm, make_batch) -> None:
    b = make_batch([(3, 4), (2, 5)], 16)
    args = (b["x"], b["input_chans"], b["input_time"], b["input_mask"])
    with torch.no_grad():
        lean = debug_lm(*args, eeg_targets="next_code")
        full = debug_lm(*args, eeg_targets="next_code", return_logits=True)
    assert lean.logits is None and full.logits is not None
    assert torch.allclose(lean.loss, full.loss, atol=1e-6) and lean.accuracy == full.accuracy


def test_patch_norm_over_real_tokens_removes_the_padding_dependence(debug_lm) -> None:
    signal = [torch.randn(3, 4 * 200).numpy()]
    short, long = (
        {k: torch.from_numpy(v) for k, v in layout_batch(signal, [[0, 1, 2]], n, targets=False).items()}
        for n in (12, 40)
    )
    fixed = _twin(debug_lm, patch_norm_over_real_tokens=True)
    for model, depends in ((debug_lm, True), (fixed, False)):
        a = model.encode_eeg(short["x"], short["input_chans"], short["input_time"], short["input_mask"])
        b = model.encode_eeg(long["x"], long["input_chans"], long["input_time"], long["input_mask"])[:, :12]
        assert ((a - b).abs().max() > 1e-4) == depends
    # without padding, pooling real patches is the official GroupNorm
    official = debug_lm.encode_eeg(short["x"], short["input_chans"], short["input_time"], short["input_mask"])
    ours = fixed.encode_eeg(short["x"], short["input_chans"], short["input_time"], short["input_mask"])
    assert torch.allclose(official, ours, atol=1e-5)


def test_embedding_init_std_sets_the_tokenizer_embeddings_and_defaults_to_the_official_init():
    import torch as _torch

    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig

    _torch.manual_seed(0)
    official = NeuralTokenizer(TokenizerConfig.preset("tiny"))
    small = NeuralTokenizer(TokenizerConfig.preset("tiny", embedding_init_std=0.02))
    for name in ("channel_embed", "time_embed"):
        assert abs(float(getattr(official.encoder, name).weight.std()) - 1.0) < 0.05  # nn.Embedding's N(0, 1)
        assert abs(float(getattr(small.encoder, name).weight.std()) - 0.02) < 0.002
    # the patch embedding then carries the trial: features differ between trials by far more than 3 % of their norm
    x = _torch.randn(4, 8, 200)
    chans = _torch.tensor([[1, 2, 3, 4] * 2] * 4)
    times = _torch.tensor([[0] * 4 + [1] * 4] * 4)

    def spread(model):
        f = model.encoder(x, chans, times, None)
        return float(f.std(0).mean() / f[0].norm(dim=-1).mean())

    assert spread(small) > 5 * spread(official)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accuracy_index_is_argmax_with_ties_and_nans(dtype: torch.dtype) -> None:
    """The training accuracy takes ``max(dim).indices`` (argmax is 4x slower on bf16 CPU tensors): the same index,
    the first of tied maxima and the NaN's where a row holds one."""
    torch.manual_seed(0)
    x = torch.randn(64, 500).to(dtype)
    x[::3] = x[::3].round()  # many ties at the maximum
    x[5, 7] = float("nan")
    x[6, [3, 9]] = float("nan")
    x[7] = 0
    x[8, [10, 20]] = float("inf")
    assert torch.equal(x.max(dim=-1).indices, x.argmax(dim=-1))
