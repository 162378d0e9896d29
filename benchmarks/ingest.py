"""Data ingest of 1024-token pre-training samples: Parquet shards -> Ray Data -> 2 Ray Train workers. Prints JSON.

The shards are those ``neurolm preprocess --corpus edf notch=60 pretrain_windows=true`` writes for a recording
(64 ch x 16 s = 1024 tokens per sample), listed ``--repeat`` times (copies): 10 copies make a 376-sample epoch; 40 copies (1520 samples, 1.2 GB) make
an epoch larger than the object store, as every real one is. Each setting reports samples/s, best of ``--epochs`` epochs after a warm-up epoch (other jobs share
this machine's CPUs; the best epoch is the least disturbed one):

  inproc     one process, no Ray: ``read_shards`` + the stage's layout function per batch of 8 + torch tensors.
  raydata:P  Ray Data consumed in the driver (no Train, no split), path P.
  raytrain:P the training path: path P -> ``streaming_split`` -> 2 Train workers x 0.5 CPU iterating batches of 8,
             local shuffle 64, prefetch 2; throughput = all samples / (last end - first start) of an epoch.

Paths P: ``worker`` (now: ``neurolm.runtime.read_shards`` moves shard rows in blocks of about ``--block-mb``
(``data.block_mb``), the worker batches rows through its seeded shuffle buffer and lays them out,
``neurolm.train.ingest.torch_batches``), ``worker1`` (the same, one block per shard file) and ``pipeline`` (before:
Ray Data's default Parquet reader + the layout as a ``map_batches`` step + ``iter_torch_batches``). Samples per
CPU-s count the whole process tree (driver + every Ray process it started), over the timed epochs.
``--rounds N`` repeats the Ray settings, alternating, for ratios within one run.

``--format 1`` rewrites the shards in the old format (fixed-shape tensor signal, zstd) to measure the change.
``--timeline`` adds, per Ray setting, what ``ray.timeline()`` shows of the read tasks over the timed epochs: how
many ran at once at most, the median time each took, the median wait between one's end and the next one's start,
and the share of the time one was running (docs/platform.md §4: the read task is the chain the workers wait on).

    python benchmarks/ingest.py --edf RECORDING.edf [--format 2] [--settings inproc,raytrain:pipeline,raytrain:worker]
"""

from __future__ import annotations

import argparse
import glob
import itertools
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


def _iterate(source, layout: str, batch: int, seed: int):
    """The batches a trainer gets from ``source`` (a ``DataIterator`` or ``Dataset``) in either layout."""
    kwargs = dict(batch_size=batch, drop_last=True, local_shuffle_buffer_size=64, local_shuffle_seed=seed,
                  prefetch_batches=2)  # fmt: skip
    if layout == "pipeline":  # laid out by the map_batches step; Ray Data's default collation
        return source.iter_torch_batches(**kwargs)
    from neurolm.train.ingest import torch_batches

    return torch_batches(source, layout_fn(), **kwargs)


def _dataset(rep: str, layout: str, batch_format: str, block_mb: int):
    """``pipeline``: the previous path (Ray Data's default Parquet reader + the layout as a ``map_batches`` step);
    ``worker``: ``neurolm.runtime.read_shards`` (compact shard rows; the layout runs on the consumer) in blocks of
    about ``block_mb`` (``data.block_mb``); ``worker1``: the same with one block per file."""
    import ray.data

    from neurolm.runtime import read_shards, shard_paths

    if layout == "worker":
        return read_shards([rep], block_bytes=block_mb << 20)
    if layout == "worker1":
        return read_shards([rep])
    fs, paths = shard_paths([rep])
    return ray.data.read_parquet(paths, filesystem=fs, shuffle=None).map_batches(
        layout_fn(), batch_format=batch_format
    )


