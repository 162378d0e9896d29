"""Training metrics: loss averages, throughput, share of time waiting on data, and MFU from counted FLOPs."""

from __future__ import annotations

import time

import torch

# Dense bf16 peak of common accelerators (FLOP/s), by a substring of torch.cuda.get_device_name().
_GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A6000": 155e12,
    "V100": 125e12,  # fp16 tensor cores (no bf16)
    "T4": 65e12,
}


def measure_cpu_flops(seconds: float = 0.2, n: int = 512) -> float:
    """Achieved fp32 matmul FLOP/s of this process's threads: the CPU 'peak' MFU is measured against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def peak_flops_per_device(device: torch.device) -> float:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in _GPU_PEAK_BF16.items():
            if key in name:
                return flops
        return 312e12
    return measure_cpu_flops()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of floats over all ranks (identity without torch.distributed)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


class MetricAccumulator:
    """Sums per-micro-step metrics between reports; :meth:`summary` averages across ranks and resets."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.tokens = 0
        self.samples = 0
        self.data_s = 0.0
        self.step_s = 0.0

    def add(self, metrics: dict[str, float], tokens: int, samples: int, data_s: float, step_s: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        self.tokens += tokens
        self.samples += samples
        self.data_s += data_s
        self.step_s += step_s

    def summary(
        self, world: int, flops_per_token: float, peak_flops: float, wall_s: float, device: torch.device,
        micro_per_step: int = 1,
    ) -> dict[str, float]:
        """Rank-averaged metrics plus ``perf/*``; every rank must call it (it all-reduces)."""
        keys = sorted(self.sums)
        local = [self.sums[k] for k in keys] + [self.n, self.tokens, self.samples, self.data_s, self.step_s]
        total = all_reduce_sum(local, device)
        n, tokens, samples, data_s, step_s = total[len(keys):]
        out = {f"train/{k}" if "/" not in k else k: v / max(n, 1) for k, v in zip(keys, total, strict=False)}
        wall_s = max(wall_s, 1e-9)
        out["perf/tokens_per_s"] = tokens / wall_s
        out["perf/samples_per_s"] = samples / wall_s
        out["perf/step_s"] = step_s / max(n, 1) * micro_per_step
        out["perf/data_wait_frac"] = data_s / max(step_s, 1e-9)
        out["perf/mfu"] = flops_per_token * tokens / wall_s / (peak_flops * world)
        out["_tokens"], out["_samples"] = tokens, samples
        self.reset()
        return out
