"""``neurolm runs`` and ``neurolm s3 get`` on run directories written by the training code's own writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neurolm import storage
from neurolm.cli import main as neurolm_main
from neurolm.models.io import save_pretrained
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.runs import copy_tree, describe_run, list_runs
from neurolm.train.checkpoint import TrainState
from neurolm.train.loop import MetricsHistory


def write_run(root: str, name: str, steps: list[int], stage: str = "tokenizer", export: bool = True) -> str:
    """A run as the training loop leaves it: metrics.jsonl (MetricsHistory), step_<n>/state.json (TrainState),
    export/ (save_pretrained)."""
    run = storage.join(root, name)
    history = MetricsHistory(storage.join(run, "metrics.jsonl"), resumed_step=0)
    for step in steps:
        history.append({"train/loss": 1.0 / step, "perf/samples_per_s": 30.0, "step": step, "epoch": 0})
    history.append({"val/loss": 0.25, "step": steps[-1], "epoch": 0})
    for step in steps[-2:]:
        state = TrainState(step=step, samples=8 * step, world_size=2, config={"stage": stage})
        storage.write_text(storage.join(run, f"step_{step:07d}", "state.json"), state.to_json())
    if export:
        torch.manual_seed(0)
        save_pretrained(NeuralTokenizer(TokenizerConfig.preset("tiny")), storage.join(run, "export"))
    storage.write_text(storage.join(run, "final_metrics.json"), json.dumps({"train/loss": 1.0 / steps[-1]}))
    return run


def test_describe_run_reads_stage_step_metrics_checkpoints_and_export(tmp_path: Path) -> None:
    run = write_run(str(tmp_path), "demo-tokenizer", [5, 10, 15])
    info = describe_run(run)
    assert info["name"] == "demo-tokenizer" and info["stage"] == "tokenizer"
    assert info["step"] == 15 and info["reports"] == 4
    # The last value of each metric, including the one reported only at validation.
    assert info["last_metrics"]["train/loss"] == pytest.approx(1 / 15)
    assert info["last_metrics"]["val/loss"] == 0.25
    assert [c["step"] for c in info["checkpoints"]] == [10, 15]
    assert info["checkpoints"][-1]["samples"] == 120
    assert info["export"] is not None and "model.safetensors" in info["export"]["files"]
    assert info["final_metrics"] == {"train/loss": pytest.approx(1 / 15)}


def test_list_runs_finds_runs_below_a_pipeline_workdir(tmp_path: Path) -> None:
    runs_root = storage.join(str(tmp_path), "runs")
    write_run(runs_root, "demo-tokenizer", [5, 10])
    write_run(runs_root, "demo-instruct", [25, 50], stage="instruct", export=False)
    storage.write_text(storage.join(str(tmp_path), "eval", "report.md"), "# report\n")  # not a run
    for root in (str(tmp_path), runs_root):  # the workdir or its runs/ directly
        runs = list_runs(root)
        assert [r["name"] for r in runs] == ["demo-instruct", "demo-tokenizer"]
        assert [r["stage"] for r in runs] == ["instruct", "tokenizer"]
        assert runs[0]["export"] is None and runs[1]["export"] is not None


def test_runs_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(storage.join(str(tmp_path), "runs"), "demo-pretrain", [10, 20], stage="pretrain")
    assert neurolm_main(["runs", "list", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["run", "stage", "step", "ckpts", "export"]
    assert table[2].split()[:5] == ["demo-pretrain", "pretrain", "20", "2", "yes"]
    assert "train/loss=0.05" in table[2]

    run = storage.join(str(tmp_path), "runs", "demo-pretrain")
    assert neurolm_main(["runs", "show", run, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["step"] == 20 and [c["name"] for c in shown["checkpoints"]] == [
        "step_0000010",
        "step_0000020",
    ]

    assert neurolm_main(["runs", "show", run]) == 0
    text = capsys.readouterr().out
    assert "step_0000020" in text and "export" in text and "val/loss" in text


def test_runs_show_of_a_missing_run_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert neurolm_main(["runs", "show", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_copy_tree_copies_a_file_or_a_prefix(tmp_path: Path) -> None:
    run = write_run(str(tmp_path / "src"), "r", [5, 10])
    dest = tmp_path / "dest"
    written = copy_tree(run, dest)
    assert (dest / "metrics.jsonl").read_bytes() == storage.read_bytes(storage.join(run, "metrics.jsonl"))
    assert (dest / "step_0000010" / "state.json").exists() and (
        dest / "export" / "model.safetensors"
    ).exists()
    assert len(written) == len(storage.list_files(run))
    one = copy_tree(storage.join(run, "final_metrics.json"), tmp_path / "one.json")
    assert one == [tmp_path / "one.json"] and json.loads(one[0].read_text())
    with pytest.raises(storage.StorageError):
        copy_tree(storage.join(run, "missing.json"), tmp_path / "x")


@pytest.mark.s3
@pytest.mark.slow
def test_runs_and_s3_get_against_the_local_s3_server(s3_uri: str, tmp_path: Path, capsys) -> None:
    root = storage.join(s3_uri, "runs-cli", "runs")
    run = write_run(root, "demo-instruct", [25, 50], stage="instruct")
    assert neurolm_main(["runs", "list", root, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["stage"], r["step"]) for r in runs] == [("demo-instruct", "instruct", 50)]
    assert runs[0]["export"]["uri"] == storage.join(run, "export")

    dest = tmp_path / "got"
    assert neurolm_main(["s3", "get", run, str(dest)]) == 0
    assert (dest / "export" / "model.safetensors").read_bytes() == storage.read_bytes(
        storage.join(run, "export", "model.safetensors")
    )
    assert neurolm_main(["s3", "get", storage.join(run, "metrics.jsonl"), str(tmp_path)]) == 0
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3
    assert neurolm_main(["s3", "get", storage.join(run, "nothing-here"), str(tmp_path)]) == 2


def test_runs_rm_says_what_it_would_remove_then_removes_only_that(tmp_path: Path, capsys) -> None:
    root = storage.join(str(tmp_path / "work"), "runs")
    keep = write_run(root, "demo-tokenizer", [5])
    gone = write_run(root, "demo-pretrain", [5, 10], stage="pretrain")
    n = len(storage.list_files(gone))
    size = sum(b for _, b in storage.list_file_sizes(gone))

    assert neurolm_main(["runs", "list", str(tmp_path / "work"), "--json"]) == 0
    assert {r["name"]: r["bytes"] for r in json.loads(capsys.readouterr().out)}["demo-pretrain"] == size

    assert neurolm_main(["runs", "rm", gone, "--json"]) == 0  # no --yes: nothing removed
    said = json.loads(capsys.readouterr().out)
    assert (said["files"], said["bytes"], said["removed"]) == (n, size, False)
    assert len(storage.list_files(gone)) == n

    assert neurolm_main(["runs", "rm", gone, "--yes"]) == 0
    assert capsys.readouterr().out.startswith(f"removed {n} files")
    assert storage.list_files(gone) == [] and storage.list_files(keep)
    assert neurolm_main(["runs", "rm", gone, "--yes"]) == 0
    assert "nothing there" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["s3://neurolm", "s3://neurolm/", "/", "~", "."])
def test_runs_rm_refuses_a_bucket_or_a_root_in_one_line(target: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: refused before any listing
    assert neurolm_main(["runs", "rm", str(Path(target).expanduser()) if target == "~" else target, "--yes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to remove" in err[0]
