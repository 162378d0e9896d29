"""Attention masks, built on the device from the token indices of a batch (never stored with the data).

All masks are bool, True where a query may attend, shaped to broadcast over heads: ``(B, 1, Lq, Lk)``.

- :func:`key_padding_mask`: the official encoder/decoder mask (docs/reference.md §2.1): every token sees every
  real token of its sample, in both directions.
- :func:`time_causal_mask`: the fix for docs/reference.md §6.3-4: a token sees real tokens of its own and earlier seconds
  only, so encoder features at second t carry nothing from later seconds.
- :func:`stair_mask`: the GPT mask of pre-training and instruction tuning (docs/reference.md §3.3, §4.1): causal
  over the whole sequence, full inside each EEG second, padded EEG columns closed for every row. Text tokens (appended
  after the EEG part) are causal.
- :func:`official_generation_mask`: what the official ``NeuroLM.generate`` feeds the GPT after appending new
  tokens: a *float* mask (docs/reference.md §6.3-13), reproduced for golden comparisons only.
"""

from __future__ import annotations

import torch

__all__ = ["key_padding_mask", "time_causal_mask", "stair_mask", "official_generation_mask"]


def key_padding_mask(input_mask: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` real-token flags → ``(B, 1, 1, L)``: every query sees every real key (docs/reference.md §2.1)."""
    return input_mask.bool()[:, None, None, :]


def time_causal_mask(input_time: torch.Tensor, input_mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, L, L)``: query i sees real key j iff ``time[j] <= time[i]`` (fix for docs/reference.md §6.3-4)."""
    time = input_time.long()
    earlier_or_same = time[:, None, :] <= time[:, :, None]  # (B, L, L)
    return (earlier_or_same & input_mask.bool()[:, None, :])[:, None]


def stair_mask(input_time: torch.Tensor, input_mask: torch.Tensor, text_len: int = 0) -> torch.Tensor:
    """The stair-stepping GPT mask over ``L`` EEG tokens followed by ``text_len`` text tokens (docs/reference.md §3.3).

    ``mask[i, j] = key_real[j] and (j <= i or (i, j) are real EEG tokens of the same second)``. For real tokens
    in the time-major layout this is "all channels of the same and earlier seconds"; padding rows see every
    real EEG token, exactly like the official ``tril``-based mask.
    """
    B, L = input_mask.shape
    S = L + text_len
    device = input_mask.device
    real = input_mask.bool()
    pos = torch.arange(S, device=device)
    causal = pos[None, :] <= pos[:, None]  # (S, S)
    time = input_time.long()
    same_second = (time[:, :, None] == time[:, None, :]) & real[:, :, None] & real[:, None, :]  # (B, L, L)
    mask = causal.expand(B, S, S).clone()
    mask[:, :L, :L] |= same_second
    key_real = torch.cat((real, torch.ones(B, text_len, dtype=torch.bool, device=device)), dim=1)  # (B, S)
    return (mask & key_real[:, None, :])[:, None]


def official_generation_mask(prompt_mask: torch.Tensor, appended: int) -> torch.Tensor:
    """The official generation mask after ``appended`` new tokens (docs/reference.md §6.3-13; golden
    ``final_step_mask``).

    Each step concatenates a float zero column and a float row of ones, so from the first append on the mask
    is float and SDPA *adds* it to the scores: nothing is masked any more (allowed keys get +1).
    """
    mask: torch.Tensor = prompt_mask
    for _ in range(appended):
        B, H, Q, K = mask.shape
        mask = torch.cat((mask, torch.zeros(B, H, Q, 1, device=mask.device)), dim=-1)
        mask = torch.cat((mask, torch.ones(B, H, 1, K + 1, device=mask.device)), dim=-2)
    return mask
