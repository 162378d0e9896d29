"""Data ingest of 1024-token pre-training samples: Parquet shards -> Ray Data -> 2 Ray Train workers. Prints JSON.

The shards are those ``neurolm preprocess --corpus edf notch=60 pretrain_windows=true`` writes for a recording
(64 ch x 16 s = 1024 tokens per sample), listed ``--repeat`` times (copies) so that an epoch holds a few hundred
samples. Each setting reports samples/s, best of ``--epochs`` epochs after a warm-up epoch (other jobs share
this machine's CPUs; the best epoch is the least disturbed one):

  inproc     one process, no Ray: ``read_shards`` + the stage's layout function per batch of 8 + torch tensors.
  raytrain   the training path: ``read_parquet`` -> ``map_batches(layout, batch_format=...)`` ->
             ``streaming_split`` -> 2 Train workers x 0.5 CPU iterating ``iter_torch_batches(8, local shuffle 64,
             prefetch 2)``; throughput = all samples / (last end - first start) over the timed epochs.

``--format 1`` rewrites the shards in the old format (fixed-shape tensor signal, zstd) to measure the change.

    python benchmarks/ingest.py --edf RECORDING.edf [--format 2] [--batch-format pyarrow] [--settings inproc,raytrain]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def make_shards(edf: str, work: str, repeat: int, version: int) -> tuple[str, int]:
    """Preprocess ``edf`` (untimed) and copy its shards ``repeat`` times; returns the directory and rows."""
    import pyarrow.parquet as pq

    from neurolm.config import PreprocessConfig, load_config
    from neurolm.data import shards
    from neurolm.preprocess import run_preprocess

    out = os.path.join(work, "shards_src")
    if not glob.glob(os.path.join(out, "**", "part-*.parquet"), recursive=True):
        cfg = load_config(PreprocessConfig, None, ["corpus=edf", f"input={json.dumps(edf)}",
                                                   f"output={json.dumps(out)}", "notch=60", "pretrain_windows=true"])  # fmt: skip
        run_preprocess(cfg, progress=False, executor="inline")
    parts = sorted(glob.glob(os.path.join(out, "**", "part-*.parquet"), recursive=True))
    rep = os.path.join(work, f"shards_v{version}")
    shutil.rmtree(rep, ignore_errors=True)
    os.makedirs(rep)
    rows = 0
    for i, part in enumerate(parts):
        table = shards.read_shards(part)
        if version == 1:  # the previous format: fixed-shape tensor signal, zstd throughout
            import pyarrow as pa

            c, n = shards.table_to_signals(table)[0].shape
            signal = pa.FixedShapeTensorArray.from_numpy_ndarray(
                __import__("numpy").stack(shards.table_to_signals(table))
            )
            table = table.set_column(table.schema.get_field_index("signal"), "signal", signal)
            table = table.replace_schema_metadata({b"neurolm.shard_format": b"1"})
            assert signal.type.shape == [c, n]
        data = shards.parquet_bytes(table)
        for k in range(repeat):
            Path(rep, f"part-{i:03d}-{k:04d}.parquet").write_bytes(data)
            rows += table.num_rows
    assert pq.read_metadata(os.path.join(rep, os.listdir(rep)[0])).num_rows
    return rep, rows


def layout_fn():
    from neurolm.data.layout import make_layout_fn

    return make_layout_fn(1024, targets=False, keep=(), truncate=True)  # PretrainStage.batch_transform


def bench_inproc(rep: str, batch: int, epochs: int) -> dict:
    import numpy as np
    import torch

    from neurolm.data.layout import shard_columns
    from neurolm.data.shards import read_shards

    fn = layout_fn()
    rng = np.random.default_rng(0)
    times, cpus, n = [], [], 0
    for _ in range(epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        columns = shard_columns(read_shards(rep))
        order = rng.permutation(len(columns["signal"]))
        n = 0
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            rows = {k: [v[j] for j in idx] if isinstance(v, list) else v[idx] for k, v in columns.items()}
            out = {k: torch.from_numpy(v) for k, v in fn(rows).items()}
            n += out["x"].shape[0]
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"setting": "inproc", "samples_per_epoch": n, "epoch_s": times[1:], "epoch_cpu_s": cpus[1:],
            "samples_per_s": n / min(times[1:]), "samples_per_cpu_s": n / min(cpus[1:])}  # fmt: skip


def _ingest_worker(config: dict) -> None:
    """A Train worker that only consumes its dataset shard: one warm-up epoch, then timed epochs."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()
    spans = []
    for epoch in range(config["epochs"] + 1):
        e0, m = time.time(), 0
        for b in shard.iter_torch_batches(batch_size=config["batch"], drop_last=True, local_shuffle_buffer_size=64,
                                          local_shuffle_seed=epoch, prefetch_batches=2):  # fmt: skip
            m += b["x"].shape[0]
        spans.append((e0, time.time(), m))
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps({"rank": rank, "spans": spans}))


