"""Generation with a KV cache, constrained option scoring and answer parsing."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from neurolm.data.tasks import get_task
from neurolm.models.generate import generate, option_probabilities, parse_answer, score_options
from neurolm.vocab import GPT2_TEXT_VOCAB


@pytest.fixture
def batch(make_batch):
    b = make_batch([(3, 2), (2, 5), (4, 3)], 16)
    b["prompt"] = torch.tensor([[50257, 24361, 25, 1148, 428]] * 3)
    return b


def _args(b):
    return b["x"], b["input_chans"], b["input_time"], b["input_mask"], b["prompt"]


@pytest.mark.parametrize("per_sample", [False, True])
def test_kv_cache_gives_the_tokens_of_full_recomputation(debug_lm, batch, per_sample) -> None:
    debug_lm.config.per_sample_text_positions = per_sample
    cached = generate(debug_lm, *_args(batch), max_new_tokens=8, use_cache=True)
    full = generate(debug_lm, *_args(batch), max_new_tokens=8, use_cache=False)
    assert torch.equal(cached.tokens, full.tokens)
    for a, b in zip(cached.step_logits, full.step_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert cached.tokens.shape == (3, 5 + 8) and int(cached.tokens[:, 5:].max()) < GPT2_TEXT_VOCAB


def test_official_mask_needs_recomputation(debug_lm, batch) -> None:
    with pytest.raises(ValueError, match="use_cache=False"):
        generate(debug_lm, *_args(batch), use_cache=True, official_mask=True)


def test_option_scores_equal_the_full_sequence_likelihood(debug_lm, batch) -> None:
    options = [[3363], [1400, 13], [32, 8, 290]]  # options of different lengths
    scores = score_options(debug_lm, *_args(batch), options)
    assert scores.shape == (3, 3)
    for k, option in enumerate(options):
        text = torch.cat((batch["prompt"], torch.tensor([option] * 3)), dim=1)
        with torch.no_grad():
            logits = debug_lm(batch["x"], batch["input_chans"], batch["input_time"], batch["input_mask"],
                              text=text, return_logits=True).logits[:, 16:, :GPT2_TEXT_VOCAB]
        logp = F.log_softmax(logits, dim=-1)
        P = batch["prompt"].shape[1]
        expected = sum(logp[:, P - 1 + j, t] for j, t in enumerate(option))
        assert torch.allclose(scores[:, k], expected, atol=1e-4)
    probs = option_probabilities(scores)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(3))


def test_parse_answer_follows_the_official_get_pred() -> None:
    tuab, tuev = get_task("TUAB"), get_task("TUEV")
    assert parse_answer("Question: Is this EEG segment abnormal? Answer: Yes <|endoftext|>", tuab) == 1
    assert parse_answer("Question: Is this EEG segment abnormal? Answer: No", tuab) == 0
    assert parse_answer("Question: Is this EEG segment abnormal? Answer: Maybe", tuab) == -1
    assert parse_answer("Question: Is this EEG segment abnormal?", tuab) == -1
    assert parse_answer(tuev.prompt + "C) <|endoftext|>", tuev) == 2
    assert parse_answer(tuev.prompt + "F).", tuev) == 5  # "(F)." is cut to "(F)"
    assert parse_answer(tuev.prompt + "G)", tuev) == -1


def test_kv_cache_processes_each_position_once(debug_lm, batch) -> None:
    rows: list[int] = []
    debug_lm.gpt.blocks[0].register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[1]))
    generate(debug_lm, *_args(batch), max_new_tokens=6, use_cache=True)
    cached, rows[:] = sum(rows), []
    generate(debug_lm, *_args(batch), max_new_tokens=6, use_cache=False)
    prefix = 12 + 5  # EEG without the padding all samples end with (the longest has 12 tokens of 16) + prompt
    assert cached == prefix + 5 and sum(rows) == sum(prefix + i for i in range(6))


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_without_the_padded_tail_gives_the_logits_of_the_full_layout(debug_lm, batch, use_cache) -> None:
    """Generation skips the padded EEG tail; every step's logits equal a full forward over all 16 EEG columns."""
    out = generate(debug_lm, *_args(batch), max_new_tokens=4, use_cache=use_cache)
    for i, logits in enumerate(out.step_logits):
        full = debug_lm(batch["x"], batch["input_chans"], batch["input_time"], batch["input_mask"],
                        text=out.tokens[:, : 5 + i], return_logits=True).logits  # (B, 16 + 5 + i, V)
        assert full.shape[1] == 16 + 5 + i
        assert torch.allclose(logits, full[:, -1, :GPT2_TEXT_VOCAB], atol=1e-5, rtol=0)


def test_final_block_on_the_last_positions_gives_the_same_hidden_states(debug_lm, batch) -> None:
    x = torch.randn(3, 9, debug_lm.config.gpt.n_embd)
    with torch.no_grad():
        full = debug_lm.gpt(x, is_causal=True)
        last = debug_lm.gpt(x, is_causal=True, last=2)
    assert last.shape == (3, 2, x.shape[-1])
    assert torch.allclose(last, full[:, -2:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("room", [0, 2, 6])
def test_kv_cache_in_place_or_concatenated_gives_the_same_tokens(debug_lm, batch, room) -> None:
    """Room for every new token (written in place), for some (then concatenation), or for none."""
    from neurolm.models.generate import prefill

    reference = generate(debug_lm, *_args(batch), max_new_tokens=6, use_cache=False)
    state = prefill(debug_lm, *_args(batch), room=room)
    out = generate(debug_lm, *_args(batch), max_new_tokens=6, prefilled=state)
    assert torch.equal(out.tokens, reference.tokens)
    for a, b in zip(out.step_logits, reference.step_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_one_prefill_serves_option_scoring_and_repeated_generation(debug_lm, batch) -> None:
    from neurolm.models.generate import prefill

    options = [[3363], [1400, 13]]
    alone_scores = score_options(debug_lm, *_args(batch), options)
    alone = generate(debug_lm, *_args(batch), max_new_tokens=5)
    state = prefill(debug_lm, *_args(batch), room=5)
    first = generate(debug_lm, *_args(batch), max_new_tokens=5, prefilled=state)
    scores = score_options(debug_lm, *_args(batch), options, prefilled=state)  # after generation wrote its room
    again = generate(debug_lm, *_args(batch), max_new_tokens=5, prefilled=state)
    assert torch.equal(first.tokens, alone.tokens) and torch.equal(again.tokens, alone.tokens)
    assert torch.allclose(scores, alone_scores, atol=1e-6, rtol=0)


def test_text_head_is_the_text_columns_of_the_full_head(debug_lm) -> None:
    hidden = torch.randn(4, 3, debug_lm.config.gpt.n_embd)
    with torch.no_grad():
        assert torch.allclose(debug_lm.text_head(hidden), debug_lm.head(hidden)[..., :GPT2_TEXT_VOCAB], atol=1e-6)