def _ingest_worker(config: dict) -> None:
    """A Train worker that only consumes its dataset shard: one warm-up epoch, then timed epochs."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()
    spans = []
    for epoch in range(config["epochs"] + 1):
        e0, m = time.time(), 0
        for b in _iterate(shard, config["layout"], config["batch"], epoch):
            m += b["x"].shape[0]
        spans.append((e0, time.time(), m))
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps({"rank": rank, "spans": spans}))


class TreeCPU:
    """CPU seconds of this process tree (driver + every Ray process it started), sampled in a thread.

    The tree is re-listed every 2 s only: listing it walks all of /proc, which on a busy machine costs a good
    share of a core when done 4 times a second."""

    def __init__(self, every_s: float = 0.5) -> None:
        import psutil

        self.me, self.every_s, self.log = psutil.Process(), every_s, []
        self.procs: dict[int, object] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeCPU:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        import psutil

        listed = 0.0
        while not self.stop.wait(self.every_s):
            if time.time() - listed > 2.0:
                listed = time.time()
                for child in self.me.children(recursive=True):
                    self.procs.setdefault(child.pid, child)
            total = sum(self.me.cpu_times()[:2])
            for proc in self.procs.values():
                try:
                    total += sum(proc.cpu_times()[:2])
                except psutil.Error:
                    pass
            self.log.append((time.time(), total))

    def between(self, start: float, end: float) -> float | None:
        """CPU seconds spent between two wall times (interpolated between samples)."""
        import numpy as np

        if len(self.log) < 2:
            return None
        t, c = np.array(self.log).T
        return float(np.interp(end, t, c) - np.interp(start, t, c))


def _summary(setting: str, spans: list[list[tuple[float, float, int]]], cpu: TreeCPU) -> dict:
    """spans[rank][epoch] = (start, end, samples); epoch 0 is the warm-up. CPU: over all timed epochs."""
    epochs = len(spans[0])
    rates = []
    for e in range(1, epochs):
        start, end = min(r[e][0] for r in spans), max(r[e][1] for r in spans)
        rates.append(sum(r[e][2] for r in spans) / (end - start))
    start, end = min(r[1][0] for r in spans), max(r[-1][1] for r in spans)
    samples = sum(r[e][2] for r in spans for e in range(1, epochs))
    cpu_s = cpu.between(start, end)
    return {"setting": setting, "samples_per_epoch": sum(r[1][2] for r in spans),
            "samples_per_s_epochs": rates, "samples_per_s": max(rates),
            "samples_per_s_mean": samples / (end - start),
            "samples_per_cpu_s": samples / cpu_s if cpu_s else None}  # fmt: skip


def read_task_timeline(start: float, end: float) -> dict:
    """The read tasks that started between two wall times, from ``ray.timeline()`` (microseconds since the
    epoch; a read task's events have category ``task::Read…``)."""
    import ray

    return summarize_spans(
        sorted(
            (e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6)
            for e in ray.timeline()
            if e.get("ph") == "X"
            and str(e.get("cat", "")).startswith("task::Read")
            and start <= e["ts"] / 1e6 <= end
        )
    )


def summarize_spans(spans: list[tuple[float, float]]) -> dict:
    """Tasks given as sorted (start, end) seconds: how many at once at most, the median duration, the median
    wait from one's end to the next one's start (when they do not overlap) and the share of the time one ran."""
    import numpy as np

    if not spans:
        return {"read_tasks": 0}
    at_once = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    gaps = [b0 - a1 for (_, a1), (b0, _) in itertools.pairwise(spans) if b0 >= a1]
    running, covered = spans[0], 0.0  # the union of the spans
    for a, b in spans[1:]:
        if a > running[1]:
            covered += running[1] - running[0]
            running = (a, b)
        else:
            running = (running[0], max(running[1], b))
    covered += running[1] - running[0]
    return {"read_tasks": len(spans), "read_tasks_at_once_max": at_once,
            "read_task_ms_median": 1e3 * float(np.median([b - a for a, b in spans])),
            "read_gap_ms_median": 1e3 * float(np.median(gaps)) if gaps else None,
            "read_busy_fraction": covered / max(1e-9, max(b for _, b in spans) - spans[0][0])}  # fmt: skip


def bench_raydata(rep: str, layout: str, args: argparse.Namespace) -> dict:
    """The Ray Data path consumed in the driver (no Train, no split)."""
    ds = _dataset(rep, layout, args.batch_format, args.block_mb)
    spans = []
    with TreeCPU() as cpu:
        for epoch in range(args.epochs + 1):
            e0, m = time.time(), 0
            for b in _iterate(ds, layout, args.batch_size, epoch):
                m += b["x"].shape[0]
            spans.append((e0, time.time(), m))
    out = _summary(f"raydata (layout={layout}, driver iterates)", [spans], cpu)
    if args.timeline:
        out.update(read_task_timeline(spans[1][0], spans[-1][1]))
    return out


def _options(args: argparse.Namespace):
    from ray.data import ExecutionOptions

    return ExecutionOptions(preserve_order=True)


def bench_raytrain(rep: str, layout: str, args: argparse.Namespace) -> dict:
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ds = _dataset(rep, layout, args.batch_format, args.block_mb)
    out = tempfile.mkdtemp(prefix="ingest-", dir=args.work)
    with TreeCPU() as cpu:
        TorchTrainer(
            _ingest_worker,
            train_loop_config={"batch": args.batch_size, "epochs": args.epochs, "out": out, "layout": layout},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
            datasets={"train": ds},
            # As neurolm.train.launch.fit_stage: a deterministic split is what makes resume exact.
            dataset_config=DataConfig(datasets_to_split="all", execution_options=_options(args)),
            run_config=RunConfig(name="ingest", storage_path=os.path.join(args.work, "ray_runs")),
        ).fit()
    ranks = [json.loads(Path(f).read_text()) for f in sorted(glob.glob(os.path.join(out, "rank*.json")))]
    result = _summary(f"raytrain (layout={layout}, 2 workers x 0.5 CPU)", [r["spans"] for r in ranks], cpu)
    if args.timeline:
        timed = [e for r in ranks for e in r["spans"][1:]]
        result.update(read_task_timeline(min(e[0] for e in timed), max(e[1] for e in timed)))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edf", required=True, help="a 64-channel recording (e.g. S001R02 tiled to 610 s)")
    p.add_argument("--work", default=None)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--format", type=int, default=2, choices=(1, 2))
    p.add_argument("--batch-format", default="pyarrow", choices=("pyarrow", "numpy"))
    p.add_argument(
        "--settings", default="inproc,raydata:pipeline,raydata:worker,raytrain:pipeline,raytrain:worker"
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat the Ray settings, alternating (ratios in one run)"
    )
    p.add_argument(
        "--object-store-mb", type=int, default=477, help="the local Ray's object store (MB)"
    )  # 5e8 B
    p.add_argument("--block-mb", type=int, default=64, help="data.block_mb of path worker")
    p.add_argument("--timeline", action="store_true", help="report the read tasks from ray.timeline()")
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
    ray_settings = [s for s in settings if s.startswith("ray")]
    if ray_settings:
        import ray

        from neurolm.runtime import init_local_ray, worker_env

        # Loopback only, like every local instance the project starts (neurolm.runtime).
        init_local_ray(worker_env(), num_cpus=2, object_store_memory=args.object_store_mb * 2**20, include_dashboard=False,
                       log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            for _ in range(args.rounds):
                for setting in ray_settings:
                    kind, _, layout = setting.partition(":")
                    bench = bench_raydata if kind == "raydata" else bench_raytrain
                    results.append(bench(rep, layout or "worker", args))
        finally:
            ray.shutdown()
    report = json.dumps({"bench": "ingest", "shard_format": args.format, "rows": rows,
                         "load_avg": os.getloadavg(), "results": results}, indent=1)  # fmt: skip
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
