"""NeuroLM: GPT-2 reading EEG features and text (stages 2 and 3; docs/reference.md §3, §4; official ``model_neurolm.NeuroLM``).

EEG path (docs/reference.md §3.1): frozen tokenizer encoder → continuous features (B, L, E) → ``feature_proj``
(Identity when E = d, else Linear + GELU) → ``+ channel_embed[input_chans]`` → ``+ wpe[input_time]`` (every
channel of second t shares position t). Text path: ``wte[token] + wpe[pos]``; after EEG, text positions start
after the last second (batch-wide in the official code, docs/reference.md §6.3-5). Attention: the stair mask
(:func:`~neurolm.models.masks.stair_mask`) built on the device from ``input_time``/``input_mask``.

Objectives:
- pre-training (docs/reference.md §3.2): the token at (second t, channel c) predicts the code of (t+1, c). With
  ``code_head`` the codes come from the *same* encoder pass that produced the inputs (the official code runs
  the frozen encoder twice, once inside a separate VQ); targets are identical.
- text LM: plain causal next-token loss, positions 0..n-1.
- instruction tuning (docs/reference.md §4.1): ``[EEG][SEP] Question: … Answer: <answer> <|endoftext|>``, loss on the
  answer tokens (targets prepared by :mod:`neurolm.data.layout`).

Fixes (config fields, official behaviour by default): ``causal_encoder_inputs`` (§6.3-4),
``per_sample_text_positions`` (§6.3-5), ``scaled_new_embedding_init`` (§6.3-8). The output head runs only on
positions that carry a loss unless logits are requested (§6.3-14; exact, so always on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from neurolm.model_config import NeuroLMConfig
from neurolm.models.eeg_transformer import EEGTransformer, TemporalConv
from neurolm.models.gpt import GPT
from neurolm.models.masks import key_padding_mask, stair_mask, time_causal_mask
from neurolm.models.quantizer import FP32CodeProjection, l2norm, nearest_code_indices
from neurolm.models.tokenizer import NeuralTokenizer
from neurolm.vocab import GPT2_TEXT_VOCAB

__all__ = ["NeuroLMConfig", "NeuroLMOutput", "CodeHead", "NeuroLM", "next_code_targets", "tokens_per_second",
           "attach_code_head", "real_length"]

@dataclass
class NeuroLMOutput:
    """Result of :meth:`NeuroLM.forward`."""

    loss: torch.Tensor | None
    """Mean cross-entropy over supervised positions (None without targets)."""
    accuracy: torch.Tensor | None = None
    """Argmax over all outputs == target, over supervised positions."""
    num_targets: torch.Tensor | None = None
    """Number of supervised positions."""
    logits: torch.Tensor | None = None
    """(B, S, 50304 + K) when ``return_logits``."""
    targets: torch.Tensor | None = None
    """(B, S) output-column targets used (-1 = ignored); EEG codes already offset by 50304."""


class CodeHead(nn.Module):
    """The tokenizer's code projection and codebook, for pre-training targets (no EMA updates here)."""

    def __init__(self, width: int, code_dim: int, num_codes: int) -> None:
        super().__init__()
        self.code_proj = FP32CodeProjection(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, code_dim))
        self.register_buffer("codebook", torch.zeros(num_codes, code_dim))

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, L, E) encoder features → (B, L) nearest-code indices (fp32, as the official VQ)."""
        return nearest_code_indices(l2norm(self.code_proj(features)), self.codebook)


def next_code_targets(
    codes: torch.Tensor, num_chans: torch.Tensor, num_tokens: torch.Tensor, ignore_index: int = -1
) -> torch.Tensor:
    """Multi-channel autoregressive targets (docs/reference.md §3.2): token (t, c) predicts the code of (t+1, c).

    In the time-major layout that is ``target[b, j] = codes[b, j + C_b]`` for ``j < n_b - C_b``, else
    ``ignore_index`` (last second and padding). ``codes`` (B, L) come from the model's code head, so this lives
    with the model; ``num_chans``/``num_tokens`` (B,).
    """
    B, L = codes.shape
    src = torch.arange(L, device=codes.device)[None, :] + num_chans.to(codes.device)[:, None]  # (B, L)
    valid = src < num_tokens.to(codes.device)[:, None]
    gathered = codes.gather(1, src.clamp(max=L - 1))  # (B, L)
    return torch.where(valid, gathered, torch.full_like(gathered, ignore_index)).long()


@torch.no_grad()
def attach_code_head(model: NeuroLM, tokenizer: NeuralTokenizer, copy_encoder: bool = False) -> NeuroLM:
    """Give ``model`` the tokenizer's code projection and codebook (pre-training targets); with
    ``copy_encoder`` also its encoder weights (the frozen input encoder)."""
    if model.code_head is None:
        raise ValueError("build the NeuroLM with code_head=True to attach a code head")
    model.code_head.code_proj.load_state_dict(tokenizer.code_proj.state_dict())
    model.code_head.codebook.copy_(tokenizer.quantizer.codebook)
    if copy_encoder:
        model.encoder.load_state_dict(tokenizer.encoder.state_dict())
    return model


def real_length(input_mask: torch.Tensor) -> int:
    """Length of the layout without the padding every sample has at its end: 1 + the last column holding a
    real token of some sample (at least 1)."""
    real_columns = input_mask.bool().any(dim=0).nonzero()
    return int(real_columns[-1]) + 1 if real_columns.numel() else 1


def tokens_per_second(input_time: torch.Tensor, input_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels C, real tokens n) per sample from the indices: C = real tokens at second 0."""
    real = input_mask.bool()
    return ((input_time == 0) & real).sum(dim=1), real.sum(dim=1)


