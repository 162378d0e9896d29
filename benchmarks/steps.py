"""One training step of each stage at NeuroLM-B shapes, as a Train worker runs it: a real DeepSpeed engine
(``neurolm.train.engine.build_engine``, one gloo rank on 127.0.0.1), the stage's ``train_step``, ``engine.backward``
and ``engine.step``. Prints one JSON object: seconds per step (median after warm-up), the losses of every step and
the peak resident memory.

The shapes are those of the side-by-side harness in docs/platform.md §12-§13:

- ``vq``: the tokenizer (encoder 12 layers, decoders 4 + 4), 2 samples x 1024 patches (23 channels x 44 s), plus
  the text side of the domain loss (16 x 1024 GPT-2 ids);
- ``pretrain``: NeuroLM-B on 2 x 1024 EEG tokens plus 1 x 1024 text tokens, gradient clip 1.0;
- ``instruct``: NeuroLM-B on 4 x (276 EEG tokens, 23 channels x 12 s, + 80 TUAB question/answer tokens) plus
  1 x 1024 text tokens.

Signals are random (a step's time does not depend on the values); the process keeps freed memory as the trainer
does (``neurolm.runtime.memory.keep_freed_memory``). ``--precision bf16`` is the config's
``deepspeed.precision: bf16``: bf16 weights and activations, fp32 master weights and losses (a numerics change;
fast on CPUs with AMX).

    python benchmarks/steps.py [--stages vq,pretrain,instruct] [--precision fp32|bf16] [--zero 0]
                               [--warmup 3] [--iters 2] [--threads 2] [--flops]

``--flops`` adds the counted floating-point operations of one more step, by kind (``neurolm.runtime.flops``), and
the rate the timed steps ran at.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

CHANNELS = 23  # the official 10-20 montage of the pre-training corpora


def _signals(n: int, seconds: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal((CHANNELS, seconds * 200), dtype=np.float32) for _ in range(n)]


def _setup(kind: str, seed: int):
    """(stage, model, batch of numpy arrays, text ids, optimizer section) for one stage at B shapes."""
    import numpy as np
    import torch

    from neurolm.config import InstructJobConfig, OptimSection, PretrainJobConfig, TokenizerJobConfig
    from neurolm.data.layout import layout_batch, layout_instruction_batch
    from neurolm.models.io import neurolm_from_tokenizer
    from neurolm.models.neurolm import NeuroLMConfig
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig

    torch.manual_seed(seed)
    run = {"name": "bench-steps", "storage_path": "/tmp/neurolm-bench-steps"}
    chans = [np.arange(CHANNELS, dtype=np.int16)]
    text_rng = np.random.default_rng(seed + 1)
    if kind == "vq":
        from neurolm.train.stages.tokenizer import TokenizerStage

        stage = TokenizerStage(TokenizerJobConfig.model_validate(
            {"data": {"train": "/none"}, "run": run, "model": {"preset": "base"}}
        ))
        model = stage.build_model()  # random text embeddings stand in for GPT-2's
        batch = layout_batch(_signals(2, 1024 // CHANNELS, seed), chans * 2, 1024, targets=True)
        text = torch.from_numpy(text_rng.integers(0, 50257, (16, 1025)))
        return stage, model, batch, text, OptimSection(lr=5e-5, min_lr=5e-5, weight_decay=1e-4,
                                                       betas=(0.9, 0.999), grad_clip=None)  # fmt: skip
    tokenizer = NeuralTokenizer(TokenizerConfig.preset("base"))
    model = neurolm_from_tokenizer(NeuroLMConfig.preset("base"), tokenizer)
    text = torch.from_numpy(text_rng.integers(0, 50257, (1, 1025)))
    optim = OptimSection(lr=6e-4, min_lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0)
    if kind == "pretrain":
        from neurolm.train.stages.pretrain import PretrainStage

        cfg = PretrainJobConfig.model_validate({"data": {"train": "/none"}, "run": run, "tokenizer": "/none"})
        batch = layout_batch(_signals(2, 1024 // CHANNELS, seed), chans * 2, 1024, targets=False)
        return PretrainStage(cfg), model, batch, text, optim
    from neurolm.data.tasks import get_task
    from neurolm.train.stages.instruct import InstructStage, task_tokens

    cfg = InstructJobConfig.model_validate(
        {"run": run, "init": "/none", "text_loss_weight": 1.0, "tasks": [{"name": "TUAB", "train": "/none"}]}
    )
    batch = layout_instruction_batch(_signals(4, 12, seed), chans * 4, np.array([0, 1, 0, 1]),
                                     task_tokens(get_task("TUAB")), eeg_max_len=276, text_max_len=80)  # fmt: skip
    batch.pop("num_chans"), batch.pop("num_tokens")  # as the Ray Data layout step does
    return InstructStage(cfg), model, batch, text, optim


def measure(kind: str, args: argparse.Namespace) -> dict:
    import torch

    from neurolm.config import DeepSpeedSection, TrainSection
    from neurolm.train.engine import build_engine

    stage, model, batch, text, optim = _setup(kind, args.seed)
    model.train()
    n = int(batch["x"].shape[0])
    total = args.warmup + args.iters
    engine = build_engine(model, DeepSpeedSection(precision=args.precision, zero_stage=args.zero), optim,
                          TrainSection(micro_batch_size=n), False, total_steps=total + int(args.flops),
                          steps_per_epoch=total + int(args.flops))  # fmt: skip
    stage.after_engine(engine)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}  # as WorkerContext
    times, losses = [], []
    for i in range(total):
        t0 = time.perf_counter()
        out = stage.train_step(engine, dict(tensors), text, progress=0.1)
        engine.backward(out.loss)
        engine.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(out.loss.detach()))
        print(f"[{kind}] step {i}: {times[-1]:.3f} s, loss {losses[-1]:.5f}", file=sys.stderr, flush=True)
    timed = sorted(times[args.warmup :])
    mid = len(timed) // 2
    median = timed[mid] if len(timed) % 2 else (timed[mid - 1] + timed[mid]) / 2
    result = {"stage": kind, "step_s_median": median, "step_s": times[args.warmup :], "first_step_s": times[0],
              "losses": losses, "eeg_samples": n, "tokens": out.tokens}  # fmt: skip
    if args.flops:  # one more step, counted (not timed: the counter slows every operation down)
        from neurolm.runtime.flops import count_flops

        def step() -> None:
            engine.backward(stage.train_step(engine, dict(tensors), text, progress=0.1).loss)
            engine.step()

        t0 = time.perf_counter()
        _, flops = count_flops(step)
        result["counted_step_s"] = time.perf_counter() - t0
        result["flops"] = flops
        result["gflops_per_s"] = flops["total"] / median / 1e9
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="vq,pretrain,instruct")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", action="store_true",
                        help="count the floating-point operations of one more step (docs/platform.md §14)")
    args = parser.parse_args()
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - {"vq", "pretrain", "instruct"})
    if unknown:
        parser.error(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from vq, pretrain, instruct")

    import deepspeed
    import torch

    from neurolm.runtime.local_cluster import free_port
    from neurolm.runtime.memory import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port("127.0.0.1")), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")  # fmt: skip
    stdout = os.dup(1)
    os.dup2(2, 1)  # DeepSpeed prints build messages on stdout; the JSON object stays alone there
    try:
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
        results = [measure(kind, args) for kind in stages]
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
    print(json.dumps({
        "bench": "steps", "precision": args.precision, "zero_stage": args.zero, "threads": args.threads,
        "warmup": args.warmup, "iters": args.iters, "torch": torch.__version__, "results": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
