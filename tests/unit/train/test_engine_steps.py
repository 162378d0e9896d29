"""Training steps through real DeepSpeed engines (one gloo rank on loopback).

- Every stage in bf16 (ZeRO-0, 2 and 3), as a GPU worker runs it by default and a CPU worker with
  ``deepspeed.precision: bf16``: the step runs, its losses are fp32 and finite and close to the fp32 engine's, the
  fp32 master weights move, and the tokenizer's codebook stays fp32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolm.config import DeepSpeedSection, OptimSection, TrainSection
from neurolm.data.layout import layout_batch, layout_instruction_batch
from neurolm.data.tasks import get_task
from neurolm.models.io import neurolm_from_tokenizer
from neurolm.models.neurolm import NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.train.engine import build_engine


def _signals(n: int, channels: int, seconds: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal((channels, seconds * 200)).astype(np.float32) for _ in range(n)]


def _stage_and_batch(kind: str):
    """The stage object, a fresh tiny model and one batch, as the Trainer would hand them to ``train_step``."""
    from neurolm.config import InstructJobConfig, PretrainJobConfig, TokenizerJobConfig

    torch.manual_seed(0)
    run = {"name": "bf16", "storage_path": "/tmp/neurolm-bf16-test"}
    chans = [np.arange(4, dtype=np.int16)] * 2
    text = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(1))
    if kind.startswith("tokenizer"):
        from neurolm.train.stages.tokenizer import TokenizerStage

        stage = TokenizerStage(TokenizerJobConfig.model_validate({"data": {"train": "/none"}, "run": run}))
        # tokenizer-small-task: the small-task recipe's options (masked and dataset GroupNorm statistics, whose
        # affine weights are read outside GroupNorm.forward: ZeRO-3 must still gather them).
        options = dict(exclude_padding=True, embedding_init_std=0.02, patch_norm="dataset")
        model = NeuralTokenizer(TokenizerConfig.preset("debug", **(options if kind == "tokenizer-small-task" else {})))
        batch = layout_batch(_signals(2, 4, 4), chans, 16, targets=True)
        return stage, model, batch, text
    tokenizer = NeuralTokenizer(TokenizerConfig.preset("debug"))
    model = neurolm_from_tokenizer(NeuroLMConfig.preset("debug"), tokenizer)
    if kind == "pretrain":
        from neurolm.train.stages.pretrain import PretrainStage

        cfg = PretrainJobConfig.model_validate({"data": {"train": "/none"}, "run": run, "tokenizer": "/none"})
        return PretrainStage(cfg), model, layout_batch(_signals(2, 4, 4), chans, 16), text
    from neurolm.train.stages.instruct import InstructStage, task_tokens

    cfg = InstructJobConfig.model_validate(
        {"run": run, "init": "/none", "text_loss_weight": 1.0, "tasks": [{"name": "TUAB", "train": "/none"}]}
    )
    task = get_task("TUAB")
    batch = layout_instruction_batch(
        _signals(2, 4, 4), chans, np.array([0, 1]), task_tokens(task), eeg_max_len=16, text_max_len=40
    )
    batch.pop("num_chans"), batch.pop("num_tokens")
    return InstructStage(cfg), model, batch, text


def _steps(kind: str, precision: str, zero: int, n: int = 2) -> tuple[list[float], list[float], object]:
    stage, model, batch, text = _stage_and_batch(kind)
    model.train()
    engine = build_engine(model, DeepSpeedSection(precision=precision, zero_stage=zero),
                          OptimSection(lr=1e-3, min_lr=1e-3, grad_clip=1.0), TrainSection(micro_batch_size=2),
                          False, total_steps=10, steps_per_epoch=10)  # fmt: skip
    stage.after_engine(engine)
    # The optimizer updates fp32 master weights (a bf16 weight near 1 cannot take a step of 1e-3 itself).
    masters = [p for g in getattr(engine.optimizer, "optimizer", engine.optimizer).param_groups for p in g["params"]]
    masters = masters or list(getattr(engine.optimizer, "fp32_partitioned_groups_flat", []))  # ZeRO-3
    before = [p.detach().clone() for p in masters]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # As WorkerContext.to_device: floating-point inputs in the engine's compute dtype.
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    losses = []
    for _ in range(n):
        out = stage.train_step(engine, dict(tensors), text, progress=0.5)
        assert out.loss.dtype == torch.float32, f"{kind}: the loss is {out.loss.dtype}, not computed in fp32"
        engine.backward(out.loss)
        engine.step()
        losses.append(float(out.loss.detach()))
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(masters, before, strict=True)]
    assert {p.dtype for p in masters} == {torch.float32}, "no fp32 master weights"
    return losses, moved, engine


@pytest.mark.parametrize("zero", [0, 2, 3])
@pytest.mark.parametrize("kind", ["tokenizer", "tokenizer-small-task", "pretrain", "instruct"])
def test_each_stage_trains_in_bf16_through_deepspeed(process_group: None, kind: str, zero: int) -> None:
    losses, moved, engine = _steps(kind, "bf16", zero)
    ref, _, _ = _steps(kind, "fp32", zero)
    assert all(np.isfinite(losses)), losses
    # bf16 weights and activations: the first loss within bf16 rounding of the fp32 engine's
    assert losses[0] == pytest.approx(ref[0], rel=0.05), (losses, ref)
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    assert moved and sum(d > 0 for d in moved) >= 0.9 * len(moved), "the optimizer step left weights unchanged"
    if kind.startswith("tokenizer"):  # EMA codebook updates need fp32 (after_engine)
        assert engine.module.quantizer.codebook.dtype == torch.float32
    if kind == "tokenizer-small-task":  # the dataset statistics were measured, and stay fp32
        conv = engine.module.encoder.patch_embed
        assert conv.running_count.min() > 0 and conv.running_var.dtype == torch.float32

