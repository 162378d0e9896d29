from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neurolm.config import DeepSpeedSection, OptimSection, TrainSection
from neurolm.train.engine import (
    deepspeed_config,
    param_groups,
    resolve_precision,
    warmup_cosine,
    warmup_steps,
)


def test_precision_follows_the_hardware_unless_forced() -> None:
    assert resolve_precision(DeepSpeedSection(), use_gpu=True) == "bf16"
    assert resolve_precision(DeepSpeedSection(), use_gpu=False) == "fp32"
    assert resolve_precision(DeepSpeedSection(precision="bf16"), use_gpu=False) == "bf16"


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_config_per_zero_stage(stage: int) -> None:
    cfg = deepspeed_config(
        DeepSpeedSection(zero_stage=stage), OptimSection(lr=5e-4, betas=(0.9, 0.95), weight_decay=0.1),
        TrainSection(micro_batch_size=8, grad_accum_steps=4), use_gpu=False,
    )
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_micro_batch_size_per_gpu"] == 8 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["optimizer"]["params"]["betas"] == [0.9, 0.95]
    assert cfg["optimizer"]["params"]["torch_adam"] is True  # CPU: no JIT-built fused Adam
    assert cfg["optimizer"]["params"]["fused"] is True  # torch's fused CPU AdamW kernel
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False
    assert cfg["gradient_clipping"] == 1.0


def test_gpu_config_is_bf16_with_fused_adam_and_offload_needs_zero() -> None:
    cfg = deepspeed_config(DeepSpeedSection(zero_stage=3), OptimSection(), TrainSection(), use_gpu=True)
    assert cfg["bf16"]["enabled"] and not cfg["optimizer"]["params"]["torch_adam"]
    assert "fused" not in cfg["optimizer"]["params"]  # DeepSpeed's FusedAdam takes no such argument
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    with pytest.raises(ValueError, match="zero_stage >= 1"):
        deepspeed_config(DeepSpeedSection(zero_stage=0, offload_optimizer=True), OptimSection(), TrainSection(), True)


def test_weight_decay_only_on_matrices_and_frozen_left_out() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 4]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_warmup_then_cosine_to_min_lr() -> None:
    f = warmup_cosine(lr=1e-3, min_lr=1e-4, warmup=10, total=110)
    lrs = [1e-3 * f(s) for s in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1e-3
    assert max(lrs) == pytest.approx(1e-3, rel=1e-2)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:110], lrs[11:111], strict=False))  # monotone decay
    assert lrs[110] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)


def test_warmup_length_from_steps_epochs_or_ratio() -> None:
    assert warmup_steps(OptimSection(warmup_steps=7), 100, 10) == 7
    assert warmup_steps(OptimSection(warmup_epochs=5), 1000, 10) == 50  # tokenizer: 5 epochs
    assert warmup_steps(OptimSection(warmup_ratio=0.1), 1000, 10) == 100  # instruction: 10 %
    assert warmup_steps(OptimSection(), 1000, 10) == 0


def test_lr_zero_keeps_every_weight_and_min_lr_cannot_exceed_lr() -> None:
    """``optim.lr: 0`` (the small-task tokenizer, docs/recipe.md §8): AdamW with weight decay leaves the weights
    bit-identical under the schedule; a floor above the peak is refused naming both values."""
    import torch
    from pydantic import ValidationError

    optim = OptimSection(lr=0, min_lr=0, weight_decay=0.1)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(optim.lr, optim.min_lr, warmup=2, total=5))
    for _ in range(5):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValidationError, match=r"min_lr = 0.001 is above lr = 0"):
        OptimSection(lr=0, min_lr=1e-3)


def test_fused_cpu_adamw_makes_the_same_updates_as_the_reference_loop() -> None:
    """The CPU ``fused`` AdamW the engine asks for moves the weights as the per-tensor loop does (to rounding)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Linear(256, 8))
    params = deepspeed_config(DeepSpeedSection(), OptimSection(lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1),
                              TrainSection(), use_gpu=False)["optimizer"]["params"]
    kwargs = {"lr": params["lr"], "betas": tuple(params["betas"]), "eps": params["eps"]}
    copies = [copy.deepcopy(model) for _ in range(2)]
    optimizers = [torch.optim.AdamW(param_groups(copies[0], params["weight_decay"]), **kwargs, foreach=False),
                  torch.optim.AdamW(param_groups(copies[1], params["weight_decay"]), **kwargs, fused=params["fused"])]
    x = torch.randn(32, 64)
    for _ in range(5):
        for m, opt in zip(copies, optimizers, strict=True):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(copies[0].parameters(), copies[1].parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
