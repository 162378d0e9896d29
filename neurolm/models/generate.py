"""Answering instruction prompts: greedy generation with a KV cache, constrained option scoring, parsing.

- :func:`prefill`: the frozen encoder and the GPT over EEG + prompt, once; its KV cache serves both
  :func:`generate` and :func:`score_options` (evaluation does both on every batch).
- :func:`generate`: greedy decoding over the text vocabulary (logits ``[:50257]``), as the official
  ``NeuroLM.generate(top_k=1)`` (docs/reference.md §4.3). With ``use_cache`` the EEG and prompt are run once and each new
  token costs one position; without it the whole sequence is recomputed per token (the official way). Both
  give the same tokens. ``official_mask=True`` reproduces the official float-mask defect (docs/reference.md §6.3-13: from
  the second new token on nothing is masked) for golden comparisons; it implies recomputation.
- :func:`score_options`: the log-likelihood of each answer option after the prompt, for class probabilities
  (proper AUROC/AUC-PR instead of the official hard labels, docs/reference.md §4.3).
- :func:`parse_answer`: the official ``get_pred``: the word at ``task.result_idx`` of the decoded text,
  ``(X…`` cut to 3 characters, mapped to a label; anything else is -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from neurolm.data.tasks import Task
from neurolm.models.layers import KVCache
from neurolm.models.masks import official_generation_mask, stair_mask
from neurolm.models.neurolm import NeuroLM, real_length
from neurolm.vocab import GPT2_TEXT_VOCAB

__all__ = ["GenerationOutput", "Prefill", "prefill", "generate", "score_options", "option_probabilities", "parse_answer",
           "decode_answers"]


@dataclass
class GenerationOutput:
    """Prompt + generated tokens, and the text logits of every step."""

    tokens: torch.Tensor
    """(B, P + new) token ids."""
    step_logits: list[torch.Tensor] = field(default_factory=list)
    """Per step: (B, 50257) last-position text logits."""


@dataclass
class Prefill:
    """EEG + prompt run through the GPT once: what appending text tokens needs."""

    cache: KVCache
    """Keys and values of the EEG part (padded tail trimmed) and the prompt."""
    last_hidden: torch.Tensor
    """(B, d) final hidden state of the last prompt token (predicts the first new token)."""
    start: torch.Tensor
    """(B,) position of the first text token."""
    input_mask: torch.Tensor
    """(B, L') real-token flags of the cached EEG part."""
    prompt_len: int
    """P: text tokens in the cache."""


def _append_mask(input_mask: torch.Tensor, past_text: int, new: int) -> torch.Tensor:
    """(B, 1, new, L + past_text + new) bool mask for ``new`` text tokens appended after ``past_text`` ones:
    real EEG keys and all earlier text, causal among the new tokens."""
    B, _ = input_mask.shape
    device = input_mask.device
    eeg = input_mask.bool()[:, None, :].expand(B, new, -1)
    past = torch.ones(B, new, past_text, dtype=torch.bool, device=device)
    causal = torch.ones(new, new, dtype=torch.bool, device=device).tril().expand(B, new, new)
    return torch.cat((eeg, past, causal), dim=2)[:, None]


def _eeg_part(
    model: NeuroLM, x_eeg: torch.Tensor, input_chans: torch.Tensor, input_time: torch.Tensor, input_mask: torch.Tensor,
    trim: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPT inputs of the EEG part (B, L', d), the text start (B,), and the ``input_time``/``input_mask`` (B, L')
    that go with them. With ``trim`` L' drops the padding every sample ends with: no later token attends to
    it under the stair mask, so the encoder and the prefill skip it (~17 % of the tokens of a 10-s TUAB sample
    padded to 276)."""
    start = model.text_start(input_time, input_mask)  # from the full layout (official: max over all columns)
    keep = real_length(input_mask) if trim else input_mask.shape[1]
    features = model.encode_eeg(x_eeg, input_chans, input_time, input_mask, keep=keep)
    input_chans, input_time, input_mask = input_chans[:, :keep], input_time[:, :keep], input_mask[:, :keep]
    return model.eeg_embeddings(features, input_chans, input_time), start, input_time, input_mask


@torch.no_grad()
def prefill(
    model: NeuroLM,
    x_eeg: torch.Tensor,
    input_chans: torch.Tensor,
    input_time: torch.Tensor,
    input_mask: torch.Tensor,
    prompt: torch.Tensor,
    room: int = 0,
) -> Prefill:
    """Encode the EEG and run the GPT over EEG + ``prompt`` (B, P) once, keeping its KV cache; ``room``
    positions are reserved in the cache for tokens appended later (in place, no copies per step)."""
    input_mask = input_mask.bool()
    P = prompt.shape[1]
    eeg, start, input_time, input_mask = _eeg_part(model, x_eeg, input_chans, input_time, input_mask)
    cache = model.gpt.new_cache(capacity=eeg.shape[1] + P + room)
    x = torch.cat((eeg, model.text_embeddings(prompt.long(), start)), dim=1)  # (B, L' + P, d)
    last = model.gpt(x, stair_mask(input_time, input_mask, text_len=P), cache=cache, last=1)[:, -1]  # (B, d)
    return Prefill(cache=cache, last_hidden=last, start=start, input_mask=input_mask, prompt_len=P)


@torch.no_grad()
def generate(
    model: NeuroLM,
    x_eeg: torch.Tensor,
    input_chans: torch.Tensor,
    input_time: torch.Tensor,
    input_mask: torch.Tensor,
    prompt: torch.Tensor,
    max_new_tokens: int = 5,
    use_cache: bool = True,
    official_mask: bool = False,
    prefilled: Prefill | None = None,
) -> GenerationOutput:
    """Greedy continuation of ``prompt`` (B, P) (same length for the batch; [SEP] first) after the EEG.

    ``prefilled``: the :func:`prefill` of these inputs, reused instead of running the encoder and the prompt
    again (KV-cache mode only; it can serve several calls)."""
    if official_mask and use_cache:
        raise ValueError("official_mask reproduces a defect that changes earlier positions; use use_cache=False")
    if use_cache:
        return _generate_cached(model, x_eeg, input_chans, input_time, input_mask, prompt, max_new_tokens, prefilled)
    if prefilled is not None:
        raise ValueError("prefilled needs use_cache=True")
    input_mask = input_mask.bool()
    # the official mask lets appended tokens see the padding (docs/reference.md §6.3-13): keep it then
    eeg, start, input_time, input_mask = _eeg_part(model, x_eeg, input_chans, input_time, input_mask,
                                                   trim=not official_mask)
    tokens = prompt.long()
    steps: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if official_mask:
            mask = official_generation_mask(stair_mask(input_time, input_mask, prompt.shape[1]), step)
        else:
            mask = stair_mask(input_time, input_mask, text_len=tokens.shape[1])
        x = torch.cat((eeg, model.text_embeddings(tokens, start)), dim=1)
        hidden = model.gpt(x, mask)[:, -1]  # (B, d)
        logits = model.head(hidden)[:, :GPT2_TEXT_VOCAB]  # (B, 50257)
        steps.append(logits)
        tokens = torch.cat((tokens, logits.argmax(dim=-1, keepdim=True)), dim=1)
    return GenerationOutput(tokens=tokens, step_logits=steps)


def _generate_cached(
    model: NeuroLM,
    x_eeg: torch.Tensor,
    input_chans: torch.Tensor,
    input_time: torch.Tensor,
    input_mask: torch.Tensor,
    prompt: torch.Tensor,
    max_new_tokens: int,
    prefilled: Prefill | None,
) -> GenerationOutput:
    """KV-cache decoding: one prefill, then one position per new token."""
    state = prefilled or prefill(model, x_eeg, input_chans, input_time, input_mask, prompt, room=max_new_tokens)
    cache, P = state.cache, state.prompt_len
    cache.truncate(cache_len := state.input_mask.shape[1] + P)  # a reused prefill starts again after the prompt
    tokens = prompt.long()
    steps: list[torch.Tensor] = []
    hidden = state.last_hidden
    for step in range(max_new_tokens):
        if step > 0:
            x = model.text_embeddings(tokens[:, -1:], state.start + P + step - 1)  # (B, 1, d)
            hidden = model.gpt(x, _append_mask(state.input_mask, P + step - 1, 1), cache=cache)[:, -1]
        logits = model.text_head(hidden)  # (B, 50257)
        steps.append(logits)
        tokens = torch.cat((tokens, logits.argmax(dim=-1, keepdim=True)), dim=1)
    cache.truncate(cache_len)
    return GenerationOutput(tokens=tokens, step_logits=steps)


@torch.no_grad()
def score_options(
    model: NeuroLM,
    x_eeg: torch.Tensor,
    input_chans: torch.Tensor,
    input_time: torch.Tensor,
    input_mask: torch.Tensor,
    prompt: torch.Tensor,
    options: Sequence[Sequence[int]],
    length_normalize: bool = False,
    prefilled: Prefill | None = None,
) -> torch.Tensor:
    """(B, K) log-likelihood of each option's tokens after ``prompt``, under the text distribution
    (log-softmax over the first 50257 logits, as decoding). The EEG and prompt run once (KV cache, or
    ``prefilled``: their :func:`prefill`); options are scored in one batched pass. ``length_normalize``
    divides by the option length."""
    B, P = prompt.shape
    K, M = len(options), max(len(o) for o in options)
    state = prefilled or prefill(model, x_eeg, input_chans, input_time, input_mask, prompt)
    start, input_mask, last = state.start, state.input_mask, state.last_hidden
    device = prompt.device
    opt = torch.full((K, M), 0, dtype=torch.long, device=device)
    real = torch.zeros(K, M, dtype=torch.bool, device=device)
    for k, o in enumerate(options):
        opt[k, : len(o)] = torch.as_tensor(list(o), device=device)
        real[k, : len(o)] = True
    cache = state.cache.repeat_interleave(K, length=input_mask.shape[1] + P)
    opt_b = opt.repeat(B, 1)  # (B*K, M), row b*K + k
    hidden = model.gpt(
        model.text_embeddings(opt_b, start.repeat_interleave(K) + P),
        _append_mask(input_mask.repeat_interleave(K, dim=0), P, M),
        cache=cache,
    )  # (B*K, M, d)
    before = torch.cat((last.repeat_interleave(K, dim=0)[:, None], hidden[:, :-1]), dim=1)  # predicts token j
    logp = F.log_softmax(model.text_head(before).float(), dim=-1)  # (B*K, M, V)
    token_logp = logp.gather(-1, opt_b[..., None]).squeeze(-1) * real.repeat(B, 1)  # (B*K, M)
    total = token_logp.sum(dim=1).view(B, K)
    if length_normalize:
        total = total / real.sum(dim=1).to(total.dtype)[None, :]
    return total


def option_probabilities(log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, K) from option log-likelihoods: softmax over the options."""
    return torch.softmax(log_likelihoods, dim=-1)


def parse_answer(decoded: str, task: Task) -> int:
    """Official ``get_pred``: label of the word at ``task.result_idx`` of ``decoded`` (the generation decoded
    without [SEP]); words starting with ``(`` are cut to 3 characters; failure → -1."""
    words = decoded.split(" ")
    if task.result_idx >= len(words):
        return -1
    word = words[task.result_idx]
    if word.startswith("("):
        word = word[:3]
    return task.label_of_word.get(word, -1)


def decode_answers(tokens: torch.Tensor, decode: object, task: Task) -> tuple[list[str], list[int]]:
    """Decode generated rows without their leading [SEP] (``decode`` = ``GPT2BPE.decode``) and parse them."""
    texts = [decode(row[1:].tolist()) for row in tokens]  # type: ignore[operator]
    return texts, [parse_answer(t, task) for t in texts]
