"""Our own weight format: ``model.safetensors`` + ``config.json`` in a directory (local or ``s3://``).

Loadable without DeepSpeed, Ray or the official code::

    save_pretrained(model, "out/neurolm")          # NeuroLM or NeuralTokenizer
    model = load_pretrained("out/neurolm")         # the same class, same config, same weights

:func:`load_tokenizer` / :func:`load_neurolm` also accept official ``.pt`` files, and
:func:`neurolm_from_tokenizer` builds the stage-2 model around a trained tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from neurolm import storage
from neurolm.config import ConfigError
from neurolm.model_config import deep_merge
from neurolm.models.gpt import load_hf_gpt2
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig, attach_code_head
from neurolm.models.official import CheckpointMismatchError, import_official_lm, import_official_vq
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig

__all__ = [
    "FORMAT_VERSION",
    "save_pretrained",
    "load_pretrained",
    "load_tokenizer",
    "load_neurolm",
    "attach_code_head",
    "neurolm_from_tokenizer",
    "import_official_cli",
]

FORMAT_VERSION = 1
_KINDS = {"tokenizer": (NeuralTokenizer, TokenizerConfig), "neurolm": (NeuroLM, NeuroLMConfig)}


def _kind(model: nn.Module) -> str:
    for kind, (cls, _) in _KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"save_pretrained supports NeuralTokenizer and NeuroLM, not {type(model).__name__}")


def save_pretrained(model: nn.Module, directory: str, extra: dict[str, Any] | None = None) -> str:
    """Write ``directory/model.safetensors`` (float tensors as stored) and ``directory/config.json``
    (``kind``, ``format_version``, ``config`` and ``extra``); returns ``directory``."""
    kind = _kind(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "config": model.config.to_dict(), "extra": extra or {}}
    if not storage.is_s3(directory):
        os.makedirs(directory, exist_ok=True)
    storage.write_bytes(storage.join(directory, "model.safetensors"), save_safetensors(state, {"kind": kind}))
    storage.write_text(storage.join(directory, "config.json"), json.dumps(meta, indent=1))
    return directory


def load_pretrained(directory: str, map_location: str | torch.device = "cpu", **config_overrides: Any) -> nn.Module:
    """Rebuild the model saved by :func:`save_pretrained` (strict: every tensor must match)."""
    meta = json.loads(storage.read_text(storage.join(directory, "config.json")))
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{directory}/config.json: unknown kind {kind!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{directory} was written by a newer neurolm (format {meta['format_version']})")
    cls, cfg_cls = _KINDS[kind]
    # Nested overrides (e.g. {"gpt": {"dropout": 0.1}}) change those keys only, not the whole section.
    model = cls(cfg_cls.from_dict(deep_merge(meta["config"], config_overrides)))
    state = load_safetensors(storage.read_bytes(storage.join(directory, "model.safetensors")))
    result = model.load_state_dict(state, strict=False)
    shapes = [k for k, v in state.items() if k in model.state_dict() and model.state_dict()[k].shape != v.shape]
    if result.missing_keys or result.unexpected_keys or shapes:
        raise CheckpointMismatchError(directory, list(result.missing_keys), list(result.unexpected_keys), shapes)
    return model.to(map_location)


def check_export(key: str, path: str | None, kind: str) -> None:
    """Before any resource is requested: ``path`` is an export of ``kind`` (``tokenizer`` or ``neurolm``) whose
    ``config.json`` builds the model config and beside which ``model.safetensors`` exists, or an official ``.pt``
    file that exists. Raises :class:`~neurolm.config.ConfigError` naming ``key`` and ``path``."""
    if not path:
        raise ConfigError(f"{key} = {path!r}: give the {kind} export directory (or an official .pt file)")
    try:
        if path.endswith(".pt"):
            if not storage.exists(path):
                raise ConfigError(f"{key} = {path!r}: no such file")
            return
        config_uri = storage.join(path, "config.json")
        if not storage.exists(config_uri):
            what = "directory" if not storage.exists(path) else "export: config.json is missing"
            raise ConfigError(f"{key} = {path!r}: no such {what}")
        try:
            meta = json.loads(storage.read_text(config_uri))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{key} = {path!r}: config.json is not JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("kind") != kind:
            found = meta.get("kind") if isinstance(meta, dict) else None
            raise ConfigError(f"{key} = {path!r}: holds a {found!r} export, expected a {kind!r} export")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ConfigError(f"{key} = {path!r}: written by a newer neurolm (format {meta['format_version']})")
        try:
            _KINDS[kind][1].from_dict(meta.get("config", {}))
        except (TypeError, ValueError, KeyError) as err:
            raise ConfigError(f"{key} = {path!r}: config.json does not describe a {kind} model ({err})") from None
        if not storage.exists(storage.join(path, "model.safetensors")):
            raise ConfigError(f"{key} = {path!r}: model.safetensors is missing")
    except storage.StorageError as err:
        raise ConfigError(f"{key} = {path!r}: {err}") from None


def load_tokenizer(path: str) -> NeuralTokenizer:
    """A tokenizer from our export directory or an official ``VQ.pt``."""
    if path.endswith(".pt"):
        return import_official_vq(path)
    model = load_pretrained(path)
    if not isinstance(model, NeuralTokenizer):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a tokenizer")
    return model


def load_neurolm(path: str, tokenizer: str | NeuralTokenizer | None = None, **config_overrides: Any) -> NeuroLM:
    """A NeuroLM from our export directory or an official ``NeuroLM-*.pt`` (``tokenizer`` adds the code head)."""
    if path.endswith(".pt"):
        vq = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        return import_official_lm(path, vq=vq, **config_overrides)
    model = load_pretrained(path, **config_overrides)
    if not isinstance(model, NeuroLM):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a NeuroLM")
    return model


def neurolm_from_tokenizer(
    config: NeuroLMConfig, tokenizer: NeuralTokenizer, gpt2: str | None = None
) -> NeuroLM:
    """The stage-2 model: ``config`` with the tokenizer's encoder sizes, its encoder weights (frozen) and
    code head, and GPT-2 weights from a Hugging Face directory ``gpt2`` (None = init from config)."""
    tc = tokenizer.config
    cfg = NeuroLMConfig.from_dict(deep_merge(config.to_dict(), {
        "encoder": tokenizer.encoder.config.to_dict(), "code_head": True, "code_dim": tc.code_dim,
        "gpt": {"num_codes": tc.num_codes},
    }))
    model = NeuroLM(cfg)
    attach_code_head(model, tokenizer, copy_encoder=True)
    if gpt2 is not None:
        load_hf_gpt2(model, gpt2)
    return model


# ---------------------------------------------------------------------------------------------- CLI


def import_official_cli(argv: list[str] | None = None) -> int:
    """``neurolm import-official --vq VQ.pt [--lm NeuroLM-B.pt] --output DIR``: official checkpoints → our
    safetensors exports (``DIR/tokenizer`` and ``DIR/neurolm``)."""
    parser = argparse.ArgumentParser(prog="neurolm import-official", description=import_official_cli.__doc__)
    parser.add_argument("--vq", required=True, help="official tokenizer checkpoint (VQ.pt)")
    parser.add_argument("--lm", default=None, help="official NeuroLM-B/L/XL.pt or instruction checkpoint")
    parser.add_argument("--output", required=True, help="output directory (local path)")
    parser.add_argument("--encoder-heads", type=int, default=None, help="override the encoder head count")
    args = parser.parse_args(argv)
    try:
        tok = import_official_vq(args.vq)
        written = {"tokenizer": save_pretrained(tok, os.path.join(args.output, "tokenizer"))}
        if args.lm:
            model = import_official_lm(args.lm, vq=tok, encoder_heads=args.encoder_heads)
            written["neurolm"] = save_pretrained(model, os.path.join(args.output, "neurolm"))
    except (ValueError, OSError) as err:
        print(f"neurolm import-official: {err}", file=sys.stderr)
        return 2
    json.dump(written, sys.stdout, indent=1)
    print()
    return 0
