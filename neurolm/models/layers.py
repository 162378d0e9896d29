"""Transformer pieces shared by the EEG encoder/decoders (docs/reference.md §2.1) and the GPT-2 backbone
(docs/reference.md §3.1).

Both official networks use nanoGPT's pre-LN block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, a fused
QKV projection split ``[q | k | v]`` with heads as contiguous slices, exact (erf) GELU and PyTorch SDPA. The
encoder has no biases (``bias=False``); GPT-2 has them. The order of operations here is the official one, so
float32 results agree with the official code to rounding.

Masks follow SDPA: a bool mask is True where a query may attend; a float mask is *added* to the scores (only the
official generation path produces one, docs/reference.md §6.3-13). A bool mask whose upper-right part is closed
(the GPT's stair mask, the time-causal encoder mask) runs block-sparse: :class:`KeyExtents` (docs/architecture.md,
"Block-sparse attention").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["LayerNorm", "SelfAttention", "MLP", "Block", "KVCache", "KeyExtents", "key_extents", "run_blocks"]

# Query rows per attention call of a block-sparse mask: among the fastest of 128-512 at 1012 and 2048 positions
# (fp32, 2 threads; forward + backward 162 -> 121-129 ms and 690-775 -> 453-471 ms per GPT-2 layer against the
# dense mask; docs/architecture.md, "Block-sparse attention").
SPARSE_ROWS = 256


class KeyExtents(NamedTuple):
    """A bool mask ``(B, 1|H, S, S)`` with, for each block of query rows ``[start, end)``, the number of leading
    key positions any of those rows may attend (``keys``): keys past it are closed for every row of the block.

    Attention then runs one SDPA call per block on the keys it can see (the same softmax: the closed keys weigh
    exactly 0 either way), skipping the closed upper-right part of a causal or stair mask that a dense masked
    call computes and discards.
    """

    mask: torch.Tensor
    blocks: tuple[tuple[int, int, int], ...]  # (start, end, keys)


def key_extents(attn_mask: torch.Tensor | None, rows: int | None = None) -> KeyExtents | None:
    """The block-sparse form of a bool ``attn_mask``, or None when it would not skip anything worth a call per
    block (no mask, a float mask, a key-padding mask, fewer than three blocks, or open to the last key)."""
    if attn_mask is None or attn_mask.dtype != torch.bool or attn_mask.dim() != 4:
        return None
    rows = rows or SPARSE_ROWS
    S = attn_mask.shape[-1]
    if attn_mask.shape[-2] != S or S < 3 * rows:
        return None
    open_cols = attn_mask.flatten(0, 1).any(dim=0)  # (S, S): may any sample/head's row i see key j
    idx = torch.arange(1, S + 1, device=attn_mask.device)
    last_open = torch.where(open_cols, idx, torch.zeros_like(idx)).amax(dim=1)  # (S,) keys row i needs
    starts = list(range(0, S, rows))
    keys = F.pad(last_open, (0, len(starts) * rows - S)).view(len(starts), rows).amax(dim=1).tolist()  # one sync
    blocks = [(start, min(S, start + rows), max(int(k), 1)) for start, k in zip(starts, keys, strict=True)]
    if sum((end - start) * n for start, end, n in blocks) > 0.9 * S * S:
        return None
    return KeyExtents(attn_mask, tuple(blocks))


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (``torch.nn.LayerNorm`` cannot drop only the bias)."""

    def __init__(self, dim: int, bias: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class KVCache:
    """Keys and values of every layer for incremental decoding; one ``(k, v)`` pair per layer.

    Tensors are ``(B, n_head, S, head_dim)``; :meth:`append` adds positions along ``S``. With ``capacity`` the
    first append allocates room for that many positions and later appends write in place, so a decoding step
    does not copy the whole cache of every layer (``torch.cat`` did: ~6 MB per layer and step at GPT-2 size,
    240 positions, batch 8). Past ``capacity`` it falls back to concatenation. Attention reads the same
    numbers either way.
    """

    def __init__(self, n_layer: int, capacity: int | None = None) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.capacity = capacity
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return 0 if self.keys[0] is None else int(self.keys[0].shape[2])

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        old_k, old_v = self.keys[layer], self.values[layer]
        past = 0 if old_k is None else int(old_k.shape[2])
        end = past + k.shape[2]
        buffers = self._buffers[layer]
        if buffers is None and old_k is None and self.capacity is not None and end <= self.capacity:
            B, H, _, D = k.shape
            buffers = (k.new_empty(B, H, self.capacity, D), v.new_empty(B, H, self.capacity, D))
            self._buffers[layer] = buffers
        if buffers is not None and end <= buffers[0].shape[2]:
            buffers[0][:, :, past:end] = k
            buffers[1][:, :, past:end] = v
            k, v = buffers[0][:, :, :end], buffers[1][:, :, :end]  # (B, nh, end, hs) views
        else:
            self._buffers[layer] = None
            if old_k is not None and old_v is not None:
                k, v = torch.cat((old_k, k), dim=2), torch.cat((old_v, v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (in place buffers keep their room)."""
        self.keys = [None if k is None else k[:, :, :length] for k in self.keys]
        self.values = [None if v is None else v[:, :, :length] for v in self.values]

    def repeat_interleave(self, repeats: int, length: int | None = None) -> KVCache:
        """A cache whose batch row ``b`` is repeated ``repeats`` times (to score several continuations), of the
        first ``length`` positions (default all)."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k[:, :, :length].repeat_interleave(repeats, dim=0) for k in self.keys]
        out.values = [None if v is None else v[:, :, :length].repeat_interleave(repeats, dim=0) for v in self.values]
        return out


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection (nanoGPT ``CausalSelfAttention`` layout)."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"width {n_embd} is not divisible by {n_head} heads")
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | KeyExtents | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        queries: int | None = None,
    ) -> torch.Tensor:
        """``queries``: only the last ``queries`` positions attend and come out (B, queries, C); all positions
        still give keys and values."""
        if isinstance(attn_mask, KeyExtents) and (cache is not None or queries is not None or
                                                  (self.training and self.dropout)):
            attn_mask = attn_mask.mask  # dense: keys from a cache, a subset of rows, or dropout's random stream
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, S_past + T, hs)
        if queries is not None:
            q, T = q[:, :, -queries:], queries  # (B, nh, queries, hs)
            if attn_mask is not None:
                attn_mask = attn_mask[..., -queries:, :]
            elif is_causal:  # SDPA aligns is_causal top-left; the kept queries are the bottom rows
                S = k.shape[2]
                attn_mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        dropout_p = self.dropout if self.training else 0.0
        if isinstance(attn_mask, KeyExtents):
            y = torch.cat([
                F.scaled_dot_product_attention(
                    q[:, :, start:end], k[:, :, :keys], v[:, :, :keys], attn_mask=attn_mask.mask[..., start:end, :keys]
                )
                for start, end, keys in attn_mask.blocks
            ], dim=2)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal and attn_mask is None,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Linear(d, 4d) → exact GELU → Linear(4d, d)."""

    def __init__(self, n_embd: int, bias: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block (LayerNorm eps 1e-5, optional biases)."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, bias=bias, dropout=dropout)
        self.ln_2 = LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | KeyExtents | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        queries: int | None = None,
    ) -> torch.Tensor:
        """``queries``: see :meth:`SelfAttention.forward`; the residual and MLP then run on those rows only."""
        y = self.attn(self.ln_1(x), attn_mask, is_causal, cache, layer, queries)
        x = x + y if queries is None else x[:, -queries:] + y
        return x + self.mlp(self.ln_2(x))


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    cache: KVCache | None = None,
    activation_checkpointing: bool = False,
    last: int | None = None,
) -> torch.Tensor:
    """Apply ``blocks`` in order; with ``activation_checkpointing`` (training only) each block's activations
    are recomputed in the backward pass instead of stored.

    ``last``: only the last ``last`` positions are wanted (B, last, C). The final block then computes its
    attention output and MLP for those rows only; every other row of it is needed for nothing but its keys and
    values (~7 % of a 12-layer prefill; the rows computed are the same numbers).

    A bool mask closed above a staircase (causal, stair) runs block-sparse (:func:`key_extents`).
    """
    final = len(blocks) - 1
    if cache is None:  # computed once for all blocks; a cache's keys are not the mask's columns
        attn_mask = key_extents(attn_mask) or attn_mask
    for i, block in enumerate(blocks):
        queries = last if i == final else None
        if activation_checkpointing and torch.is_grad_enabled() and cache is None:
            x = checkpoint(block, x, attn_mask, is_causal, None, i, queries, use_reentrant=False)
        else:
            x = block(x, attn_mask, is_causal, cache, i, queries)
    return x
