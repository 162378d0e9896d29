"""Official NeuroLM checkpoints: import ``VQ.pt`` / ``NeuroLM-{B,L,XL}.pt`` (and instruction checkpoints), export
back to that layout (``docs/checkpoint-layout.md``), and compare with golden vectors.

Files are read with ``torch.load(weights_only=True)``; ``model`` may carry ``_orig_mod.`` (torch.compile, always
present in official files) and/or ``module.`` (DDP) prefixes, ``optimizer``/``iter_num``/``epoch`` are
optional. Sizes are inferred from tensor shapes, except the encoder's head count, which only ``VQ.pt``'s
``encoder_args`` records (an LM file alone assumes 64-wide heads, as in every official model, unless told).
A file that does not fit raises :class:`CheckpointMismatchError` listing missing and unexpected keys and
shape mismatches.

``neurolm import-official`` (:func:`neurolm.models.io.import_official_cli`) converts these files to our
safetensors exports. This module imports only the model classes (not :mod:`neurolm.models.io`), so that
``io`` can build on it without an import cycle.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from neurolm.model_config import deep_merge
from neurolm.models.gpt import GPTConfig
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig, attach_code_head
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.vocab import GPT2_TEXT_VOCAB

__all__ = [
    "CheckpointMismatchError",
    "read_official",
    "strip_prefixes",
    "import_official_vq",
    "import_official_lm",
    "export_official_vq",
    "export_official_lm",
    "to_official_state_dict",
    "from_official_state_dict",
]

_EEG_INNER = (("patch_embed.l.0.", "patch_embed.proj."), ("pos_embed.", "channel_embed."), ("fc_norm.", "norm."))
# (official prefix, our prefix, renames inside an EEG transformer?)
_VQ_RULES = (
    ("VQ.encoder.", "encoder.", True),
    ("VQ.decoder_freq.", "decoder_freq.", True),
    ("VQ.decoder_raw.", "decoder_raw.", True),
    ("VQ.quantize.cluster_size", "quantizer.usage", False),
    ("VQ.quantize.embedding.weight", "quantizer.codebook", False),
    ("VQ.quantize.embedding.cluster_size", "quantizer.kmeans_counts", False),
    ("VQ.quantize.embedding.embed_avg", "quantizer.embed_avg", False),
    ("VQ.quantize.embedding.initted", "quantizer.initialized", False),
    ("VQ.encode_task_layer.", "code_proj.", False),
    ("VQ.decode_task_layer_freq.", "freq_head.", False),
    ("VQ.decode_task_layer_raw.", "raw_head.", False),
    ("domain_classifier.", "domain_classifier.", False),
    ("wte.weight", "text_embeddings", False),
)
_LM_RULES = (
    ("GPT2.transformer.wte.", "gpt.wte.", False),
    ("GPT2.transformer.wpe.", "gpt.wpe.", False),
    ("GPT2.transformer.h.", "gpt.blocks.", False),
    ("GPT2.transformer.ln_f.", "gpt.ln_f.", False),
    ("GPT2.lm_head.", "gpt.lm_head.", False),
    ("tokenizer.", "encoder.", True),
    ("pos_embed.", "channel_embed.", False),
    ("encode_transform_layer.", "feature_proj.", False),
)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing keys, unexpected keys and shape mismatches."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes
        parts = [f"checkpoint {source} does not match the model"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes}")
        super().__init__("\n  ".join(parts))


# ---------------------------------------------------------------------------------------------- key mapping


def _rename(key: str, rules: Iterable[tuple[str, str, bool]], reverse: bool) -> str | None:
    for official, ours, inner in rules:
        src, dst = (ours, official) if reverse else (official, ours)
        if key == src or (src.endswith(".") and key.startswith(src)):
            rest = key[len(src):]
            if inner:
                for a, b in _EEG_INNER:
                    s, d = (b, a) if reverse else (a, b)
                    if rest.startswith(s):
                        rest = d + rest[len(s):]
                        break
            return dst + rest
    return None


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Remove leading ``_orig_mod.`` / ``module.`` prefixes (any order, repeated) from every key."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state.items():
        while True:
            for prefix in ("_orig_mod.", "module."):
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    break
            else:
                break
        out[k] = v
    return out


def read_official(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a clear error for non-checkpoints."""
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and the reason
        raise ValueError(f"cannot read {os.fspath(path)} as a weights-only torch checkpoint: {err}") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{os.fspath(path)} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _model_state(ckpt: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    state = ckpt.get("model", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("the checkpoint has no 'model' state dict of tensors")
    return strip_prefixes(state)


def from_official_state_dict(
    model: nn.Module, official: Mapping[str, torch.Tensor], kind: str, source: str = "<state dict>"
) -> None:
    """Load an official-layout state dict (prefixes stripped) into our ``model`` (``kind`` "vq" or "lm"),
    strictly: every model tensor must be present with its shape, and every official key must be used."""
    rules = _VQ_RULES if kind == "vq" else _LM_RULES
    own = model.state_dict()
    skip = {k for k in own if k.startswith("code_head.")}
    used, missing, shapes = set(), [], []
    for ours, target in own.items():
        if ours in skip:
            continue
        name = _rename(ours, rules, reverse=True)
        if name is None or name not in official:
            missing.append(name or ours)
            continue
        used.add(name)
        if tuple(official[name].shape) != tuple(target.shape):
            shapes.append(f"{name}: checkpoint {tuple(official[name].shape)} vs model {tuple(target.shape)}")
    unexpected = [k for k in official if k not in used]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(source, missing, unexpected, shapes)
    with torch.no_grad():
        for ours, target in own.items():
            if ours not in skip:
                target.copy_(official[_rename(ours, rules, reverse=True)])


def to_official_state_dict(model: nn.Module, kind: str, prefix: str = "_orig_mod.") -> OrderedDict[str, torch.Tensor]:
    """Our weights under official key names (``kind`` "vq" or "lm"), in official order, with ``prefix``."""
    rules = _VQ_RULES if kind == "vq" else _LM_RULES
    patch_norm = model.encoder.config.patch_norm  # the tokenizer's and NeuroLM's encoder
    if patch_norm != "sample":
        raise ValueError(
            f"patch_norm={patch_norm!r} has no official equivalent: the official encoder "
            "normalises each sample by its own statistics, so its features would differ from this model's"
        )
    named = []
    for k, v in model.state_dict().items():
        if k.startswith("code_head."):
            continue
        name = _rename(k, rules, reverse=True)
        if name is None:
            raise KeyError(f"no official name for {k}")
        rank = next(i for i, (official, _, _) in enumerate(rules) if name.startswith(official))
        named.append((rank, prefix + name, v.detach().cpu().clone()))
    named.sort(key=lambda item: item[0])  # stable: the rules list the official module order
    return OrderedDict((name, v) for _, name, v in named)


# ---------------------------------------------------------------------------------------------- size inference


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def _heads(args: Mapping[str, Any] | None, width: int, what: str, given: int | None = None) -> int:
    if given:
        return int(given)
    if args and "n_head" in args:
        return int(args["n_head"])
    if width % 64 == 0:
        return width // 64  # every official model uses 64-wide heads
    raise ValueError(f"cannot infer the head count of the {what} (width {width}); pass it explicitly")


def tokenizer_config_from_official(ckpt: Mapping[str, Any], **overrides: Any) -> TokenizerConfig:
    """Tokenizer sizes of an official ``VQ.pt`` dict, from tensor shapes and ``encoder_args``/``decoder_args``."""
    sd = _model_state(ckpt)
    for key in ("VQ.quantize.embedding.weight", "VQ.encoder.pos_embed.weight", "VQ.decoder_raw.pos_embed.weight"):
        if key not in sd:
            raise ValueError(f"not an official VQ checkpoint: key {key!r} is missing")
    num_codes, code_dim = sd["VQ.quantize.embedding.weight"].shape
    width = sd["VQ.encoder.pos_embed.weight"].shape[1]
    dec_width = sd["VQ.decoder_raw.pos_embed.weight"].shape[1]
    cfg = dict(
        encoder_layers=_count_blocks(sd, "VQ.encoder.blocks."),
        encoder_heads=_heads(ckpt.get("encoder_args"), width, "encoder", overrides.get("encoder_heads")),
        width=width,
        decoder_layers=_count_blocks(sd, "VQ.decoder_raw.blocks."),
        decoder_heads=_heads(ckpt.get("decoder_args"), dec_width, "decoders", overrides.get("decoder_heads")),
        decoder_width=dec_width,
        num_codes=num_codes,
        code_dim=code_dim,
        patch_size=sd["VQ.decode_task_layer_raw.2.weight"].shape[0],
        freq_bins=sd["VQ.decode_task_layer_freq.2.weight"].shape[0],
        conv_channels=sd["VQ.encoder.patch_embed.conv1.weight"].shape[0],
        domain_hidden=sd["domain_classifier.0.weight"].shape[0],
        text_vocab_size=sd["wte.weight"].shape[0] if "wte.weight" in sd else GPT2_TEXT_VOCAB,
        channel_rows=sd["VQ.encoder.pos_embed.weight"].shape[0],
        max_seconds=sd["VQ.encoder.time_embed.weight"].shape[0],
    )
    return TokenizerConfig.from_dict({**cfg, **overrides})


def neurolm_config_from_official(
    ckpt: Mapping[str, Any], encoder_heads: int | None = None, **overrides: Any
) -> NeuroLMConfig:
    """NeuroLM sizes of an official LM dict: ``model_args`` plus shapes (codes = head rows − vocab_size)."""
    sd = _model_state(ckpt)
    for key in ("GPT2.lm_head.weight", "GPT2.transformer.wte.weight", "tokenizer.pos_embed.weight"):
        if key not in sd:
            raise ValueError(f"not an official NeuroLM checkpoint: key {key!r} is missing")
    args = dict(ckpt.get("model_args") or {})
    vocab, d = sd["GPT2.transformer.wte.weight"].shape
    enc_width = sd["tokenizer.pos_embed.weight"].shape[1]
    gpt = GPTConfig(
        n_layer=_count_blocks(sd, "GPT2.transformer.h."),
        n_head=_heads(args, d, "GPT"),
        n_embd=d,
        block_size=sd["GPT2.transformer.wpe.weight"].shape[0],
        vocab_size=vocab,
        num_codes=sd["GPT2.lm_head.weight"].shape[0] - vocab,
        bias="GPT2.transformer.ln_f.bias" in sd,
    )
    encoder = dict(
        n_layer=_count_blocks(sd, "tokenizer.blocks."),
        n_head=_heads(None, enc_width, "encoder", encoder_heads),
        n_embd=enc_width,
        conv_channels=sd["tokenizer.patch_embed.conv1.weight"].shape[0],
        channel_rows=sd["tokenizer.pos_embed.weight"].shape[0],
        time_rows=sd["tokenizer.time_embed.weight"].shape[0],
    )
    cfg = dict(gpt=gpt.to_dict(), encoder=encoder, channel_rows=sd["pos_embed.weight"].shape[0])
    return NeuroLMConfig.from_dict(deep_merge(cfg, overrides))


# ---------------------------------------------------------------------------------------------- import / export


def import_official_vq(path_or_ckpt: str | os.PathLike[str] | Mapping[str, Any], **overrides: Any) -> NeuralTokenizer:
    """Build a :class:`NeuralTokenizer` from an official ``VQ.pt`` (path or loaded dict)."""
    ckpt, source = _load(path_or_ckpt)
    tok = NeuralTokenizer(tokenizer_config_from_official(ckpt, **overrides))
    sd = _model_state(ckpt)
    if "wte.weight" not in sd:  # third-party re-saves drop the text table; keep ours
        sd["wte.weight"] = tok.text_embeddings.detach().clone()
    from_official_state_dict(tok, sd, "vq", source)
    if float(tok.quantizer.initialized.item()) != 1.0:
        raise ValueError(f"{source}: codebook not initialised (initted = 0); not a trained tokenizer")
    return tok


def import_official_lm(
    path_or_ckpt: str | os.PathLike[str] | Mapping[str, Any],
    vq: str | os.PathLike[str] | Mapping[str, Any] | NeuralTokenizer | None = None,
    encoder_heads: int | None = None,
    **overrides: Any,
) -> NeuroLM:
    """Build :class:`NeuroLM` from an official ``NeuroLM-*.pt`` or instruction checkpoint.

    With ``vq`` (its ``VQ.pt`` or an imported tokenizer) the model also gets the code head for pre-training
    targets, and the encoder head count is taken from it.
    """
    ckpt, source = _load(path_or_ckpt)
    tok = None if vq is None else (vq if isinstance(vq, NeuralTokenizer) else import_official_vq(vq))
    if tok is not None:
        encoder_heads = encoder_heads or tok.config.encoder_heads
        overrides = {"code_head": True, "code_dim": tok.config.code_dim, **overrides}
    model = NeuroLM(neurolm_config_from_official(ckpt, encoder_heads=encoder_heads, **overrides))
    from_official_state_dict(model, _model_state(ckpt), "lm", source)
    if tok is not None:
        attach_code_head(model, tok)
    return model


def _load(path_or_ckpt: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(path_or_ckpt, Mapping):
        return path_or_ckpt, "<checkpoint dict>"
    return read_official(path_or_ckpt), os.fspath(path_or_ckpt)


def _optimizer_groups(names: list[str], shapes: list[torch.Size], lr: float, betas: tuple[float, float],
                      weight_decay: float) -> dict[str, Any]:
    """An empty AdamW state dict whose two param groups follow the official ``configure_optimizers``."""
    decay = [i for i, s in enumerate(shapes) if len(s) >= 2]
    nodecay = [i for i, s in enumerate(shapes) if len(s) < 2]
    order = decay + nodecay
    index = {old: new for new, old in enumerate(order)}
    common = dict(lr=lr, betas=betas, eps=1e-8, amsgrad=False, maximize=False, foreach=None, capturable=False,
                  differentiable=False, fused=None, decoupled_weight_decay=True)
    return {"state": {}, "param_groups": [
        {**common, "weight_decay": weight_decay, "params": [index[i] for i in decay]},
        {**common, "weight_decay": 0.0, "params": [index[i] for i in nodecay]},
    ]}


def export_official_vq(tok: NeuralTokenizer, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Our tokenizer as an official ``VQ.pt`` dict (written to ``path`` if given)."""
    c = tok.config
    model = to_official_state_dict(tok, "vq")
    trainable = [(n, p.shape) for n, p in tok.named_parameters() if p.requires_grad]
    ckpt = {
        "model": model,
        "optimizer": _optimizer_groups([n for n, _ in trainable], [s for _, s in trainable], 5e-5, (0.9, 0.999), 1e-4),
        "encoder_args": dict(n_layer=c.encoder_layers, n_head=c.encoder_heads, n_embd=c.width, block_size=1024,
                             bias=False, dropout=c.dropout, num_classes=0, in_chans=1, out_chans=c.conv_channels),
        "decoder_args": dict(n_layer=c.decoder_layers, n_head=c.decoder_heads, n_embd=c.decoder_width,
                             block_size=1024, bias=False, dropout=c.dropout, num_classes=0, in_chans=c.code_dim),
        "iter_num": 0,
        "epoch": 0,
    }
    if path is not None:
        torch.save(ckpt, os.fspath(path))
    return ckpt


def export_official_lm(model: NeuroLM, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Our NeuroLM as an official ``NeuroLM-*.pt`` dict (the code head is not part of that layout)."""
    g = model.config.gpt
    trainable = [(n, p.shape) for n, p in model.named_parameters()
                 if p.requires_grad and not n.startswith("code_head.")]
    ckpt = {
        "model": to_official_state_dict(model, "lm"),
        "optimizer": _optimizer_groups([n for n, _ in trainable], [s for _, s in trainable], 6e-4, (0.9, 0.95), 0.1),
        "model_args": dict(n_layer=g.n_layer, n_head=g.n_head, n_embd=g.n_embd, block_size=g.block_size,
                           bias=g.bias, vocab_size=g.vocab_size, dropout=g.dropout),
        "iter_num": 0,
        "epoch": 0,
    }
    if path is not None:
        torch.save(ckpt, os.fspath(path))
    return ckpt
