"""GPT-2 backbone with NeuroLM's enlarged vocabulary (docs/reference.md §3.1), and loading GPT-2 weights from Hugging Face.

The token embedding has 50304 rows (GPT-2's 50257, then 47 new rows; row 50257 is [SEP]). The untied output
head has ``50304 + num_codes`` rows: text logits first, EEG code ``c`` at column ``50304 + c``. Inputs are
given as embeddings, so the same blocks run on EEG features, text, or both (``NeuroLM`` builds them).

Init, as the official code gets it: nanoGPT's N(0, 0.02) (residual projections N(0, 0.02/sqrt(2 n_layer))),
``lm_head[:50257]`` a copy of ``wte[:50257]`` (GPT-2 ties them), then the rows added by the enlargement:
``wte[50257:]`` N(0, 1) (PyTorch's embedding default, ≈7× GPT-2's row norm, docs/reference.md §6.3-8) and
``lm_head[50257:]`` PyTorch's Linear default. ``scaled_new_rows=True`` draws the new ``wte`` rows from
N(0, 0.02) instead. :func:`load_hf_gpt2` then overwrites the GPT-2 rows with real weights.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurolm.model_config import GPTConfig
from neurolm.models.layers import Block, KVCache, LayerNorm, run_blocks
from neurolm.vocab import GPT2_TEXT_VOCAB, PADDED_TEXT_VOCAB

__all__ = ["GPTConfig", "GPT", "GPT2_TEXT_VOCAB", "PADDED_TEXT_VOCAB", "load_hf_gpt2", "read_hf_gpt2_state_dict"]

class GPT(nn.Module):
    """GPT-2 blocks over input embeddings, with the enlarged ``wte`` and untied text+EEG head."""

    def __init__(self, config: GPTConfig, scaled_new_rows: bool = False) -> None:
        super().__init__()
        self.config = config
        d = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.block_size, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.n_head, bias=config.bias, dropout=config.dropout) for _ in range(config.n_layer)
        )
        self.ln_f = LayerNorm(d, bias=config.bias)
        self.lm_head = nn.Linear(d, config.vocab_size + config.num_codes, bias=False)
        self.activation_checkpointing = False
        self._init_weights(scaled_new_rows)

    @torch.no_grad()
    def _init_weights(self, scaled_new_rows: bool) -> None:
        n_text = min(GPT2_TEXT_VOCAB, self.config.vocab_size)
        for name, p in self.named_parameters():
            if name.startswith("lm_head"):
                continue  # keeps nn.Linear's default init for the rows GPT-2 does not have
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        new_rows = self.wte.weight[n_text:]
        nn.init.normal_(new_rows, mean=0.0, std=0.02 if scaled_new_rows else 1.0)
        self.lm_head.weight[:n_text].copy_(self.wte.weight[:n_text])

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        last: int | None = None,
    ) -> torch.Tensor:
        """``inputs_embeds`` (B, S, d) = token/feature embeddings + position embeddings → final hidden (B, S, d),
        or (B, last, d) for the last ``last`` positions only (see :func:`~neurolm.models.layers.run_blocks`)."""
        x = self.drop(inputs_embeds)
        x = run_blocks(self.blocks, x, attn_mask, is_causal, cache, self.activation_checkpointing, last)
        return self.ln_f(x)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache; ``capacity`` (positions) lets decoding append in place."""
        return KVCache(self.config.n_layer, capacity)


def _download(uri: str, target: str) -> str:
    """Copy every file under an object-storage prefix into ``target`` (uses :mod:`neurolm.storage`)."""
    from neurolm import storage

    for remote in storage.list_files(uri):
        rel = remote[len(uri.rstrip("/")) + 1 :]
        local = Path(target, rel)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(storage.read_bytes(remote))
    return target


def read_hf_gpt2_state_dict(
    path_or_dir: str | os.PathLike[str], download: Callable[[str, str], Any] | None = None
) -> dict[str, torch.Tensor]:
    """Read a Hugging Face GPT-2 checkpoint (``GPT2LMHeadModel`` directory, local or object storage) into our
    key layout: ``wte``, ``wpe``, ``blocks.{i}.*`` (Conv1D weights transposed to Linear), ``ln_f``.

    For a URI with a scheme (``s3://…``) the directory is first copied to a temporary directory, with
    ``download(uri, local_dir)`` if given, else with :mod:`neurolm.storage`.
    """
    from transformers import GPT2LMHeadModel

    path = os.fspath(path_or_dir)
    with tempfile.TemporaryDirectory(prefix="neurolm-gpt2-") as tmp:
        if "://" in path and not path.startswith("file://"):
            (download or _download)(path, tmp)
            path = tmp
        elif path.startswith("file://"):
            path = path[len("file://") :]
        hf = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
        sd = hf.state_dict()
    out: dict[str, torch.Tensor] = {}
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    for k, v in sd.items():
        if not k.startswith("transformer.") or k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        name = k[len("transformer.") :].replace("h.", "blocks.", 1) if k.startswith("transformer.h.") else k[12:]
        out[name] = v.t().contiguous() if name.endswith(transposed) else v
    return out


@torch.no_grad()
def load_hf_gpt2(
    model: nn.Module,
    path_or_dir: str | os.PathLike[str],
    download: Callable[[str, str], Any] | None = None,
) -> nn.Module:
    """Load GPT-2 weights into ``model`` (a :class:`GPT`, or anything with a ``.gpt`` attribute such as
    ``NeuroLM``), the way the official ``GPT.from_pretrained`` + ``enlarge_*`` do (docs/reference.md §3.1).

    Rows 0..50256 of ``wte`` and of ``lm_head`` get GPT-2's (tied) token embeddings; the rows added by the
    enlargement keep their init. Shapes must match GPT-2's (use the config preset of the same name).
    """
    gpt: GPT = getattr(model, "gpt", model)
    sd = read_hf_gpt2_state_dict(path_or_dir, download)
    own = gpt.state_dict()
    problems = []
    for k, v in sd.items():
        if k == "wte.weight":
            target = own["wte.weight"][: v.shape[0]]
        else:
            if k not in own:
                problems.append(f"unexpected key {k}")
                continue
            target = own[k]
        if tuple(target.shape) != tuple(v.shape):
            problems.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target.shape)}")
    missing = [k for k in own if k not in sd and k != "lm_head.weight"]
    if problems or missing:
        raise ValueError(f"GPT-2 checkpoint {os.fspath(path_or_dir)} does not fit the model: "
                         f"{problems + [f'missing key {k}' for k in missing]}")
    n = sd["wte.weight"].shape[0]
    for k, v in sd.items():
        if k == "wte.weight":
            gpt.wte.weight[:n].copy_(v)
            gpt.lm_head.weight[:n].copy_(v)
        else:
            own[k].copy_(v)
    return model
