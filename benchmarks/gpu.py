"""NeuroLM-B pre-training throughput on this machine's GPU: tokens/s, MFU and the share of time waiting on data.

Prints one JSON object. It runs what a stage-2 worker runs — the GPU preset's model (``configs/pretrain/base.yaml``:
NeuroLM-B, bf16, ZeRO-2, DeepSpeed's fused Adam), built by ``neurolm.train.engine.build_engine`` in one process,
and ``PretrainStage.train_step`` (frozen encoder, code-head targets, stair-masked GPT, text LM loss) — on batches
laid out by ``neurolm.data.layout.layout_batch`` (the function of the Ray Data ``map_batches`` step) in a
producer thread, copied to the device from pinned memory. Weights are random (a random tokenizer supplies the
frozen encoder and the code head): throughput does not depend on them.

- ``tokens_per_s``: real EEG + text tokens per second of wall time (as the trainer's ``perf/tokens_per_s``).
- ``mfu``: training FLOPs per second over the device's dense bf16 peak (``peak_flops_per_device``), the FLOPs
  counted on the first warm-up step (``neurolm.runtime.flops``, as the trainer's ``perf/mfu``).
- ``data_wait_frac``: share of wall time the step loop waited for the next batch from the layout thread.

Without a CUDA device it prints ``{"gpu": false, ...}`` and exits 0. ``--device cpu`` runs the same measurement
on the CPU in fp32 (to exercise the script; use a small preset there: ``model.preset=debug``).

    python benchmarks/gpu.py [--steps 20] [--warmup 3] [--batch N] [--device cuda|cpu] [dotted.overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _layout_producer(cfg, batch_size: int, seed: int, out: queue.Queue, stop: threading.Event) -> None:
    """Random 23-channel recordings → the stage-2 token layout → pinned torch tensors, until ``stop``."""
    import numpy as np
    import torch

    from neurolm.data.layout import layout_batch

    rng = np.random.default_rng(seed)
    n_channels = 23
    seconds = cfg.data.max_tokens // n_channels
    channels = [np.arange(n_channels, dtype=np.int16)] * batch_size
    pin = torch.cuda.is_available()
    while not stop.is_set():
        signals = [rng.standard_normal((n_channels, seconds * 200), dtype=np.float32) for _ in range(batch_size)]
        arrays = layout_batch(signals, channels, cfg.data.max_tokens, targets=False)
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        if pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        text = torch.from_numpy(rng.integers(0, 50257, (cfg.data.text_batch_size, cfg.data.text_seq_len + 1)))
        while not stop.is_set():
            try:
                out.put((batch, text), timeout=0.5)
                break
            except queue.Full:
                continue


def _no_gpu() -> dict:
    import torch

    return {"gpu": False, "reason": "no CUDA device visible to torch", "torch": torch.__version__,
            "torch_cuda_build": torch.version.cuda}


def measure(args: argparse.Namespace) -> dict:
    use_gpu = args.device == "cuda"
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    import deepspeed
    import torch

    from neurolm.config import PretrainJobConfig, load_config
    from neurolm.models.io import neurolm_from_tokenizer
    from neurolm.models.quantizer import l2norm
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
    from neurolm.runtime.flops import count_flops
    from neurolm.train.engine import build_engine, resolve_precision
    from neurolm.train.metrics import peak_flops_per_device
    from neurolm.train.stage import StepOutput
    from neurolm.train.stages.pretrain import PretrainStage

    overrides = list(args.overrides)
    if args.batch is not None:
        overrides.append(f"train.micro_batch_size={args.batch}")
    if not use_gpu:
        overrides.append("deepspeed.precision=fp32")
    cfg = load_config(PretrainJobConfig, args.config, overrides)
    stage = PretrainStage(cfg)
    precision = resolve_precision(cfg.deepspeed, use_gpu)
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    torch.manual_seed(cfg.train.seed)
    tokenizer = NeuralTokenizer(TokenizerConfig.preset(args.tokenizer_preset))
    with torch.no_grad():  # a random unit codebook, as after k-means
        tokenizer.quantizer.codebook.copy_(l2norm(torch.randn_like(tokenizer.quantizer.codebook)))
    model = neurolm_from_tokenizer(stage.model_config, tokenizer)
    del tokenizer
    model.set_activation_checkpointing(cfg.train.activation_checkpointing)
    if use_gpu:
        torch.cuda.set_device(device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", verbose=False)
    total = args.warmup + args.steps
    engine = build_engine(model, cfg.deepspeed, cfg.optim, cfg.train, use_gpu, total_steps=total, steps_per_epoch=total)
    stage.after_engine(engine)
    peak = peak_flops_per_device(device)
    flops_per_token = 0.0

    batches: queue.Queue = queue.Queue(maxsize=max(cfg.data.prefetch_batches, 1))
    stop = threading.Event()
    producer = threading.Thread(target=_layout_producer, daemon=True,
                                args=(cfg, cfg.train.micro_batch_size, cfg.train.seed, batches, stop))
    producer.start()

    def sync() -> None:
        if use_gpu:
            torch.cuda.synchronize(device)

    wait_s = step_s = 0.0
    tokens = 0
    try:
        for step in range(total):
            t0 = time.perf_counter()
            batch, text = batches.get()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
            text = text.to(device, non_blocking=True)
            t1 = time.perf_counter()

            def forward_backward() -> StepOutput:
                out = stage.train_step(engine, batch, text, progress=step / total)  # noqa: B023 (called at once)
                engine.backward(out.loss)
                return out

            if step == 0:  # counted, not timed (warm-up): the counter slows every operation down
                out, flops = count_flops(forward_backward)
                flops_per_token = flops["total"] / max(out.tokens, 1)
            else:
                out = forward_backward()
            engine.step()
            sync()
            t2 = time.perf_counter()
            if step >= args.warmup:
                wait_s += t1 - t0
                step_s += t2 - t0
                tokens += out.tokens
    finally:
        stop.set()
        producer.join(timeout=10)
    tokens_per_s = tokens / step_s
    result = {
        "gpu": use_gpu,
        "device": torch.cuda.get_device_name(device) if use_gpu else "cpu",
        "torch": torch.__version__,
        "config": str(args.config),
        "model_preset": cfg.model.preset,
        "precision": precision,
        "zero_stage": cfg.deepspeed.zero_stage,
        "micro_batch_size": cfg.train.micro_batch_size,
        "eeg_tokens_per_sample": cfg.data.max_tokens,
        "text_batch": [cfg.data.text_batch_size, cfg.data.text_seq_len],
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "step_s": step_s / args.steps,
        "tokens_per_s": tokens_per_s,
        "samples_per_s": cfg.train.micro_batch_size * args.steps / step_s,
        "data_wait_frac": wait_s / step_s,
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "mfu": flops_per_token * tokens_per_s / peak,
    }
    if use_gpu:
        result["max_memory_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.micro_batch_size=16")
    parser.add_argument("--config", type=Path, default=REPO / "configs/pretrain/base.yaml")
    parser.add_argument("--tokenizer-preset", default="base", help="tokenizer preset of the frozen encoder")
    parser.add_argument("--batch", type=int, default=None, help="micro-batch size (default: the config's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps(_no_gpu()))
        return 0
    print(json.dumps(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
