"""The three training stages of NeuroLM, each a :class:`neurolm.train.stage.Stage`."""

from __future__ import annotations

from neurolm.config import InstructJobConfig, PretrainJobConfig, StageConfig, TokenizerJobConfig
from neurolm.train.stage import Stage


def make_stage(cfg: StageConfig) -> Stage:
    """The stage object for a validated stage config (builds and checks the model config, loads nothing)."""
    if isinstance(cfg, TokenizerJobConfig):
        from neurolm.train.stages.tokenizer import TokenizerStage

        return TokenizerStage(cfg)
    if isinstance(cfg, PretrainJobConfig):
        from neurolm.train.stages.pretrain import PretrainStage

        return PretrainStage(cfg)
    if isinstance(cfg, InstructJobConfig):
        from neurolm.train.stages.instruct import InstructStage

        return InstructStage(cfg)
    raise TypeError(f"no stage for config type {type(cfg).__name__}")