class NeuroLM(nn.Module):
    """GPT-2 over EEG features and text, with the frozen tokenizer encoder inside."""

    def __init__(self, config: NeuroLMConfig) -> None:
        super().__init__()
        self.config = config
        d, e = config.gpt.n_embd, config.encoder.n_embd
        self.gpt = GPT(config.gpt, scaled_new_rows=config.scaled_new_embedding_init)
        self.gpt.activation_checkpointing = config.activation_checkpointing
        self.encoder = EEGTransformer(config.encoder)
        self.encoder.requires_grad_(False)
        if isinstance(self.encoder.patch_embed, TemporalConv):
            self.encoder.patch_embed.track_stats = False  # patch_norm=dataset: the tokenizer's statistics, fixed
        self.channel_embed = nn.Embedding(config.channel_rows, d)
        std = config.channel_embed_init_std or (0.02 if config.scaled_new_embedding_init else 1.0)
        nn.init.normal_(self.channel_embed.weight, std=std)
        if e != d:
            self.feature_proj: nn.Module = nn.Sequential(nn.Linear(e, d), nn.GELU())
            nn.init.trunc_normal_(self.feature_proj[0].weight, std=0.02)
            nn.init.zeros_(self.feature_proj[0].bias)
        else:
            self.feature_proj = nn.Identity()
        self.code_head = CodeHead(e, config.code_dim, config.num_codes) if config.code_head else None
        if self.code_head is not None:
            self.code_head.requires_grad_(False)

    # ------------------------------------------------------------------ building blocks

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Toggle recomputation of GPT block activations in the backward pass."""
        self.config.activation_checkpointing = enabled
        self.gpt.activation_checkpointing = enabled

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameters as the official ``get_num_params`` counts them (frozen encoder included; ``wpe``
        excluded with ``non_embedding``; docs/reference.md §3.1)."""
        n = sum(p.numel() for name, p in self.named_parameters() if not name.startswith("code_head."))
        return n - self.gpt.wpe.weight.numel() if non_embedding else n

    def encode_eeg(
        self,
        x_eeg: torch.Tensor,
        input_chans: torch.Tensor,
        input_time: torch.Tensor,
        input_mask: torch.Tensor,
        causal: bool | None = None,
        keep: int | None = None,
    ) -> torch.Tensor:
        """Frozen-encoder features (B, L, E), or (B, keep, E) for the first ``keep`` tokens when the rest is
        padding of every sample (:func:`real_length`). ``causal`` (default: the config's
        ``causal_encoder_inputs``) uses the time-causal mask instead of the official bidirectional one."""
        causal = self.config.causal_encoder_inputs if causal is None else causal
        norm_mask = None
        if causal:
            mask = time_causal_mask(input_time, input_mask)
            norm_mask = mask[:, 0]  # (B, L, L): GroupNorm statistics from the same and earlier seconds only
        else:
            mask = key_padding_mask(input_mask)
            if self.config.patch_norm_over_real_tokens:
                norm_mask = mask[:, 0].expand(-1, input_mask.shape[1], -1)
        # Frozen (official): no graph. An encoder made trainable (requires_grad on its weights) gets gradients.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trainable()):
            return self.encoder(x_eeg, input_chans, input_time, mask, norm_mask, keep=keep)

    def encoder_trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def eeg_embeddings(
        self, features: torch.Tensor, input_chans: torch.Tensor, input_time: torch.Tensor
    ) -> torch.Tensor:
        """GPT input of the EEG part (B, L, d) = feature_proj(features) + channel_embed + wpe[time]."""
        x = self.feature_proj(features) + self.channel_embed(input_chans)
        return x + self.gpt.wpe(input_time)

    def text_start(self, input_time: torch.Tensor, input_mask: torch.Tensor) -> torch.Tensor:
        """(B,) position of the first text token after the EEG part (docs/reference.md §6.3-5)."""
        B = input_time.shape[0]
        if self.config.per_sample_text_positions:
            last = torch.where(input_mask.bool(), input_time.long(), torch.zeros_like(input_time.long()))
            return last.amax(dim=1) + 1
        return (input_time.long().max() + 1).expand(B)

    def text_embeddings(self, tokens: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
        """``wte[tokens] + wpe[start + j]`` for tokens (B, n); ``start`` an int or (B,) tensor."""
        B, n = tokens.shape
        pos = torch.arange(n, device=tokens.device)
        pos = pos[None, :] + (start[:, None] if isinstance(start, torch.Tensor) else start)  # (B, n)
        return self.gpt.wte(tokens) + self.gpt.wpe(pos)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over text (50304) and EEG codes (K) for hidden states (..., d)."""
        return self.gpt.lm_head(hidden)

    def text_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over GPT-2's text vocabulary only (..., 50257): the first rows of the head, the columns
        decoding reads, without computing the 8 k+ others."""
        return F.linear(hidden, self.gpt.lm_head.weight[:GPT2_TEXT_VOCAB])

    def pretraining_targets(
        self, features: torch.Tensor, input_time: torch.Tensor, input_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) next-code targets (code index, -1 ignored) from bidirectional encoder features (docs/reference.md §3.2)."""
        if self.code_head is None:
            raise RuntimeError("pre-training targets need the tokenizer's code head: build with code_head=True "
                               "and load it (neurolm.models.io.attach_tokenizer)")
        codes = self.code_head(features)
        num_chans, num_tokens = tokens_per_second(input_time, input_mask)
        return next_code_targets(codes, num_chans, num_tokens)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x_eeg: torch.Tensor | None = None,
        input_chans: torch.Tensor | None = None,
        input_time: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_targets: torch.Tensor | None = None,
        eeg_targets: torch.Tensor | str | None = None,
        return_logits: bool = False,
    ) -> NeuroLMOutput:
        """One NeuroLM step.

        - EEG only, ``eeg_targets="next_code"`` (or a (B, L) tensor of code indices, -1 ignored): multi-channel
          autoregressive pre-training (docs/reference.md §3.2).
        - text only (``text`` (B, n), ``text_targets`` (B, n)): text LM loss, causal, positions 0..n-1.
        - EEG + text: instruction tuning (docs/reference.md §4.1); loss on ``text_targets`` (answer tokens; -1 elsewhere).

        EEG tensors: ``x_eeg`` (B, L, 200), ``input_chans``/``input_time`` (B, L) ints, ``input_mask`` (B, L)
        bool. Without targets the loss is None (use ``return_logits``).
        """
        if x_eeg is None:
            if text is None:
                raise ValueError("NeuroLM.forward needs EEG, text, or both")
            hidden = self.gpt(self.text_embeddings(text), is_causal=True)
            return self._output(hidden, text_targets, return_logits)
        assert input_chans is not None and input_time is not None and input_mask is not None
        input_mask = input_mask.bool()
        L = input_mask.shape[1]
        # Without per-position logits only supervised positions matter: the padded EEG tail (keys every token
        # is masked from) and the text after the last supervised token (only later positions see it) are not
        # computed (docs/architecture.md, "Token layout": padding is the tail of each sample).
        keep = None if return_logits else real_length(input_mask)
        if keep is not None and isinstance(eeg_targets, torch.Tensor) and bool((eeg_targets[:, keep:] >= 0).any()):
            keep = None
        start = self.text_start(input_time, input_mask) if text is not None else None  # from the full layout
        features = self.encode_eeg(x_eeg, input_chans, input_time, input_mask, keep=keep)
        keep = features.shape[1]
        if isinstance(eeg_targets, str):
            if eeg_targets != "next_code":
                raise ValueError(f"eeg_targets must be a tensor, 'next_code' or None, got {eeg_targets!r}")
            target_features = (
                self.encode_eeg(x_eeg, input_chans, input_time, input_mask, causal=False, keep=keep)
                if self.config.causal_encoder_inputs else features
            )
            eeg_targets = self.pretraining_targets(target_features, input_time[:, :keep], input_mask[:, :keep])
            eeg_targets = F.pad(eeg_targets, (0, L - keep), value=-1)  # (B, L): the padded tail predicts nothing
        chans, times, real = input_chans[:, :keep], input_time[:, :keep], input_mask[:, :keep]
        x = self.eeg_embeddings(features, chans, times)  # (B, keep, d)
        eeg_cols = None
        if eeg_targets is not None:
            eeg_cols = torch.where(eeg_targets >= 0, eeg_targets + self.config.gpt.vocab_size, -1)
        if text is None:
            hidden = self.gpt(x, stair_mask(times, real))
            out = self._output(hidden, None if eeg_cols is None else eeg_cols[:, :keep], return_logits)
            out.targets = eeg_cols if eeg_cols is None else eeg_cols.long()
            return out
        targets = None
        if text_targets is not None or eeg_cols is not None:
            if eeg_cols is None:
                eeg_cols = torch.full(input_time.shape, -1, dtype=torch.long, device=x.device)
            if text_targets is None:
                text_targets = torch.full(text.shape, -1, dtype=torch.long, device=x.device)
            targets = torch.cat((eeg_cols, text_targets.long()), dim=1)  # (B, L + n)
        n = text.shape[1]
        if not return_logits and text_targets is not None:
            supervised = (text_targets != -1).any(dim=0).nonzero()
            n = max(int(supervised[-1]) + 1, 1) if supervised.numel() else 1
        assert start is not None
        x = torch.cat((x, self.text_embeddings(text[:, :n], start)), dim=1)  # (B, keep + n, d)
        hidden = self.gpt(x, stair_mask(times, real, text_len=n))
        kept = None if targets is None else torch.cat((targets[:, :keep], targets[:, L : L + n]), dim=1)
        out = self._output(hidden, kept, return_logits)
        out.targets = targets
        return out

    def _output(self, hidden: torch.Tensor, targets: torch.Tensor | None, return_logits: bool) -> NeuroLMOutput:
        logits = self.head(hidden) if return_logits else None
        if targets is None:
            return NeuroLMOutput(loss=None, logits=logits)
        targets = targets.long()
        supervised = targets != -1
        picked = logits[supervised] if logits is not None else self.head(hidden[supervised])  # (N, V)
        wanted = targets[supervised]
        n = supervised.sum()
        denom = n.clamp(min=1)
        # In fp32 whatever the model's dtype, as autocast computes it (a no-op in fp32): a bf16 loss keeps 3 digits.
        loss = F.cross_entropy(picked.float(), wanted, reduction="sum") / denom
        with torch.no_grad():
            # max(dim).indices is argmax, first maximum and NaN alike, but not 4x slower on bf16 CPU tensors
            # (docs/platform.md §13: 0.21 s against 0.05 s over a (1978, 58,496) logits block).
            accuracy = (picked.max(dim=-1).indices == wanted).sum() / denom
        return NeuroLMOutput(loss=loss, accuracy=accuracy, num_targets=n, logits=logits, targets=targets)
