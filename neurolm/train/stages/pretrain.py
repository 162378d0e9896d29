"""Stage 2: multi-channel autoregressive pre-training of GPT-2 on EEG tokens, plus a text LM loss (docs/reference.md §3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurolm.config import ConfigError, PretrainJobConfig
from neurolm.data.layout import make_layout_fn
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.train.stage import Stage, StepOutput


class PretrainStage(Stage):
    name = "pretrain"

    def __init__(self, cfg: PretrainJobConfig) -> None:
        super().__init__(cfg)
        try:
            self.model_config = cfg.model.build()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model: {err}") from None

    def build_model(self) -> nn.Module:
        from neurolm.models.io import load_tokenizer, neurolm_from_tokenizer

        tokenizer = load_tokenizer(self.cfg.tokenizer)
        model = neurolm_from_tokenizer(self.model_config, tokenizer, gpt2=self.cfg.gpt2)
        model.set_activation_checkpointing(self.cfg.train.activation_checkpointing)
        return model

    def after_engine(self, engine: Any) -> None:
        # The code head's codebook stays fp32 under bf16 so targets equal the tokenizer's codes.
        if engine.module.code_head is not None:
            engine.module.code_head.float()

    def batch_transform(self):
        keep = ("sample_key",) if self.cfg.train.record_samples else ()
        return make_layout_fn(self.cfg.data.max_tokens, targets=False, keep=keep, truncate=True)

    def train_step(
        self, model: Any, batch: dict[str, torch.Tensor], text: torch.Tensor | None, progress: float
    ) -> StepOutput:
        eeg = model(batch["x"], batch["input_chans"], batch["input_time"], batch["input_mask"],
                    eeg_targets="next_code")
        loss = eeg.loss
        metrics = {"eeg_loss": float(eeg.loss.detach()), "eeg_accuracy": float(eeg.accuracy)}
        tokens = int(batch["input_mask"].sum())
        if text is not None and self.cfg.text_loss_weight > 0:
            lm = model(text=text[:, :-1], text_targets=text[:, 1:])
            loss = loss + self.cfg.text_loss_weight * lm.loss
            metrics.update(text_loss=float(lm.loss.detach()), text_accuracy=float(lm.accuracy))
            tokens += text[:, :-1].numel()
        metrics["loss"] = float(loss.detach())
        return StepOutput(loss=loss, metrics=metrics, tokens=tokens)

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = model(batch["x"], batch["input_chans"], batch["input_time"], batch["input_mask"],
                    eeg_targets="next_code")
        loss = float(out.loss)
        return {"loss": loss, "eeg_accuracy": float(out.accuracy), "eeg_perplexity": float(torch.exp(out.loss))}

    def export(self, state_dict: dict[str, torch.Tensor], out_dir: str, model_config: dict[str, Any]) -> None:
        from neurolm.models.io import save_pretrained

        with torch.device("meta"):  # the weights come from the checkpoint: allocate nothing twice
            model = NeuroLM(NeuroLMConfig.from_dict(model_config))
        model.load_state_dict(state_dict, strict=True, assign=True)
        save_pretrained(model, out_dir, extra={"stage": "pretrain", "run": self.cfg.run.name})
