"""Training throughput per stage, and Ray Data ingest alone, on the local machine. Prints JSON.

For each stage (debug presets: tokenizer ZeRO-2, pretrain ZeRO-3, instruct ZeRO-0; 2 CPU workers) it trains on real
EEG shards served by the local S3 server and reports, from the run's own metrics (after a warm-up report):
tokens/s, samples/s, step time, MFU and the share of step time spent waiting on data. Then it streams the same
datasets, laid out on the workers as in training, into 2 Train workers that do nothing but iterate, and reports the
samples/s that ingest alone sustains: ``ingest_headroom`` = ingest samples/s ÷ trainer samples/s (> 1: the trainer
is never starved). ``stage_wall_s`` is the whole ``fit_stage`` call (Ray Train's actors, the engine, the steps, the
checkpoints, the export) and ``outside_steps_s`` what of it is not ``steps x step_s``: a stage's fixed cost
(docs/platform.md §8).

    python benchmarks/train.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def _ingest_only(config: dict) -> None:
    """Train worker that only consumes its dataset shard (the ingest ceiling)."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    warmup = 5  # the pipeline's start-up (actors, first reads) is not throughput
    n = batches = 0
    t0 = time.perf_counter()
    from neurolm.train.ingest import torch_batches

    while batches < config["batches"] + warmup:  # epochs over the shard until enough batches were timed
        # As the trainer: the stage's layout runs here, on the worker (stage 3's datasets are laid out already).
        for batch in torch_batches(shard, config["transform"], batch_size=config["batch"], drop_last=True):
            batches += 1
            if batches == warmup:
                n, t0 = 0, time.perf_counter()
            else:
                n += len(next(iter(batch.values())))
            if batches >= config["batches"] + warmup:
                break
    rate = n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:  # Train V2 keeps metrics only of reports with a checkpoint
        Path(d, "rate.json").write_text(json.dumps({"samples_per_s": rate}))
        ray.train.report(
            {"samples_per_s": rate, "samples": n}, checkpoint=ray.train.Checkpoint.from_directory(d)
        )


