"""The text-aligned neural tokenizer (stage 1; docs/reference.md §2; official ``VQ_Align``).

encoder (:class:`~neurolm.models.eeg_transformer.EEGTransformer`, raw patches) → ``code_proj``
(Linear–Tanh–Linear to the code dimension, fp32) → :class:`~neurolm.models.quantizer.NormEMAQuantizer` →
two decoders on the quantized vectors → heads predicting the z-scored Fourier amplitude (100 bins) and the
z-scored raw patch (200 samples). A domain classifier behind a gradient-reversal layer sees the encoder
features (label 0) and frozen GPT-2 token embeddings (label 1), pushing EEG features toward the text
embedding space (docs/reference.md §2.5). All loss weights are 1 (docs/reference.md §2.4).

Usage::

    cfg = TokenizerConfig.preset("base")              # official sizes; "debug" for tests
    tok = NeuralTokenizer(cfg)
    out = tok(batch["x"], batch["freq_target"], batch["raw_target"], batch["input_chans"],
              batch["input_time"], batch["input_mask"], text_tokens=text, alpha=dann_alpha(progress))
    out.loss.backward()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from neurolm.model_config import TokenizerConfig
from neurolm.models.eeg_transformer import EEGTransformer
from neurolm.models.masks import key_padding_mask
from neurolm.models.quantizer import FP32CodeProjection, NormEMAQuantizer, QuantizerOutput

__all__ = ["TokenizerConfig", "TokenizerOutput", "NeuralTokenizer", "GradientReversal", "dann_alpha"]


def dann_alpha(progress: float) -> float:
    """Gradient-reversal strength of the DANN schedule: ``2 / (1 + exp(-10 p)) - 1`` for progress p ∈ [0, 1]
    (docs/reference.md §2.5; 0 at the start, ≈1 at the end)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``-alpha`` backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.alpha, None


