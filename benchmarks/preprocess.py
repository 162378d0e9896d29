"""Preprocessing throughput: seconds of EEG processed per CPU-second and per wall-second, for 1 and 2 Ray
workers (and in-process), with peak memory. Prints one JSON document.

    python benchmarks/preprocess.py [--copies 8] [--workers 1 2]

Inputs: ``--copies`` copies of the real PhysioNet recording S001R02 (64 channels, 160 Hz, 61 s; fetched from its
PyPI wheel), and ``--long`` generated TUH-like recordings (29 channels, 250 Hz, ``--minutes`` long), each
processed by the generic ``edf`` reader with the official steps (0.1-75 Hz band-pass, 50 Hz notch, resampling to
200 Hz, 10-s windows) into Parquet shards in a temporary directory. CPU seconds are those of the
tasks' processes (``time.process_time`` around each recording); wall seconds exclude Ray's start-up and
each worker's first recording (imports of MNE, SciPy, Arrow), measured apart as a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from neurolm.config import PreprocessConfig  # noqa: E402
from neurolm.data import synthetic  # noqa: E402
from neurolm.data.samples import fetch_sample  # noqa: E402
from neurolm.preprocess import run_preprocess  # noqa: E402
from neurolm.runtime import init_local_ray, worker_env  # noqa: E402


def _process_once(cfg: PreprocessConfig) -> None:
    """Process the first recording without writing it: imports and caches everything a task needs."""
    from neurolm.data.readers import get_reader
    from neurolm.data.shards import parquet_bytes, samples_to_table

    reader = get_reader(cfg.corpus)
    task = reader.list_recordings(cfg)[0]
    parquet_bytes(samples_to_table(task, reader.read_recording(task, cfg)))


@ray.remote(num_cpus=1)
def _warm_up(cfg: PreprocessConfig) -> int:
    """One-off start-up cost of a worker (imports of MNE, SciPy, Arrow), not counted as throughput."""
    _process_once(cfg)
    time.sleep(0.5)  # keep this worker busy so the next warm-up lands on another one
    return os.getpid()


def measure(cfg: PreprocessConfig, workers: int, repeats: int) -> dict:
    """Best of ``repeats`` runs, each into a fresh output directory (other jobs share this machine's CPUs);
    ``workers == 0`` runs in this process without Ray."""
    if workers:
        init_local_ray(worker_env(), num_cpus=workers, include_dashboard=False, object_store_memory=int(5e8),
                       log_to_driver=False)  # fmt: skip
        ray.get([_warm_up.remote(cfg) for _ in range(workers)])
    else:
        _process_once(cfg)
    best: dict | None = None
    try:
        for attempt in range(repeats):
            run_cfg = cfg.model_copy(update={"output": f"{cfg.output}-{attempt}"})
            start = time.perf_counter()
            summary = run_preprocess(run_cfg, progress=False, executor="ray" if workers else "inline")
            wall = time.perf_counter() - start
            if best is None or wall < best["wall"]:
                best = {"wall": wall, "summary": summary}
    finally:
        if workers:
            ray.shutdown()
    summary, wall = best["summary"], best["wall"]
    load = [round(x, 2) for x in os.getloadavg()]  # other jobs share this machine: say how busy it was
    records = json.loads(Path(summary["manifest"]).read_text())["recordings"]
    eeg_seconds = summary["source_seconds"]
    return {
        "workers": workers or "inline",
        "recordings": summary["written"],
        "eeg_seconds": eeg_seconds,
        "channel_seconds": sum(r["source_seconds"] * len(r["channels"]) for r in records),
        "wall_s": round(wall, 3),
        "cpu_s": summary["cpu_s"],
        "eeg_s_per_cpu_s": round(eeg_seconds / summary["cpu_s"], 1),
        "eeg_s_per_wall_s": round(eeg_seconds / wall, 1),
        "peak_worker_rss_mb": max(r["peak_rss_mb"] for r in records),
        "load_avg_1_5_15": load,
    }


def _inputs(work: Path, copies: int, long_recordings: int, minutes: float) -> dict[str, Path]:
    source = fetch_sample("S001R02.edf")
    for i in range(copies):
        (work / "physionet" / f"S{i:03d}").mkdir(parents=True)
        shutil.copy(source, work / "physionet" / f"S{i:03d}" / f"S{i:03d}R02.edf")
    for i in range(long_recordings):
        subject = f"aaaaa{i:03d}"
        synthetic.write_edf(work / "tuh_like" / f"{subject}_s001_t000.edf", synthetic.TUH_FILE_CHANNELS,
                            synthetic.eeg_like(len(synthetic.TUH_FILE_CHANNELS), minutes * 60, 250.0, seed=i), 250.0)  # fmt: skip
    return {
        f"{copies} x S001R02.edf (real; 64 ch, 160 Hz, 61 s)": work / "physionet",
        f"{long_recordings} x TUH-like EDF (generated; 29 ch of which 23 kept, 250 Hz, {minutes:g} min)": work
        / "tuh_like",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=32, help="copies of the real S001R02 to process")
    parser.add_argument("--long", type=int, default=8, help="generated TUH-like recordings")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each generated recording")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray CPUs (0 = in-process)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is reported")
    parser.add_argument("--notch", type=float, default=50.0, help="notch frequency in Hz (the edf corpus default: 50)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="neurolm-bench-"))
    try:
        results = []
        for name, folder in _inputs(work, args.copies, args.long, args.minutes).items():
            runs = []
            for workers in [0, *args.workers]:
                out = work / f"out-{folder.name}-{workers}"
                cfg = PreprocessConfig(corpus="edf", input=str(folder), output=str(out), notch=args.notch)
                runs.append(measure(cfg, workers, args.repeats))
            results.append({"input": name, "runs": runs})
        report = {
            "benchmark": "preprocess",
            "steps": f"bandpass 0.1-75 Hz, notch {args.notch:g} Hz, resample 200 Hz, 10-s windows, Parquet (local disk)",
            "cpu_count": os.cpu_count(),
            "inputs": results,
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
