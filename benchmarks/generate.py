"""Greedy generation throughput with and without the KV cache; prints one JSON object.

    python benchmarks/generate.py [--preset tiny] [--batch 4] [--new-tokens 32] [--threads 1]

The EEG part is the official instruction layout (23 channels x 10 s = 230 tokens padded to 276) and the prompt
is TUAB's; weights are random (throughput does not depend on them). Both modes must produce the same tokens.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from neurolm.data.bpe import load_gpt2_tokenizer
from neurolm.data.layout import layout_instruction_batch
from neurolm.data.tasks import get_task, tokenize_task
from neurolm.models.generate import generate
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny", help="NeuroLM preset (debug, tiny, base, large, xl)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset(args.preset)).eval()
    rng = np.random.default_rng(0)
    signals = [rng.standard_normal((23, 2000)).astype(np.float32) for _ in range(args.batch)]
    channels = [np.arange(23)] * args.batch
    tokens = tokenize_task(get_task("TUAB"), load_gpt2_tokenizer().encode)
    b = {k: torch.from_numpy(v) for k, v in layout_instruction_batch(
        signals, channels, [0] * args.batch, tokens, eeg_max_len=276, evaluation=True).items()}
    inputs = (b["x"], b["input_chans"], b["input_time"], b["input_mask"], b["prompt"])
    result: dict[str, object] = {"preset": args.preset, "batch": args.batch, "new_tokens": args.new_tokens,
                                 "eeg_tokens": 276, "prompt_tokens": int(b["prompt"].shape[1]),
                                 "threads": args.threads}
    outputs = {}
    for use_cache in (True, False):
        generate(model, *inputs, max_new_tokens=2, use_cache=use_cache)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs[use_cache] = generate(model, *inputs, max_new_tokens=args.new_tokens, use_cache=use_cache)
            best = min(best, time.perf_counter() - start)
        key = "with_cache" if use_cache else "without_cache"
        result[f"{key}_s"] = round(best, 4)
        result[f"{key}_tokens_per_s"] = round(args.batch * args.new_tokens / best, 2)
    result["speedup"] = round(result["with_cache_tokens_per_s"] / result["without_cache_tokens_per_s"], 2)
    result["same_tokens"] = bool(torch.equal(outputs[True].tokens, outputs[False].tokens))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
