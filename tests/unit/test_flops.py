"""The FLOP counter of the benchmarks (neurolm/runtime/flops.py): exact counts of known work, the CPU flash kernels
included, causal kernels counted by the scores they compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurolm.runtime.flops import count_flops


def test_linear_forward_and_backward_are_three_matrix_products():
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64, requires_grad=True)
    out, flops = count_flops(lambda: lin(x))
    assert out.shape == (10, 32)
    assert flops == {"total": 2 * 10 * 64 * 32, "matmul": 2 * 10 * 64 * 32, "attention": 0, "convolution": 0,
                     "other": 0}  # fmt: skip
    _, flops = count_flops(lambda: lin(x).sum().backward())
    assert (
        flops["matmul"] == flops["total"] == 3 * 2 * 10 * 64 * 32
    )  # the output, the input's and the weight's grads


@pytest.mark.parametrize("mask", ["none", "tensor", "causal"])
def test_cpu_flash_attention_is_counted(mask):
    b, h, s, d = 2, 4, 128, 16
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    kwargs = {"none": {}, "tensor": {"attn_mask": torch.ones(s, s, dtype=torch.bool).tril()},
              "causal": {"is_causal": True}}[mask]  # fmt: skip
    out, flops = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs))
    assert (
        out.grad_fn is not None and "ForCpu" in type(out.grad_fn).__name__
    )  # the fused CPU kernel, not the math path
    dense = 2 * (2 * b * h * s * s * d)  # scores and the weighted sum of the values
    share = (
        (s + 1) / (2 * s) if mask == "causal" else 1.0
    )  # a mask tensor is computed dense; is_causal is not
    assert flops["attention"] == flops["total"] == int(dense * share)
    _, flops = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, **kwargs).sum().backward())
    backward = 5 * (2 * b * h * s * s * d)  # the scores again, then the four products of the gradients
    assert flops["attention"] == flops["total"] == int(dense * share) + int(backward * share)


def test_convolutions_and_their_result():
    conv = torch.nn.Conv1d(1, 8, kernel_size=15, stride=8)
    x = torch.randn(3, 1, 200)
    out, flops = count_flops(lambda: conv(x))
    assert torch.equal(out, conv(x))
    assert flops["convolution"] == flops["total"] == 2 * 3 * 8 * 1 * 15 * out.shape[-1]


def test_activation_checkpointing_counts_the_recomputed_forward():
    """With checkpointed blocks the backward runs each block's forward again: counted, as the hardware does it."""
    from neurolm.models import layers

    blocks = torch.nn.ModuleList([layers.Block(32, 4, bias=True) for _ in range(2)]).train()
    x = torch.randn(2, 40, 32, requires_grad=True)
    forward = count_flops(lambda: layers.run_blocks(blocks, x, None, True))[1]["total"]
    counts = {
        checkpointing: count_flops(
            lambda c=checkpointing: layers.run_blocks(blocks, x, None, True, activation_checkpointing=c).sum().backward()
        )[1]["total"]
        for checkpointing in (False, True)
    }
    # PyTorch recomputes up to the last tensor the backward needs: not the MLP's output projection (80 rows, 128 -> 32)
    mlp_out = 2 * (2 * (2 * 40) * 128 * 32)  # of both blocks
    assert counts[True] == counts[False] + forward - mlp_out
