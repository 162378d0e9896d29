"""Greedy generation throughput by path and precision; prints one JSON object.

    python benchmarks/generate.py [--preset base] [--batch 8] [--new-tokens 5] [--threads 2]
        [--paths cache,nocache,bf16,bf16_autocast,evaluation] [--flops]

The EEG part is the official instruction layout (23 channels x 10 s = 230 tokens padded to 276) and the prompt
is TUAB's; weights are random (throughput does not depend on them). Paths:

- ``cache``: the default, fp32 with the KV cache (the reference every other path is compared with);
- ``nocache``: fp32, the whole sequence recomputed per token (the official way); must give the same tokens;
- ``bf16``: the model cast to bfloat16 (evaluation's ``precision: bf16``), an opt-in numerics change;
- ``bf16_autocast``: the fp32 model under ``torch.autocast("cpu", torch.bfloat16)`` (for comparison);
- ``evaluation``: what evaluation does per batch, option scoring and generation: with one shared
  :func:`~neurolm.models.generate.prefill` (now) and with one prefill each (before).

Each path reports its best call of ``--repeats`` after a warm-up; the bf16 paths also report how far they are from
fp32 (rows whose generated tokens are all equal, the first-step logits, the option probabilities). ``--flops`` adds
to the two fp32 paths the counted floating-point operations of one more call (``neurolm.runtime.flops``) and the
rate the best call ran at.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from neurolm.data.bpe import load_gpt2_tokenizer
from neurolm.data.layout import layout_instruction_batch
from neurolm.data.tasks import get_task, tokenize_task
from neurolm.models.generate import generate, option_probabilities, prefill, score_options
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.runtime.flops import count_flops

PATHS = ("cache", "nocache", "bf16", "bf16_autocast", "evaluation")


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="base", help="NeuroLM preset (debug, tiny, base, large, xl)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {PATHS}")
    parser.add_argument("--flops", action="store_true",
                        help="count the floating-point operations of one more fp32 call (docs/platform.md §14)")
    args = parser.parse_args()
    paths = args.paths.split(",")
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths {sorted(unknown)}; choose from {PATHS}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset(args.preset)).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    signals = [rng.standard_normal((23, 2000)).astype(np.float32) for _ in range(args.batch)]
    channels = [np.arange(23)] * args.batch
    task_tokens = tokenize_task(get_task("TUAB"), load_gpt2_tokenizer().encode)
    b = {k: torch.from_numpy(v) for k, v in layout_instruction_batch(
        signals, channels, [0] * args.batch, task_tokens, eeg_max_len=276, evaluation=True).items()}
    inputs = (b["x"], b["input_chans"], b["input_time"], b["input_mask"].bool(), b["prompt"])
    new = args.new_tokens
    result: dict[str, Any] = {"preset": args.preset, "batch": args.batch, "new_tokens": new, "eeg_tokens": 276,
                              "prompt_tokens": int(b["prompt"].shape[1]), "threads": args.threads,
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "paths": {}}

    def record(name: str, seconds: float, **extra: Any) -> None:
        result["paths"][name] = {"call_s": round(seconds, 4), "sequences_per_s": round(args.batch / seconds, 3),
                                 "new_tokens_per_s": round(args.batch * new / seconds, 2), **extra}

    def counted(fn: Callable[[], Any], seconds: float) -> dict[str, Any]:
        """The counted floating-point operations of one more call, and the rate the timed call ran at."""
        if not args.flops:
            return {}
        _, flops = count_flops(fn)
        return {"flops": flops, "gflops_per_s": round(flops["total"] / seconds / 1e9, 1)}

    with torch.no_grad():
        call = lambda: generate(model, *inputs, max_new_tokens=new)  # noqa: E731
        seconds, ref = best_of(call, args.repeats)
        ref_probs = option_probabilities(score_options(model, *inputs, task_tokens.options).double())
        record("cache", seconds, **counted(call, seconds))
        if "nocache" in paths:
            call = lambda: generate(model, *inputs, max_new_tokens=new, use_cache=False)  # noqa: E731
            seconds, out = best_of(call, args.repeats)
            record("nocache", seconds, same_tokens_as_cache=bool(torch.equal(out.tokens, ref.tokens)),
                   **counted(call, seconds))
        variants: dict[str, tuple[NeuroLM, Callable[[], contextlib.AbstractContextManager[Any]], torch.dtype]] = {}
        if "bf16" in paths:
            variants["bf16"] = (copy.deepcopy(model).to(torch.bfloat16), contextlib.nullcontext, torch.bfloat16)
        if "bf16_autocast" in paths:
            variants["bf16_autocast"] = (model, lambda: torch.autocast("cpu", dtype=torch.bfloat16), torch.float32)
        for name, (m, ctx, dtype) in variants.items():
            low = (inputs[0].to(dtype), *inputs[1:])
            with ctx():
                seconds, out = best_of(lambda m=m, low=low: generate(m, *low, max_new_tokens=new), args.repeats)
                probs = option_probabilities(score_options(m, *low, task_tokens.options).double())
            record(name, seconds,
                   rows_with_all_tokens_equal_fp32=float((out.tokens == ref.tokens).all(dim=1).double().mean()),
                   first_step_logits_max_abs_diff=float((out.step_logits[0].float() - ref.step_logits[0]).abs().max()),
                   option_probs_max_abs_diff=float((probs - ref_probs).abs().max()))

        if "evaluation" in paths:
            def shared() -> tuple[torch.Tensor, torch.Tensor]:
                state = prefill(model, *inputs, room=new)
                scores = score_options(model, *inputs, task_tokens.options, prefilled=state)
                return scores, generate(model, *inputs, max_new_tokens=new, prefilled=state).tokens

            def separate() -> tuple[torch.Tensor, torch.Tensor]:
                scores = score_options(model, *inputs, task_tokens.options)
                return scores, generate(model, *inputs, max_new_tokens=new).tokens

            # alternated call by call: on a shared machine the load changes faster than one block of repeats
            s1, t1 = shared()
            s2, t2 = separate()
            seconds_shared = seconds_separate = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                shared()
                middle = time.perf_counter()
                separate()
                seconds_shared = min(seconds_shared, middle - start)
                seconds_separate = min(seconds_separate, time.perf_counter() - middle)
            record("evaluation", seconds_shared, separate_prefills_call_s=round(seconds_separate, 4),
                   speedup_over_separate=round(seconds_separate / seconds_shared, 2),
                   same_as_separate=bool(torch.equal(t1, t2) and torch.allclose(s1, s2, atol=1e-6, rtol=0)))
    result["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
