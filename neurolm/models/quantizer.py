"""EMA vector quantizer with an l2-normalised codebook (docs/reference.md §2.2; official ``NormEMAVectorQuantizer``).

``z`` is l2-normalised, matched to the nearest code by Euclidean distance (cosine, since both are unit vectors)
and replaced by it with a straight-through gradient. The codebook is not trained by gradients: on the first
training batch it is initialised by cosine k-means, then every training step moves each used code toward the
l2-normalised mean of the vectors assigned to it (EMA, decay 0.99) and re-normalises it. The loss is the
commitment term ``beta * mse(z_q.detach(), z)`` only.

Under ``torch.distributed`` the per-code counts and sums are all-reduced before the update, and the k-means
codebook of rank 0 is broadcast so every rank starts from the same codebook (the official code lets each rank
keep its own k-means result).

Official quirks, kept by default and switchable:
- padding tokens take part in k-means, the EMA statistics and the commitment loss (docs/reference.md §6.3-6);
  pass ``valid`` to :meth:`NormEMAQuantizer.forward` to exclude them;
- ``usage`` (a code-usage EMA that nothing reads) is also updated in eval mode (docs/reference.md §6.3-9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

__all__ = ["QuantizerOutput", "NormEMAQuantizer", "cosine_kmeans", "l2norm", "nearest_code_indices",
           "FP32CodeProjection"]


def l2norm(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, p=2, dim=-1)


class FP32CodeProjection(nn.Sequential):
    """The Linear–Tanh–Linear code projection, computed in float32 whatever the parameter dtype or autocast
    (official: autocast disabled); gradients still reach low-precision parameters through the casts.

    Its own ``forward`` (rather than a function reading the weights) lets ZeRO-3 gather the partitioned weights
    before it runs. The parameter names are those of the plain ``nn.Sequential`` (``0.weight``, ``2.bias``).
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        first, _, last = self
        with torch.autocast(device_type=features.device.type, enabled=False):
            h = torch.tanh(F.linear(features.float(), first.weight.float(), first.bias.float()))
            return F.linear(h, last.weight.float(), last.bias.float())



def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks in place under ``torch.distributed``; ``t`` itself otherwise."""
    if _distributed():
        dist.all_reduce(t)
    return t


def cosine_kmeans(
    samples: torch.Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means on unit vectors ``(n, D)`` → (means ``(K, D)``, bin counts ``(K,)``).

    Means start at random samples (without replacement when there are enough); an empty cluster keeps its
    previous mean. Same procedure as the official ``kmeans(..., use_cosine_sim=True)``.
    """
    n, dim = samples.shape
    device = samples.device
    if n >= num_clusters:
        idx = torch.randperm(n, generator=generator, device="cpu")[:num_clusters].to(device)
    else:
        idx = torch.randint(0, n, (num_clusters,), generator=generator, device="cpu").to(device)
    means = samples[idx]
    bins = torch.zeros(num_clusters, dtype=torch.long, device=device)
    for _ in range(iters):
        buckets = (samples @ means.t()).argmax(dim=-1)  # (n,)
        bins = torch.bincount(buckets, minlength=num_clusters)
        empty = bins == 0
        sums = torch.zeros(num_clusters, dim, dtype=samples.dtype, device=device).index_add_(0, buckets, samples)
        new_means = l2norm(sums / bins.masked_fill(empty, 1)[:, None])
        means = torch.where(empty[:, None], means, new_means)
    return means, bins


