"""The preprocessing job without a cluster (executor="inline"): outcomes of bad input, idempotence, resume,
and the CLI's config and storage errors. The Ray path is covered in tests/integration/test_preprocess.py."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from neurolm.config import PreprocessConfig
from neurolm.data import synthetic
from neurolm.data.samples import fetch_sample
from neurolm.preprocess import build_config, run_preprocess, validate_config


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("part-*.parquet"))}


def test_bad_inputs_are_recorded_and_never_stop_the_run(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(fetch_sample("S001R02.edf"), corpus / "S001R02.edf")  # real, good
    shutil.copy(fetch_sample("eeg_acoustic_a.edf"), corpus / "eeg_acoustic_a.edf")  # real, no 10-20 channel
    synthetic.write_edf(corpus / "short.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 5, 250.0), 250.0)
    synthetic.write_edf(corpus / "slow.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 20, 100.0), 100.0)
    (corpus / "corrupt.edf").write_bytes(b"0       garbage" * 40)
    (corpus / "header_only.edf").write_bytes((corpus / "short.edf").read_bytes()[:600])
    cfg = PreprocessConfig(corpus="edf", input=str(corpus), output=str(tmp_path / "out"))
    summary = run_preprocess(cfg, executor="inline")
    assert (summary["written"], summary["skipped"], summary["failed"]) == (1, 1, 4)
    assert sum(summary["samples"].values()) == 6  # S001R02: 61 s -> six 10-s windows
    manifest = json.loads((tmp_path / "out" / "edf" / "_manifest.json").read_text())
    reasons = {Path(r["sources"][0]["path"]).name: (r["status"], r["reason"]) for r in manifest["recordings"]}
    assert reasons["S001R02.edf"] == ("written", None)
    assert (
        reasons["eeg_acoustic_a.edf"][0] == "failed"
        and "eeg_acoustic_a.edf: no usable channels" in reasons["eeg_acoustic_a.edf"][1]
    )
    assert reasons["short.edf"][0] == "skipped" and "shorter than one 10 s window" in reasons["short.edf"][1]
    assert "slow.edf: sampling rate 100 Hz is too low" in reasons["slow.edf"][1]
    assert "corrupt.edf: cannot read" in reasons["corrupt.edf"][1]
    assert reasons["header_only.edf"][0] == "failed"
    good = next(r for r in manifest["recordings"] if r["status"] == "written")
    assert len(good["sources"][0]["sha256"]) == 64 and good["channels"][0] == "FC5"
    assert [s["path"] for s in manifest["shards"]] == [s["path"] for s in good["shards"]]
    # A rerun reuses what finished, retries only the failures, and writes the same shards.
    before = shard_bytes(tmp_path / "out")
    again = run_preprocess(cfg, executor="inline")
    assert (again["reused"], again["processed"]) == (2, 4)
    assert shard_bytes(tmp_path / "out") == before


def test_interrupted_run_resumes_to_exactly_the_clean_shards(tmp_path):
    tree = synthetic.make_tuab_tree(tmp_path / "tuab", subjects_per_folder=2, seconds=21.0)
    clean = PreprocessConfig(
        corpus="tuab", input=str(tree), output=str(tmp_path / "clean"), samples_per_shard=1
    )
    run_preprocess(clean, executor="inline")
    resumed = clean.model_copy(update={"output": str(tmp_path / "resumed")})
    # An interrupted run: only some recordings committed, plus debris a crash can leave behind (a shard of an
    # uncommitted recording, a record of a recording no longer planned).
    partial = run_preprocess(resumed.model_copy(update={"max_files": 3}), executor="inline")
    assert partial["recordings"] == 3
    dataset = tmp_path / "resumed" / "tuab"
    (dataset / "train" / "part-crashed-00000.parquet").write_bytes(b"half a shard")
    (dataset / "_records" / "gone-1234abcd.json").write_text('{"key": "gone-1234abcd", "status": "written"}')
    summary = run_preprocess(resumed, executor="inline")
    assert (summary["reused"], summary["processed"]) == (3, 5)
    assert shard_bytes(dataset) == shard_bytes(tmp_path / "clean" / "tuab")
    assert len(shard_bytes(dataset)) == 16  # 8 recordings x 2 windows, one row per shard
    assert not (dataset / "_records" / "gone-1234abcd.json").exists()
    # Changing a processing setting redoes every recording and replaces its shards.
    renotched = run_preprocess(resumed.model_copy(update={"notch": 60.0}), executor="inline")
    assert renotched["processed"] == 8 and shard_bytes(dataset) != shard_bytes(tmp_path / "clean" / "tuab")


def cli(argv: list[str]) -> int:
    """``neurolm preprocess ARGV`` as the console script runs it (errors become exit codes in one place)."""
    from neurolm.cli import main

    return main(["preprocess", *argv])


def test_cli_rejects_bad_configs_before_starting_anything(tmp_path, capsys):
    assert cli(["--corpus", "edf", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "input = " in capsys.readouterr().err
    edf = synthetic.write_edf(tmp_path / "a.edf", ["Fp1"], synthetic.eeg_like(1, 12, 250.0), 250.0)
    assert cli(["--corpus", "edf", "--input", str(edf), "--output", str(tmp_path / "o"), "h_freq=120"]) == 2
    assert "h_freq = 120.0: must be below the target Nyquist frequency" in capsys.readouterr().err
    assert cli(["--corpus", "edf", "--input", str(edf), "--output", str(tmp_path / "o"), "window_s=2.5"]) == 2
    assert cli(["--corpus", "nope", "--input", str(edf), "--output", "x"]) == 2  # argparse usage error
    assert cli(["--corpus", "edf", "--input", str(edf), "--output", "gs://bucket/x"]) == 2
    assert not (tmp_path / "o").exists()


def test_unreachable_s3_endpoint_fails_fast_with_the_endpoint_named(tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    edf = synthetic.write_edf(tmp_path / "a.edf", ["Fp1"], synthetic.eeg_like(1, 12, 250.0), 250.0)
    assert cli(["--corpus", "edf", "--input", str(edf), "--output", "s3://neurolm/x", "--no-progress"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


PRESETS = sorted((Path(__file__).resolve().parents[3] / "configs" / "preprocess").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_builds_a_valid_config(preset, tmp_path):
    cfg, _ = build_config(
        ["--config", str(preset), "--input", str(tmp_path), "--output", "s3://b/p", "split_seed=5"]
    )
    validate_config(cfg)
    assert cfg.corpus == preset.stem and cfg.split_seed == 5 and cfg.output == "s3://b/p"


def test_run_ends_with_a_console_summary_of_outcomes_and_first_reasons(tmp_path):
    from neurolm.preprocess import format_summary

    corpus = tmp_path / "in"
    corpus.mkdir()
    signal = synthetic.eeg_like(3, 30, 250.0)
    signal[2] = 0.0  # a flat channel: dropped, the recording is still written
    synthetic.write_edf(corpus / "flat.edf", ["Fp1", "Fp2", "Cz"], signal, 250.0)
    synthetic.write_edf(corpus / "long.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 40, 250.0), 250.0)
    data = (corpus / "long.edf").read_bytes()
    (corpus / "truncated.edf").write_bytes(
        data[: len(data) * 3 // 4]
    )  # the header declares more than is there
    synthetic.write_edf(corpus / "short.edf", ["Fp1", "Fp2"], synthetic.eeg_like(2, 5, 250.0), 250.0)
    (corpus / "corrupt.edf").write_bytes(b"0       garbage" * 40)
    summary = run_preprocess(
        PreprocessConfig(corpus="edf", input=str(corpus), output=str(tmp_path / "out")), executor="inline"
    )
    assert (summary["written"], summary["skipped"], summary["failed"], summary["warned"]) == (3, 1, 1, 2)
    text = format_summary(summary)
    lines = text.splitlines()
    assert lines[0] == (
        "neurolm preprocess: 5 recording(s): 3 written, 1 skipped, 1 failed, 2 warned "
        "(0 reused from an earlier run)"
    )
    assert any(line.startswith("  failed: ") and "corrupt.edf: cannot read" in line for line in lines)
    assert any(
        line.startswith("  skipped: ") and "short.edf: recording is 5.0 s long" in line for line in lines
    )
    assert any(line.startswith("  warned: flat") and "flat channel(s) CZ dropped" in line for line in lines)
    assert any(line.startswith("  warned: ") and "truncated.edf: truncated" in line for line in lines)
    assert lines[-1] == f"  all reasons: {summary['manifest']}"


def test_small_jobs_run_in_process_without_starting_ray(tmp_path, capsys, monkeypatch):
    import sys

    from neurolm.preprocess import INLINE_MAX_BYTES, choose_executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # A process without Ray, even when this test session runs a Ray cluster: `import ray` now fails, so the
    # in-process path below also proves it never imports Ray.
    monkeypatch.setitem(sys.modules, "ray", None)
    edf = fetch_sample("S001R02.edf")
    cfg = PreprocessConfig(corpus="edf", input=str(edf), output=str(tmp_path / "auto"))
    from neurolm.data.preprocessing import plan

    tasks = plan(cfg)
    assert choose_executor(cfg, tasks) == "inline"  # one recording
    assert choose_executor(cfg.model_copy(update={"ray_address": "127.0.0.1:6379"}), tasks) == "ray"
    many = tasks * (INLINE_MAX_BYTES // Path(edf).stat().st_size + 2)
    assert choose_executor(cfg, many) == "ray"  # more source bytes than a start-up of Ray is worth
    assert (
        cli(["--corpus", "edf", "--input", str(edf), "--output", str(tmp_path / "a"), "--no-progress"]) == 0
    )
    auto = json.loads(capsys.readouterr().out)
    assert auto["executor"] == "inline" and auto["written"] == 1
    out = tmp_path / "zero"
    assert (
        cli(["--corpus", "edf", "--input", str(edf), "--output", str(out), "--no-progress", "--workers", "0"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["executor"] == "inline"
    assert shard_bytes(out) == shard_bytes(tmp_path / "a")
    assert cli(["--corpus", "edf", "--input", str(edf), "--output", str(out), "--workers", "-1"]) == 2
    assert "--workers = -1" in capsys.readouterr().err


def test_a_splits_preprocessing_is_read_back_from_its_manifest(tmp_path):
    """What stage 3 records in its export for ``neurolm predict``: the settings of the dataset a split belongs to."""
    from neurolm.data.shards import split_preprocessing

    cfg = PreprocessConfig(corpus="ts", input=str(fetch_sample("Blink")), output=str(tmp_path / "out"),
                           dataset="Blink", normalize="dataset", h_freq=40.0)  # fmt: skip
    run_preprocess(cfg, executor="inline")
    got = split_preprocessing(str(tmp_path / "out" / "Blink" / "train") + "/")
    assert {k: got[k] for k in ("corpus", "dataset", "l_freq", "h_freq", "normalize", "trial_scale")} == {
        "corpus": "ts", "dataset": "Blink", "l_freq": 0.1, "h_freq": 40.0, "normalize": "dataset",
        "trial_scale": "none"}  # fmt: skip
    assert got["config_hash"]
    assert split_preprocessing(str(tmp_path / "nowhere" / "train")) is None