def ingest_samples_per_s(cfg, stage, batches: int) -> float:
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from neurolm.train.launch import build_datasets

    datasets, _ = build_datasets(cfg, stage)
    transform = stage.batch_transform() if "train" in datasets else None
    datasets = {
        "train": datasets.get("train") or next(v for k, v in datasets.items() if k.startswith("train_"))
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = TorchTrainer(
            _ingest_only,
            train_loop_config={
                "batch": cfg.train.micro_batch_size,
                "batches": batches,
                "transform": transform,
            },
            scaling_config=ScalingConfig(
                num_workers=cfg.scaling.num_workers, resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}
            ),
            datasets=datasets,
            dataset_config=DataConfig(datasets_to_split="all"),
            run_config=RunConfig(name="ingest", storage_path=tmp),
        ).fit()
    return float(result.metrics["samples_per_s"]) * cfg.scaling.num_workers  # rank 0's rate x equal shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import ray

    from neurolm import storage
    from neurolm.config import (
        InstructJobConfig,
        PreprocessConfig,
        PretrainJobConfig,
        TokenizerJobConfig,
        load_config,
    )
    from neurolm.data.samples import fetch_sample
    from neurolm.data.text import prepare
    from neurolm.preprocess import run_preprocess
    from neurolm.runtime import ensure_ray
    from neurolm.runtime.s3server import LocalS3Server
    from neurolm.train.launch import fit_stage
    from neurolm.train.stages import make_stage

    out: dict = {"machine": {"cpus": os.cpu_count()}, "stages": {}}
    with tempfile.TemporaryDirectory() as tmp, LocalS3Server(os.path.join(tmp, "s3")) as server:
        os.environ.update(server.env())
        from neurolm.runtime import init_local_ray, worker_env

        init_local_ray(
            worker_env(), log_to_driver=False
        )  # worker logs stay in Ray's files: stdout is the JSON
        ensure_ray(None)
        root = "s3://neurolm/bench"
        for corpus, name, dataset, overrides in (
            ("edf", "S001R02.edf", "mmidb", ["window_s=4", "notch=60"]),
            ("ts", "SelfRegulationSCP1", "SelfRegulationSCP1", []),
        ):
            run_preprocess(
                load_config(
                    PreprocessConfig,
                    None,
                    overrides,
                    base={
                        "corpus": corpus,
                        "input": str(fetch_sample(name)),
                        "output": storage.join(root, "shards"),
                        "dataset": dataset,
                    },
                ),
                progress=False,
            )
        prepare([], storage.join(root, "text"), window=257, builtin="python-docs")
        shards = storage.join(root, "shards")
        common = [
            f"run.storage_path={root}/runs",
            "run.wandb=false",
            f"train.max_steps={args.steps}",
            "train.log_every=5",
            f"train.checkpoint_every={args.steps}",
            "train.epochs=100",
        ]
        eeg = f"data.train=[{shards}/mmidb/train,{shards}/SelfRegulationSCP1/train]"
        text = f"data.text={root}/text/train"
        tok_cfg = load_config(
            TokenizerJobConfig,
            REPO / "configs/tokenizer/debug.yaml",
            [*common, eeg, text, "run.name=bench-tok"],
        )
        walls: dict[str, float] = {}

        def timed(name: str, cfg):
            t0 = time.perf_counter()
            result = fit_stage(cfg)
            walls[name] = time.perf_counter() - t0
            return result

        tok = timed("tokenizer", tok_cfg)
        pre_cfg = load_config(
            PretrainJobConfig,
            REPO / "configs/pretrain/debug.yaml",
            [*common, eeg, text, "run.name=bench-pre", f"tokenizer={tok.export_dir}"],
        )
        pre = timed("pretrain", pre_cfg)
        ins_cfg = load_config(
            InstructJobConfig,
            REPO / "configs/instruct/debug.yaml",
            [
                *common,
                "run.name=bench-ins",
                f"init={pre.export_dir}",
                "train.eval_every=1000",
            ],
            base={"tasks": [{"name": "SelfRegulationSCP1", "train": f"{shards}/SelfRegulationSCP1/train"}]},
        )
        timed("instruct", ins_cfg)

        for name, cfg in (("tokenizer", tok_cfg), ("pretrain", pre_cfg), ("instruct", ins_cfg)):
            rows = [
                json.loads(line)
                for line in storage.read_text(
                    storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl")
                ).splitlines()
            ]
            steady = [r for r in rows if "perf/tokens_per_s" in r][1:]  # drop the warm-up report
            mean = {
                k: sum(r[k] for r in steady) / len(steady)
                for k in (
                    "perf/tokens_per_s",
                    "perf/samples_per_s",
                    "perf/step_s",
                    "perf/data_wait_frac",
                    "perf/mfu",
                )
            }
            ingest = ingest_samples_per_s(cfg, make_stage(cfg), batches=args.steps)
            out["stages"][name] = {
                "zero_stage": cfg.deepspeed.zero_stage,
                "workers": cfg.scaling.num_workers,
                "micro_batch_size": cfg.train.micro_batch_size,
                "tokens_per_s": round(mean["perf/tokens_per_s"], 1),
                "samples_per_s": round(mean["perf/samples_per_s"], 2),
                "step_s": round(mean["perf/step_s"], 4),
                "data_wait_frac": round(mean["perf/data_wait_frac"], 4),
                "mfu_vs_measured_cpu_matmul": round(mean["perf/mfu"], 4),
                "ingest_only_samples_per_s": round(ingest, 1),
                "ingest_headroom": round(ingest / mean["perf/samples_per_s"], 2),
                "stage_wall_s": round(walls[name], 1),
                "outside_steps_s": round(walls[name] - args.steps * mean["perf/step_s"], 1),
            }
        ray.shutdown()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