def nearest_code_indices(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for each vector of ``z`` (..., D), by ``|z|² + |e|² − 2 z·e`` (official)."""
    flat = z.reshape(-1, codebook.shape[1]).float()
    codebook = codebook.float()
    d = flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * torch.einsum("bd,nd->bn", flat, codebook)
    return d.argmin(dim=1).view(z.shape[:-1])


@dataclass
class QuantizerOutput:
    """Result of one quantization."""

    z_q: torch.Tensor
    """(B, L, D) chosen codes with a straight-through gradient to ``z``."""
    loss: torch.Tensor
    """Commitment loss (scalar)."""
    indices: torch.Tensor
    """(B, L) code index of every token."""
    z: torch.Tensor
    """(B, L, D) the l2-normalised input that was quantized."""


class NormEMAQuantizer(nn.Module):
    """``num_codes`` unit-norm codes of ``code_dim`` dimensions, updated by EMA (docs/reference.md §2.2).

    Buffers (all stored, none optimised): ``codebook`` (K, D); ``usage`` (K,) EMA of code counts;
    ``kmeans_counts`` (K,) bin counts of the k-means init; ``embed_avg`` (K, D) kept only so an official
    checkpoint round-trips (always zero there); ``initialized`` (1,) 1.0 once k-means has run.
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        decay: float = 0.99,
        beta: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        usage_ema_in_eval: bool = True,
    ) -> None:
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.decay, self.beta, self.kmeans_iters = decay, beta, kmeans_iters
        self.usage_ema_in_eval = usage_ema_in_eval
        codebook = torch.zeros(num_codes, code_dim) if kmeans_init else l2norm(torch.randn(num_codes, code_dim))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("codebook", codebook)
        self.register_buffer("kmeans_counts", torch.zeros(num_codes))
        self.register_buffer("embed_avg", codebook.clone())
        self.register_buffer("initialized", torch.tensor([0.0 if kmeans_init else 1.0]))

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        means, bins = cosine_kmeans(flat.float(), self.num_codes, self.kmeans_iters)
        if _distributed():
            dist.broadcast(means, src=0)
            dist.broadcast(bins, src=0)
        self.codebook.copy_(means)
        self.kmeans_counts.copy_(bins)
        self.initialized.fill_(1.0)

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes of l2-normalised ``z`` (..., D)."""
        return nearest_code_indices(z, self.codebook)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        counts = all_reduce_sum(torch.bincount(idx, minlength=self.num_codes).to(flat.dtype))
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        empty = counts == 0
        flat = flat.float()
        sums = torch.zeros(self.num_codes, self.code_dim, dtype=flat.dtype, device=flat.device)
        sums = all_reduce_sum(sums.index_add_(0, idx, flat))
        means = l2norm(sums / counts.masked_fill(empty, 1.0)[:, None])
        codebook = self.codebook.float()
        means = torch.where(empty[:, None], codebook, means)
        self.codebook.copy_(l2norm(codebook * self.decay + means * (1 - self.decay)))

    def forward(self, z: torch.Tensor, valid: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize ``z`` (B, L, D) (not yet normalised). ``valid`` (B, L) restricts k-means, EMA statistics and
        the commitment loss to real tokens (None = every token, the official behaviour)."""
        z = l2norm(z.float())
        flat = z.reshape(-1, self.code_dim)  # (B*L, D)
        keep = None if valid is None else valid.reshape(-1).bool()
        stats_flat = flat if keep is None else flat[keep]
        if not bool(self.initialized.item()):
            self._kmeans_init(stats_flat.detach())
        indices = self.nearest_codes(z)  # (B, L)
        z_q = F.embedding(indices, self.codebook.float())  # (B, L, D)
        stats_idx = indices.reshape(-1) if keep is None else indices.reshape(-1)[keep]
        if self.training:
            self._ema_update(stats_flat.detach(), stats_idx)
        elif self.usage_ema_in_eval:
            with torch.no_grad():
                counts = all_reduce_sum(torch.bincount(stats_idx, minlength=self.num_codes).to(flat.dtype))
                self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if keep is None:
            loss = self.beta * F.mse_loss(z_q.detach(), z)
        else:
            per_token = (z_q.detach() - z).pow(2).mean(dim=-1)  # (B, L)
            loss = self.beta * (per_token * valid).sum() / valid.sum().clamp(min=1)
        z_q = z + (z_q - z).detach()
        return QuantizerOutput(z_q=z_q, loss=loss, indices=indices, z=z)
