"""Recovery time after losing a node, per stage: seconds from SIGKILL of a worker node (its raylet and its Train
worker) to the first optimizer step after the resume, on a loopback cluster of a head and two worker nodes.

    python benchmarks/recovery.py                       # all three stages, JSON on stdout
    python benchmarks/recovery.py --stages tokenizer --steps 8

Each stage runs the debug preset (2 workers, SPREAD over the worker nodes, checkpoint every 2 steps, log every
step) on real sample EEG on a local S3 server; the node is killed as soon as the checkpoint of step 2 is
registered. "First step after resume" is the first report of a step past the restored checkpoint in the run's
``metrics.jsonl`` (polled every 0.25 s; rank 0 rewrites it, trimmed to the checkpoint, when it resumes).
Every process started here (S3 server, Ray nodes) is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from neurolm import storage  # noqa: E402
from neurolm.config import (  # noqa: E402
    InstructJobConfig,
    PreprocessConfig,
    PretrainJobConfig,
    TokenizerJobConfig,
    load_config,
)
from neurolm.runtime.local_cluster import LocalRayCluster  # noqa: E402
from neurolm.runtime.s3server import LocalS3Server  # noqa: E402

STAGES = ("tokenizer", "pretrain", "instruct")
KILLED_NODE = "127.0.0.3"


def _rows(cfg) -> list[dict[str, Any]]:
    uri = storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl")
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def _prepare_data(root: str) -> dict[str, str]:
    """Sample EEG shards (S001R02, SelfRegulationSCP1), text shards and random-init exports on S3."""
    import torch

    from neurolm.data.samples import fetch_sample
    from neurolm.data.text import prepare
    from neurolm.models.io import save_pretrained
    from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
    from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
    from neurolm.preprocess import run_preprocess

    shards = storage.join(root, "shards")
    for corpus, path, dataset, overrides in [
        ("edf", str(fetch_sample("S001R02.edf")), "mmidb", ["window_s=4", "notch=60"]),
        ("ts", str(fetch_sample("SelfRegulationSCP1")), "SelfRegulationSCP1", []),
    ]:
        cfg = load_config(PreprocessConfig, None, overrides,
                          base={"corpus": corpus, "input": path, "output": shards, "dataset": dataset})  # fmt: skip
        run_preprocess(cfg, progress=False)
    text = storage.join(root, "text")
    prepare([], text, window=129, builtin="python-docs")
    torch.manual_seed(0)
    tokenizer = save_pretrained(NeuralTokenizer(TokenizerConfig.preset("tiny", kmeans_init=False)),
                                storage.join(root, "init", "tokenizer"))  # fmt: skip
    neurolm = save_pretrained(NeuroLM(NeuroLMConfig.preset("tiny")), storage.join(root, "init", "neurolm"))
    return {
        "mmidb": storage.join(shards, "mmidb", "train"),
        "scp1_train": storage.join(shards, "SelfRegulationSCP1", "train"),
        "scp1_val": storage.join(shards, "SelfRegulationSCP1", "val"),
        "text": storage.join(text, "train"),
        "tokenizer": tokenizer,
        "neurolm": neurolm,
    }


def _stage_cfg(stage: str, data: dict[str, str], runs: str, steps: int):
    common = [f"run.storage_path={runs}", f"run.name={stage}-recovery-{int(time.time())}", "run.wandb=false",
              "run.export=false", "run.max_failures=3", f"train.max_steps={steps}", "train.checkpoint_every=2",
              "train.log_every=1", "scaling.placement_strategy=SPREAD"]  # fmt: skip
    eeg = f"data.train=[{data['mmidb']},{data['scp1_train']}]"
    text = [f"data.text={data['text']}", "data.text_seq_len=64"]
    if stage == "tokenizer":
        return load_config(
            TokenizerJobConfig, REPO_ROOT / "configs/tokenizer/debug.yaml", [eeg, *text, *common]
        )
    if stage == "pretrain":
        return load_config(PretrainJobConfig, REPO_ROOT / "configs/pretrain/debug.yaml",
                           [eeg, *text, f"tokenizer={data['tokenizer']}", *common])  # fmt: skip
    tasks = f"tasks=[{{name: SelfRegulationSCP1, train: {data['scp1_train']}, val: {data['scp1_val']}}}]"
    return load_config(InstructJobConfig, REPO_ROOT / "configs/instruct/debug.yaml",
                       [f"init={data['neurolm']}", tasks, "train.eval_every=null", *common])  # fmt: skip


def measure(cluster: LocalRayCluster, cfg) -> dict[str, Any]:
    """Run ``cfg``, kill a worker node after the checkpoint of step 2, time the recovery."""
    from neurolm.train.launch import fit_stage

    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(result=fit_stage(cfg)), daemon=True)
    start = time.monotonic()
    thread.start()
    marker = storage.join(cfg.run.storage_path, cfg.run.name, "step_0000002", "state.json")
    while not storage.exists(marker):
        if not thread.is_alive():
            raise RuntimeError(f"{cfg.stage}: the run ended before its first checkpoint")
        time.sleep(0.25)
    before = _rows(cfg)
    last_before = max((r["step"] for r in before), default=0)
    killed_at = time.monotonic()
    cluster.kill_node(KILLED_NODE)
    first_step_s = None
    while thread.is_alive() or first_step_s is None:
        rows = _rows(cfg)
        # After the resume rank 0 rewrites the history trimmed to the restored checkpoint, then appends the
        # steps after it: a file whose steps went back, followed by a new step, is the resumed run.
        steps = [r["step"] for r in rows]
        went_back = len(rows) < len(before) or (steps and steps[-1] < last_before) or steps[: len(before)] != [
            r["step"] for r in before]  # fmt: skip
        if went_back and len(steps) >= 2 and steps[-1] > steps[-2]:
            first_step_s = time.monotonic() - killed_at
            break
        if not thread.is_alive():
            break
        time.sleep(0.25)
    thread.join()
    cluster.add_node(KILLED_NODE)
    if "result" not in out:
        raise RuntimeError(f"{cfg.stage}: the run failed after the node loss")
    state = json.loads(storage.read_text(storage.join(out["result"].checkpoint, "state.json")))
    return {
        "stage": cfg.stage,
        "kill_after_s": round(killed_at - start, 1),
        "recovery_s": None if first_step_s is None else round(first_step_s, 1),
        "steps_before_kill": last_before,
        "final_step": state["step"],
        "resumes": state["resumes"],
        "total_s": round(time.monotonic() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage (>= 4)")
    args = parser.parse_args(argv)
    for key, value in {"DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    results = []
    with tempfile.TemporaryDirectory(prefix="nlm-rec-", dir="/tmp") as tmp:
        with LocalS3Server(os.path.join(tmp, "s3"), bucket="neurolm") as s3:
            os.environ.update(s3.env())
            from neurolm.runtime import worker_env

            env = {**worker_env(), "DS_ACCELERATOR": "cpu", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
            cluster = LocalRayCluster(os.path.join(tmp, "ray"), head_cpus=0, worker_cpus=2,
                                      env={k: v for k, v in env.items() if k.startswith("AWS_")})  # fmt: skip
            with cluster:
                import ray

                cluster.connect(env)
                try:
                    data = _prepare_data("s3://neurolm/recovery")
                    for stage in args.stages:
                        results.append(measure(cluster, _stage_cfg(stage, data, "s3://neurolm/recovery/runs",
                                                                   args.steps)))  # fmt: skip
                        print(json.dumps(results[-1]), file=sys.stderr)
                finally:
                    ray.shutdown()
    print(json.dumps({"benchmark": "recovery", "nodes": 3, "killed_node": KILLED_NODE, "stages": results},
                     indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
