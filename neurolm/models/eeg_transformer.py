"""The EEG transformer of the tokenizer: encoder on raw 1-s patches, decoders on codebook vectors (docs/reference.md §2.1, §2.3).

One class serves both roles, as in the official ``NeuralTransformer``: with ``in_dim=None`` the patch embedding
is the temporal convolution (:class:`TemporalConv`) on 200-sample patches; with ``in_dim=D`` it is a
``Linear(D, width)`` on quantized vectors. Then a learned channel embedding (row = 10-20 vocabulary index) and
time embedding (row = second index) are added, bias-free pre-LN blocks run under the given mask, and a final
``LayerNorm(eps=1e-6)`` (with bias) produces the features of every token. There is no CLS token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neurolm.model_config import EEGTransformerConfig
from neurolm.models.layers import Block, run_blocks
from neurolm.models.quantizer import all_reduce_sum

__all__ = ["EEGTransformerConfig", "TemporalConv", "EEGTransformer", "masked_group_norm"]


def masked_group_norm(h: torch.Tensor, norm: nn.GroupNorm, stats_mask: torch.Tensor) -> torch.Tensor:
    """GroupNorm of ``h`` (B, C, N, T) whose statistics for patch i pool only the patches j with
    ``stats_mask[b, i, j]`` (B, N, N): e.g. the sample's real patches, or those of seconds <= its own."""
    B, C, N, T = h.shape
    G = norm.num_groups
    hg = h.float().reshape(B, G, C // G, N, T)
    s1, s2 = hg.sum(dim=(2, 4)), hg.pow(2).sum(dim=(2, 4))  # (B, G, N) per-patch sums
    w = stats_mask.float()  # (B, N, N)
    count = (w.sum(dim=-1) * (C // G) * T).clamp(min=1)[:, None, :]  # (B, 1, N)
    mean = torch.einsum("bij,bgj->bgi", w, s1) / count  # (B, G, N)
    var = (torch.einsum("bij,bgj->bgi", w, s2) / count - mean.pow(2)).clamp(min=0)  # biased, as GroupNorm
    out = (hg - mean[:, :, None, :, None]) * torch.rsqrt(var + norm.eps)[:, :, None, :, None]
    out = out.reshape(B, C, N, T).to(h.dtype)
    return out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


class TemporalConv(nn.Module):
    """Patch embedding of raw EEG (docs/reference.md §2.1): three conv–GroupNorm–GELU stages along time, then Linear + GELU.

    ``(B, N, P)`` patches → ``(B, N, n_embd)``. The conv output ``(B, 16, N, P/8)`` is flattened time-major per
    patch (feature index = t·16 + c) before the linear layer, as in the official ``rearrange``.

    Officially the GroupNorm statistics pool *all* patches of the sample, padding included, so a token's
    embedding depends on the padded length and on later seconds. ``stats_mask`` (B, N, N) restricts them
    (see :func:`masked_group_norm`); None keeps the official ``nn.GroupNorm``.

    ``norm_stats="dataset"`` (not official; docs/recipe.md §19) normalises with statistics of the training data
    instead of each sample's own: per GroupNorm group, the pooled mean and variance of every real patch the
    encoder has seen in training mode (buffers ``running_mean``/``running_var`` (3, G) and ``running_count`` (3,),
    updated with each batch — all-reduced under ``torch.distributed``, as the codebook statistics — before it is
    normalised, so stage 1's last steps and the frozen encoder of stages 2-3 compute the same function). In eval
    mode, and always inside NeuroLM (``track_stats`` off), they are only read. Each sample keeps its own
    amplitude and offset relative to the data: the official per-sample statistics divide every trial by its own
    scale.
    """

    def __init__(self, n_embd: int, patch_size: int = 200, channels: int = 16, norm_stats: str = "sample") -> None:
        super().__init__()
        if norm_stats not in ("sample", "dataset"):
            raise ValueError(f"norm_stats must be 'sample' or 'dataset', got {norm_stats!r}")
        self.conv1 = nn.Conv2d(1, channels, kernel_size=(1, 15), stride=(1, 8), padding=(0, 7))
        self.norm1 = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, 1))
        self.norm2 = nn.GroupNorm(4, channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(4, channels)
        self.gelu = nn.GELU()
        steps = (patch_size + 2 * 7 - 15) // 8 + 1  # conv1 output length: 25 for 200-sample patches
        self.proj = nn.Linear(steps * channels, n_embd)
        self.norm_stats = norm_stats
        if norm_stats == "dataset":
            groups = self.norm1.num_groups
            self.register_buffer("running_mean", torch.zeros(3, groups))
            self.register_buffer("running_var", torch.ones(3, groups))
            self.register_buffer("running_count", torch.zeros(3))
        # Off in NeuroLM: its encoder is frozen (a fixed function of the tokenizer's statistics).
        self.track_stats = True

    def forward(self, x: torch.Tensor, stats_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x.shape
        x = x.unsqueeze(1)  # (B, 1, N, P)
        stages = ((self.conv1, self.norm1), (self.conv2, self.norm2), (self.conv3, self.norm3))
        for k, (conv, norm) in enumerate(stages):
            h = conv(x)  # (B, 16, N, P/8)
            if self.norm_stats == "dataset":
                h = self._dataset_norm(k, h, norm, stats_mask)
            else:
                h = norm(h) if stats_mask is None else masked_group_norm(h, norm, stats_mask)
            x = self.gelu(h)
        x = x.permute(0, 2, 3, 1).reshape(B, N, -1)  # (B, N, steps * 16), index = t * 16 + c
        return self.gelu(self.proj(x))  # (B, N, n_embd)

    def _dataset_norm(
        self, k: int, h: torch.Tensor, norm: nn.GroupNorm, stats_mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, C, N, T = h.shape
        G = norm.num_groups
        hg = h.float().reshape(B, G, C // G, N, T)
        if self.training and self.track_stats:
            with torch.no_grad():
                # Real patches: those some patch pools over (padding excluded when the caller says so).
                w = stats_mask.any(dim=1) if stats_mask is not None else h.new_ones(B, N, dtype=torch.bool)
                w = w.to(torch.float64)[:, None, None, :, None]
                h64 = hg.detach().to(torch.float64) * w
                sums = torch.cat([(w.sum() * (C // G) * T).reshape(1), h64.sum(dim=(0, 2, 3, 4)),
                                  (h64 * hg.detach()).sum(dim=(0, 2, 3, 4))])  # fmt: skip
                n_b, s1, s2 = all_reduce_sum(sums).split([1, G, G])  # the global batch: every rank the same
                if n_b.item() > 0:
                    mean_b, var_b = s1 / n_b, (s2 / n_b - (s1 / n_b).pow(2)).clamp(min=0)
                    n_a = self.running_count[k].to(torch.float64)
                    mean_a = self.running_mean[k].to(torch.float64)
                    var_a = self.running_var[k].to(torch.float64)
                    total = n_a + n_b
                    delta = mean_b - mean_a  # pooled mean and variance of everything seen (Chan et al.)
                    self.running_mean[k] = (mean_a + delta * n_b / total).to(self.running_mean.dtype)
                    self.running_var[k] = (
                        (var_a * n_a + var_b * n_b + delta.pow(2) * n_a * n_b / total) / total
                    ).to(self.running_var.dtype)
                    self.running_count[k] = total.to(self.running_count.dtype)
        mean = self.running_mean[k].float()[None, :, None, None, None]
        inv = torch.rsqrt(self.running_var[k].float() + norm.eps)[None, :, None, None, None]
        out = ((hg - mean) * inv).reshape(B, C, N, T).to(h.dtype)
        return out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


class EEGTransformer(nn.Module):
    """Channel- and time-embedded transformer over EEG tokens; returns normalised features of every token."""

    def __init__(self, config: EEGTransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.n_embd
        if config.in_dim is None:
            self.patch_embed: nn.Module = TemporalConv(d, config.patch_size, config.conv_channels, config.patch_norm)
        else:
            self.patch_embed = nn.Linear(config.in_dim, d)
        self.channel_embed = nn.Embedding(config.channel_rows, d)
        self.time_embed = nn.Embedding(config.time_rows, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.n_head, bias=False, dropout=config.dropout) for _ in range(config.n_layer)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official: trunc-normal(0.02) Linear weights, zero biases; embeddings keep N(0, 1); then the residual
        # projections of block l are divided by sqrt(2 l) (LaBraM's fix_init_weight).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        std = self.config.embedding_init_std
        if std is not None:  # official: nn.Embedding's N(0, 1); see TokenizerConfig.embedding_init_std
            nn.init.normal_(self.channel_embed.weight, std=std)
            nn.init.normal_(self.time_embed.weight, std=std)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.c_proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp.c_proj.weight.div_(math.sqrt(2.0 * layer))

    def forward(
        self,
        x: torch.Tensor,
        input_chans: torch.Tensor,
        input_time: torch.Tensor,
        attn_mask: torch.Tensor | None,
        patch_norm_mask: torch.Tensor | None = None,
        keep: int | None = None,
    ) -> torch.Tensor:
        """``x`` (B, L, P) patches or (B, L, in_dim) codes → (B, L, n_embd) features. ``patch_norm_mask``
        (B, L, L) restricts the temporal convolution's GroupNorm statistics (None = official).

        ``keep``: only the first ``keep`` tokens go through the blocks and come out (B, keep, n_embd). The patch
        embedding still sees all L tokens (its official GroupNorm statistics pool the padding too), so when
        tokens ``keep:`` are padding of every sample — keys no token attends to — the kept features equal the
        first ``keep`` of a full pass (to rounding).
        """
        if isinstance(self.patch_embed, TemporalConv):
            h = self.patch_embed(x, patch_norm_mask)  # (B, L, d)
        else:
            h = self.patch_embed(x)  # (B, L, d)
        if keep is not None and keep < h.shape[1]:
            h, input_chans, input_time = h[:, :keep], input_chans[:, :keep], input_time[:, :keep]
            if attn_mask is not None:  # (B, 1, 1 or L, L)
                attn_mask = attn_mask[..., :keep] if attn_mask.shape[-2] == 1 else attn_mask[..., :keep, :keep]
        h = h + self.channel_embed(input_chans)
        h = h + self.time_embed(input_time)
        h = self.drop(h)
        h = run_blocks(self.blocks, h, attn_mask)
        return self.norm(h)
