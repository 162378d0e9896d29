"""Stage 1: the text-aligned neural tokenizer (docs/reference.md §2): VQ reconstruction + domain-adversarial alignment."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurolm.config import ConfigError, TokenizerJobConfig
from neurolm.data.layout import make_layout_fn
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig, dann_alpha
from neurolm.train.stage import Stage, StepOutput


def random_text_embeddings(vocab: int, width: int, seed: int) -> torch.Tensor:
    """GPT-2-initialised token embeddings N(0, 0.02): the alignment target when no GPT-2 weights are at hand."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(vocab, width, generator=g) * 0.02


class TokenizerStage(Stage):
    name = "tokenizer"

    def __init__(self, cfg: TokenizerJobConfig) -> None:
        super().__init__(cfg)
        try:
            self.model_config = cfg.model.build()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model: {err}") from None

    def build_model(self) -> nn.Module:
        model = NeuralTokenizer(self.model_config)
        if self.cfg.text_embeddings:
            from neurolm.models.gpt import read_hf_gpt2_state_dict

            wte = read_hf_gpt2_state_dict(self.cfg.text_embeddings)["wte.weight"]
            if wte.shape[1] != self.model_config.width:
                raise ConfigError(
                    f"text_embeddings {self.cfg.text_embeddings}: width {wte.shape[1]} != tokenizer width "
                    f"{self.model_config.width} (the official alignment target is GPT-2 small, 768)"
                )
        else:
            wte = random_text_embeddings(self.model_config.text_vocab_size, self.model_config.width, self.cfg.train.seed)
        model.set_text_embeddings(wte)
        if self.cfg.freeze_encoder:
            model.encoder.requires_grad_(False)  # not in any optimizer group (engine.param_groups)
        return model

    def after_engine(self, engine: Any) -> None:
        # DeepSpeed's bf16 cast also casts the codebook buffers; EMA updates need fp32 (docs/reference.md §2.2).
        engine.module.quantizer.float()

    def batch_transform(self):
        keep = ("sample_key",) if self.cfg.train.record_samples else ()
        return make_layout_fn(self.cfg.data.max_tokens, targets=True, keep=keep, truncate=True)

    def _forward(self, model: Any, batch: dict[str, torch.Tensor], text: torch.Tensor | None, alpha: float):
        return model(
            batch["x"], batch["freq_target"], batch["raw_target"],
            batch["input_chans"], batch["input_time"], batch["input_mask"],
            text_tokens=None if text is None else text[:, :-1], alpha=alpha,
        )

    def train_step(
        self, model: Any, batch: dict[str, torch.Tensor], text: torch.Tensor | None, progress: float
    ) -> StepOutput:
        out = self._forward(model, batch, text, dann_alpha(progress))
        metrics = {k: float(v.detach()) for k, v in out.losses.items()}
        metrics["loss"] = float(out.loss.detach())
        metrics["code_usage"] = float(torch.unique(out.codes[batch["input_mask"].bool()]).numel())
        tokens = int(batch["input_mask"].sum()) + (0 if text is None else text[:, :-1].numel())
        return StepOutput(loss=out.loss, metrics=metrics, tokens=tokens)

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = self._forward(model, batch, None, 0.0)
        return {"loss": float(out.losses["vq_total"]), **{k: float(v) for k, v in out.losses.items()}}

    def export(self, state_dict: dict[str, torch.Tensor], out_dir: str, model_config: dict[str, Any]) -> None:
        from neurolm.models.io import save_pretrained

        config = TokenizerConfig.from_dict(model_config)
        with torch.device("meta"):  # the weights come from the checkpoint: allocate nothing twice
            model = NeuralTokenizer(config)
            model.set_text_embeddings(torch.zeros(config.text_vocab_size, config.width))
        model.load_state_dict(state_dict, strict=True, assign=True)
        save_pretrained(model, out_dir, extra={"stage": "tokenizer", "run": self.cfg.run.name})
