"""The pipeline console: a short story on the terminal, everything else (children included) in the log file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from neurolm.progress import Console, format_table, metrics_table

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import logging, subprocess, sys, threading, time
    from neurolm.progress import Console
    from neurolm.train.loop import MetricsHistory

    metrics = sys.argv[2] + "/run/metrics.jsonl"
    with Console(verbose=sys.argv[1] == "verbose", log_dir=sys.argv[2] + "/logs", poll_s=0.05,
                 plain_every_s=0.2) as console:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        logging.getLogger("ray.data").info("NOISE operator table")
        print("NOISE from print")
        subprocess.run([sys.executable, "-c", "import sys; print('NOISE child out'); print('NOISE child err', file=sys.stderr)"])
        with console.stage("train", metrics, total_steps=4) as rec:
            history = MetricsHistory(metrics, resumed_step=0)
            for step in range(1, 5):
                history.append({"step": step, "train/loss": 1.0 / step})
                time.sleep(0.3)
            rec.metrics = {"train/loss": 0.25}
        with console.stage("evaluate") as rec:
            rec.metrics = {"test/T/balanced_accuracy": 0.8, "test/T/baseline/lda/balanced_accuracy": 0.7}
        console.say(console.summary())
    """
)


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip


def test_quiet_console_keeps_the_noise_in_the_log_file(tmp_path: Path) -> None:
    proc = _run(tmp_path, "quiet")
    assert "NOISE" not in proc.stdout and "NOISE" not in proc.stderr
    logs = list((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    for line in ("NOISE operator table", "NOISE from print", "NOISE child out", "NOISE child err"):
        assert line in log
    out = proc.stdout.splitlines()
    assert out[0] == f"full logs: {logs[0]}" and out[-1] == out[0]
    # Periodic plain lines while training (no TTY), then one line when the stage ends, with its rate.
    progress = [line for line in out if line.strip().startswith("train") and "step " in line]
    assert progress, out
    done = [line for line in out if line.strip().startswith("train") and "done in" in line]
    assert len(done) == 1 and "4/4 steps" in done[0] and "steps/s" in done[0] and "loss 0.250" in done[0]
    # The final table: the stages, then the model's test metric beside the baseline.
    assert any(line.split()[:2] == ["train", "4/4"] for line in out), out
    assert any("balanced_accuracy" in line and "0.8" in line and "0.7 (baseline/lda)" in line for line in out)
    assert len(out) < 40
    # The story is in the log too, so the log reads in order.
    assert "[neurolm] full logs:" in log


def test_verbose_console_leaves_stdout_alone(tmp_path: Path) -> None:
    proc = _run(tmp_path, "verbose")
    assert "NOISE from print" in proc.stdout and "NOISE child out" in proc.stdout
    assert not (tmp_path / "logs").exists()


def test_tables() -> None:
    table = format_table(["a", "bb"], [[1, 0.123456], [None, "x"]])
    assert table.splitlines() == ["a  bb", "-  ------", "1  0.1235", "-  x"]
    metrics = {"test/T/balanced_accuracy": 0.9, "test/T/roc_auc": 0.95, "test/T/n": 30, "wall_s": 3.0}
    rows = metrics_table(metrics).splitlines()
    assert rows[2].split() == ["test/T", "balanced_accuracy", "0.9", "-"]
    assert rows[3].split() == ["test/T", "roc_auc", "0.95", "-"]
    metrics.update({"test/T/vs_best_baseline/diff": -0.05, "test/T/vs_best_baseline/low": -0.1,
                    "test/T/vs_best_baseline/high": 0.01})  # fmt: skip
    assert "model - best baseline  -0.05  95% interval [-0.100, +0.010]" in metrics_table(metrics)
    assert Console(verbose=True).summary().splitlines()[0].split()[0] == "stage"


def test_fetch_results_copies_the_report_into_a_fresh_local_folder(tmp_path: Path) -> None:
    from neurolm import storage
    from neurolm.pipeline import fetch_results

    workdir = str(tmp_path / "work")
    storage.write_text(storage.join(workdir, "eval", "report.md"), "# report\n")
    storage.write_bytes(storage.join(workdir, "eval", "summary.png"), b"\x89PNG\r\n\x1a\n")
    storage.write_text(storage.join(workdir, "eval", "predictions_test_t.csv"), "label,pred\n1,1\n")
    storage.write_text(storage.join(workdir, "pipeline.json"), "{}")
    results = tmp_path / "results"
    (results / "old").mkdir(parents=True)
    (results / "old" / "stale.md").write_text("from an earlier run")
    console = Console(verbose=True)
    with console.stage("evaluate") as rec:
        rec.metrics = {"test/T/balanced_accuracy": 0.75}
    dest = fetch_results(workdir, str(results), console)
    assert sorted(p.name for p in dest.iterdir()) == [
        "pipeline.json", "predictions_test_t.csv", "report.md", "summary.png", "summary.txt"
    ]  # fmt: skip
    assert "balanced_accuracy" in (dest / "summary.txt").read_text()