def bench_raytrain(rep: str, args: argparse.Namespace) -> dict:
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from neurolm.train.launch import read_shards

    ds = read_shards([rep]).map_batches(layout_fn(), batch_format=args.batch_format)
    out = tempfile.mkdtemp(prefix="ingest-", dir=args.work)
    cpu_log: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_cpu() -> None:  # CPU seconds of this process tree (driver + every Ray process it started)
        while not stop.wait(0.25):
            cpu_log.append((time.time(), _tree_cpu_s()))

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    TorchTrainer(
        _ingest_worker,
        train_loop_config={"batch": args.batch_size, "epochs": args.epochs, "out": out},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets={"train": ds},
        dataset_config=DataConfig(datasets_to_split="all"),
        run_config=RunConfig(name="ingest", storage_path=os.path.join(args.work, "ray_runs")),
    ).fit()
    stop.set()
    sampler.join()
    ranks = [json.loads(Path(f).read_text()) for f in sorted(glob.glob(os.path.join(out, "rank*.json")))]
    rates, cpu_rates = [], []
    for e in range(1, args.epochs + 1):  # epoch 0 is the warm-up
        start = min(r["spans"][e][0] for r in ranks)
        end = max(r["spans"][e][1] for r in ranks)
        samples = sum(r["spans"][e][2] for r in ranks)
        rates.append(samples / (end - start))
        cpu = _cpu_between(cpu_log, start, end)
        cpu_rates.append(samples / cpu if cpu else None)
    return {"setting": f"raytrain (2 workers x 0.5 CPU, map_batches batch_format={args.batch_format})",
            "samples_per_epoch": sum(r["spans"][1][2] for r in ranks), "samples_per_s_epochs": rates,
            "samples_per_cpu_s_epochs": cpu_rates, "samples_per_s": max(rates),
            "samples_per_cpu_s": max((c for c in cpu_rates if c), default=None)}  # fmt: skip


def _tree_cpu_s() -> float:
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _cpu_between(log: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds spent between two wall times, from the sampled (time, cumulative CPU) log."""
    import numpy as np

    if len(log) < 2:
        return None
    t, c = np.array(log).T
    return float(np.interp(end, t, c) - np.interp(start, t, c))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edf", required=True, help="a 64-channel recording (e.g. S001R02 tiled to 610 s)")
    p.add_argument("--work", default=None)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--format", type=int, default=2, choices=(1, 2))
    p.add_argument("--batch-format", default="pyarrow", choices=("pyarrow", "numpy"))
    p.add_argument("--settings", default="inproc,raytrain")
    p.add_argument("--out", help="also write the JSON here (Ray's raylet may print warnings to stdout)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="neurolm-ingest-"))
    rep, rows = make_shards(os.path.abspath(args.edf), args.work, args.repeat, args.format)
    results = []
    settings = args.settings.split(",")
    if "inproc" in settings:
        results.append(bench_inproc(rep, args.batch_size, args.epochs))
    if "raytrain" in settings:
        import ray

        ray.init(address="local", num_cpus=2, object_store_memory=int(5e8), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            results.append(bench_raytrain(rep, args))
        finally:
            ray.shutdown()
    report = json.dumps({"bench": "ingest", "shard_format": args.format, "rows": rows,
                         "load_avg": os.getloadavg(), "results": results}, indent=1)  # fmt: skip
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