@dataclass
class TokenizerOutput:
    """Losses and intermediate tensors of one tokenizer forward."""

    loss: torch.Tensor
    """Training objective: commit + rec_freq + rec_raw + domain_eeg (+ domain_text when text is given)."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    """Each term: ``commit``, ``rec_freq``, ``rec_raw``, ``vq_total``, ``domain_eeg``, ``domain_text``."""
    codes: torch.Tensor | None = None
    """(B, L) code indices."""
    features: torch.Tensor | None = None
    """(B, L, width) encoder features."""
    rec_freq: torch.Tensor | None = None
    """(B, L, freq_bins) frequency reconstruction before the token mask."""
    rec_raw: torch.Tensor | None = None
    """(B, L, patch_size) raw reconstruction before the token mask."""


def _mlp_head(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_in), nn.Tanh(), nn.Linear(d_in, d_out))


class NeuralTokenizer(nn.Module):
    """VQ tokenizer with reconstruction decoders and the text-alignment domain classifier (docs/reference.md §2)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # Registration order = the official state-dict order, so exported checkpoints list keys identically.
        self.encoder = EEGTransformer(c.encoder_config())
        self.decoder_freq = EEGTransformer(c.decoder_config())
        self.decoder_raw = EEGTransformer(c.decoder_config())
        self.quantizer = NormEMAQuantizer(
            c.num_codes, c.code_dim, decay=c.ema_decay, beta=c.commitment_weight, kmeans_init=c.kmeans_init,
            kmeans_iters=c.kmeans_iters, usage_ema_in_eval=c.usage_ema_in_eval,
        )
        self.code_proj = FP32CodeProjection(*_mlp_head(c.width, c.code_dim))
        self.freq_head = _mlp_head(c.decoder_width, c.freq_bins)
        self.raw_head = _mlp_head(c.decoder_width, c.patch_size)
        self.domain_classifier = nn.Sequential(
            nn.Linear(c.width, c.domain_hidden), nn.GELU(), nn.Linear(c.domain_hidden, 2)
        )
        for head in (self.code_proj, self.freq_head, self.raw_head, self.domain_classifier):
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        # Frozen GPT-2 token embeddings (text side of the domain loss); set with `set_text_embeddings`.
        self.register_buffer("text_embeddings", torch.randn(c.text_vocab_size, c.width) * 0.02)

    def set_text_embeddings(self, wte: torch.Tensor) -> None:
        """Install GPT-2 token embeddings ``(text_vocab_size, width)`` for the domain loss (docs/reference.md §2.5)."""
        if tuple(wte.shape) != tuple(self.text_embeddings.shape):
            raise ValueError(f"text embeddings must be {tuple(self.text_embeddings.shape)}, got {tuple(wte.shape)}")
        with torch.no_grad():
            self.text_embeddings.copy_(wte)

    def encode(
        self, x: torch.Tensor, input_chans: torch.Tensor, input_time: torch.Tensor, input_mask: torch.Tensor
    ) -> torch.Tensor:
        """Encoder features (B, L, width): bidirectional over all real tokens of a sample (docs/reference.md §2.1)."""
        norm_mask = None
        if self.config.exclude_padding:
            real = input_mask.bool()
            norm_mask = real[:, None, :].expand(-1, real.shape[1], -1)  # (B, L, L) pool real patches only
        return self.encoder(x, input_chans, input_time, key_padding_mask(input_mask), norm_mask)

    def quantize(self, features: torch.Tensor, input_mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Project features to the code space (fp32, autocast off, as officially) and quantize them."""
        z = self.code_proj(features)  # (B, L, code_dim)
        valid = input_mask if (self.config.exclude_padding and input_mask is not None) else None
        return self.quantizer(z, valid)

    @torch.no_grad()
    def codes(
        self, x: torch.Tensor, input_chans: torch.Tensor, input_time: torch.Tensor, input_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) code indices of every token (official ``get_codebook_indices``)."""
        return self.quantize(self.encode(x, input_chans, input_time, input_mask), input_mask).indices

    def decode(
        self, z_q: torch.Tensor, input_chans: torch.Tensor, input_time: torch.Tensor, input_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frequency (B, L, freq_bins) and raw (B, L, patch_size) reconstructions from quantized vectors."""
        mask = key_padding_mask(input_mask)
        rec_freq = self.freq_head(self.decoder_freq(z_q, input_chans, input_time, mask))
        rec_raw = self.raw_head(self.decoder_raw(z_q, input_chans, input_time, mask))
        return rec_freq, rec_raw

    def _reconstruction_loss(self, rec: torch.Tensor, target: torch.Tensor, input_mask: torch.Tensor) -> torch.Tensor:
        rec, target = rec.float(), target.float()  # fp32 losses under bf16, as autocast computes them
        masked = rec * input_mask[..., None]
        if not self.config.exclude_padding:
            return F.mse_loss(masked, target)  # mean over the whole padded tensor (official)
        n = input_mask.sum().clamp(min=1) * rec.shape[-1]
        return (masked - target).pow(2).sum() / n

    def domain_logits_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """Domain-classifier logits (B, n, 2) of frozen text embeddings.

        The embeddings are a buffer, which DeepSpeed's bf16 cast leaves in fp32 (it casts parameters only): they
        are cast to the classifier's dtype here, as the EEG features already are.
        """
        emb = F.embedding(text_tokens, self.text_embeddings).detach()
        return self.domain_classifier(emb.to(self.domain_classifier[0].weight.dtype))

    def forward(
        self,
        x: torch.Tensor,
        freq_target: torch.Tensor,
        raw_target: torch.Tensor,
        input_chans: torch.Tensor,
        input_time: torch.Tensor,
        input_mask: torch.Tensor,
        text_tokens: torch.Tensor | None = None,
        alpha: float = 0.0,
    ) -> TokenizerOutput:
        """One training (or validation) step of the tokenizer (docs/reference.md §2.4).

        ``x`` (B, L, 200) patches; targets (B, L, 100) and (B, L, 200) from :mod:`neurolm.data.layout`;
        ``text_tokens`` (B_t, n) GPT-2 ids for the text side of the domain loss; ``alpha`` the gradient-reversal
        strength (:func:`dann_alpha`).
        """
        input_mask = input_mask.bool()
        features = self.encode(x, input_chans, input_time, input_mask)
        q = self.quantize(features, input_mask)
        z_q = q.z_q.to(features.dtype)  # the quantizer works in fp32; decoders run in the model's dtype
        rec_freq, rec_raw = self.decode(z_q, input_chans, input_time, input_mask)
        losses = {
            "commit": q.loss,
            "rec_freq": self._reconstruction_loss(rec_freq, freq_target, input_mask),
            "rec_raw": self._reconstruction_loss(rec_raw, raw_target, input_mask),
        }
        losses["vq_total"] = losses["commit"] + losses["rec_freq"] + losses["rec_raw"]
        domain_eeg = self.domain_classifier(GradientReversal.apply(features, alpha))  # (B, L, 2)
        eeg_labels = torch.where(input_mask, 0, -1).long()
        losses["domain_eeg"] = F.cross_entropy(domain_eeg.float().reshape(-1, 2), eeg_labels.reshape(-1), ignore_index=-1)
        loss = losses["vq_total"] + losses["domain_eeg"]
        if text_tokens is not None:
            domain_text = self.domain_logits_text(text_tokens)
            text_labels = torch.ones(domain_text.shape[:-1], dtype=torch.long, device=domain_text.device)
            losses["domain_text"] = F.cross_entropy(domain_text.float().reshape(-1, 2), text_labels.reshape(-1))
            loss = loss + losses["domain_text"]
        return TokenizerOutput(
            loss=loss, losses=losses, codes=q.indices, features=features, rec_freq=rec_freq, rec_raw=rec_raw
        )
