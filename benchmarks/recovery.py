"""Recovery time after losing a node, per stage: seconds from SIGKILL of a worker node (its raylet and its Train
worker) to the first optimizer step after the resume, on a loopback cluster of a head and two worker nodes.

    python benchmarks/recovery.py                       # all three stages, JSON on stdout
    python benchmarks/recovery.py --stages tokenizer --steps 8

Each stage runs the debug preset (2 workers, SPREAD over the worker nodes, checkpoint every 2 steps, log every
step) on real sample EEG on a local S3 server; the node is killed once the checkpoint of step 2 is registered
(when step 4's files appear). "First step after resume" is the first row of the run's ``metrics.jsonl`` written
by the restarted worker group (polled every 0.25 s; see :func:`measure`).
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


def _train_workers(state: str) -> set[str]:
    """Ids of the cluster's Ray Train worker actors in ``state`` (ALIVE, DEAD)."""
    from ray.util.state import list_actors
    from ray.util.state.exception import ServerUnavailable

    filters = [("class_name", "=", "RayTrainWorker"), ("state", "=", state)]
    for attempt in range(10):  # the dashboard answers slowly on a loaded machine (24 s read timeouts seen)
        try:
            return {a.actor_id for a in list_actors(filters=filters, limit=10_000, timeout=60)}
        except ServerUnavailable:
            if attempt == 9:
                raise
            time.sleep(2.0)
    raise AssertionError("unreachable")


def measure(cluster: LocalRayCluster, cfg) -> dict[str, Any]:
    """Run ``cfg``, kill a worker node once the checkpoint of step 2 is registered, time the recovery.

    The first step after the resume is the first ``metrics.jsonl`` row that was not in the file once every Train
    worker of the interrupted group had died: from then on only the restarted group writes it (rank 0 rewrites
    it trimmed to the restored checkpoint, then appends each step; a row holds its step's timings, so a step
    done again never equals the row it replaces)."""
    from neurolm.train.launch import fit_stage

    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fit_stage(cfg)
        except BaseException as err:  # noqa: BLE001 - reported below
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    # Ranks report every checkpoint together: once step 4's files appear, step 2's checkpoint is registered.
    marker = storage.join(cfg.run.storage_path, cfg.run.name, "step_0000004", "state.json")
    while not storage.exists(marker):
        if not thread.is_alive():
            raise RuntimeError(f"{cfg.stage}: the run ended before step 4: {out.get('error')!r}")
        time.sleep(0.25)
    group = _train_workers("ALIVE")
    last_before = max((r["step"] for r in _rows(cfg)), default=0)
    killed_at = time.monotonic()
    cluster.kill_node(KILLED_NODE)
    try:
        while _train_workers("ALIVE") & group:  # the interrupted group's rank 0 may still write a row
            if not thread.is_alive():
                break
            time.sleep(0.5)
        group_gone_s = time.monotonic() - killed_at
        settled = [json.dumps(r, sort_keys=True) for r in _rows(cfg)]
        first_step_s = resumed_at_step = None
        while thread.is_alive():
            rows = _rows(cfg)
            new = [r for r in rows if json.dumps(r, sort_keys=True) not in settled]
            if new:
                first_step_s, resumed_at_step = time.monotonic() - killed_at, new[0]["step"]
                break
            time.sleep(0.25)
        thread.join()
    finally:
        cluster.add_node(KILLED_NODE)
    if "result" not in out:
        raise RuntimeError(f"{cfg.stage}: the run failed after the node loss: {out.get('error')!r}")
    state = json.loads(storage.read_text(storage.join(out["result"].checkpoint, "state.json")))
    return {
        "stage": cfg.stage,
        "kill_after_s": round(killed_at - start, 1),
        "recovery_s": None if first_step_s is None else round(first_step_s, 1),
        "old_workers_gone_s": round(group_gone_s, 1),
        "steps_before_kill": last_before,
        "first_step_after_resume": resumed_at_step,
        "final_step": state["step"],
        "resumes": state["resumes"],
        "total_s": round(time.monotonic() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage (>= 6)")
    parser.add_argument("--out", help="also write the JSON here (Ray's raylet may print warnings to stdout)")
    args = parser.parse_args(argv)
    if args.steps < 6:
        parser.error("--steps: at least 6 (the node is killed after step 4's checkpoint files appear)")
    # The Ray nodes started here import neurolm from this checkout, as this process does.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
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
    report = json.dumps({"benchmark": "recovery", "nodes": 3, "killed_node": KILLED_NODE,
                         "load_avg": list(os.getloadavg()), "stages": results}, indent=1)  # fmt: skip
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
