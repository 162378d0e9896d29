"""``neurolm predict`` on a real recording (PhysioNet S001R02, 64 ch, 160 Hz, 61 s) with a tiny exported NeuroLM:
one row per window, probabilities per class, and clear failures for bad files and arguments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolm.eval.predict import TASK_RULES, cli, task_rules
from neurolm.models.io import save_pretrained
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig


@pytest.fixture(scope="module")
def recording() -> str:
    from neurolm.data.samples import SampleError, fetch_sample

    try:
        return str(fetch_sample("S001R02.edf"))
    except SampleError as err:
        pytest.skip(f"sample recording unavailable: {err}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    model = NeuroLM(NeuroLMConfig.preset("debug", per_sample_text_positions=True))
    return save_pretrained(model, str(tmp_path_factory.mktemp("ckpt") / "export"))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_writes_one_csv_row_per_window_with_class_probabilities(tmp_path, recording, checkpoint) -> None:
    out = tmp_path / "answers.csv"
    assert (
        cli(
            [
                "--checkpoint",
                checkpoint,
                "--task",
                "SelfRegulationSCP1",
                recording,
                "--output",
                str(out),
                "--generate",
                "--allow-channel-mismatch",  # S001R02's 64 channels are not SCP1's 6
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert len(rows) == 61 // 3  # 61 s in non-overlapping 3 s windows, remainder dropped
    assert list(rows[0]) == [
        "recording",
        "window",
        "start_s",
        "answer",
        "p_negativity",
        "p_positivity",
        "generated",
        "generated_answer",
    ]
    assert [int(r["window"]) for r in rows] == list(range(20))
    assert [float(r["start_s"]) for r in rows] == [3.0 * i for i in range(20)]
    probs = np.array([[float(r["p_negativity"]), float(r["p_positivity"])] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    answers = np.array(["negativity", "positivity"])[probs.argmax(axis=1)]
    assert [r["answer"] for r in rows] == list(answers)
    assert all(r["generated_answer"] in ("", "negativity", "positivity") for r in rows)


def test_json_output_and_window_overrides(tmp_path, recording, checkpoint) -> None:
    out = tmp_path / "answers.json"
    assert (
        cli(
            [
                "--checkpoint",
                checkpoint,
                "--task",
                "TUAB",
                recording,
                "-o",
                str(out),
                "--window-s",
                "10",
                "--hop-s",
                "5",
                "--notch",
                "60",
                "--allow-channel-mismatch",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["task"] == "TUAB" and doc["classes"] == ["No", "Yes"] and doc["window_s"] == 10.0
    assert [r["start_s"] for r in doc["rows"]] == [5.0 * i for i in range(11)]  # (61 - 10) // 5 + 1 windows
    assert all(abs(r["p_No"] + r["p_Yes"] - 1.0) < 1e-9 and r["answer"] in ("No", "Yes") for r in doc["rows"])


def test_csv_goes_to_stdout_without_output(capsys, recording, checkpoint) -> None:
    assert cli(["--checkpoint", checkpoint, "--task", "Workload", recording, "--channels", "FP1,FP2,CZ"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "recording,window,start_s,answer,p_No,p_Yes" and len(lines) == 1 + 61 // 4


def test_a_bad_file_fails_naming_file_and_reason_while_good_files_are_answered(
    tmp_path, capsys, recording, checkpoint
) -> None:
    broken = tmp_path / "broken.edf"
    broken.write_bytes(b"this is not an EDF file")
    out = tmp_path / "answers.csv"
    assert (
        cli(
            [
                "--checkpoint",
                checkpoint,
                "--task",
                "SelfRegulationSCP1",
                str(broken),
                recording,
                "-o",
                str(out),
                "--allow-channel-mismatch",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"{broken}: cannot read the recording" in err
    assert {r["recording"] for r in _rows(out)} == {"S001R02.edf"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--task", "TUAB", "--channels", "task"],
            "missing required channels",
        ),  # no A1/A2/T1/T2 in a 10-10 cap
        (["--task", "TUAB", "--window-s", "64"], "shorter than one 64 s window"),
    ],
)
def test_recordings_that_cannot_meet_the_task_rules_fail(
    tmp_path, capsys, recording, checkpoint, args, message
) -> None:
    assert cli(["--checkpoint", checkpoint, recording, "-o", str(tmp_path / "x.csv"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "NoSuchTask"], "unknown task"),
        (["--task", "TUAB", "-o", "answers.txt"], "must end in .csv or .json"),
        (["--task", "TUAB", "--window-s", "2.5"], "whole number of seconds"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(capsys, recording, checkpoint, args, message) -> None:
    assert cli(["--checkpoint", checkpoint, recording, *args]) == 2
    assert message in capsys.readouterr().err


def test_every_registered_task_has_preprocessing_rules() -> None:
    from neurolm.data.tasks import TASKS

    assert set(TASKS) == set(TASK_RULES)
    assert {name: task_rules(name).window_s for name in TASKS} == {
        "TUAB": 10,
        "TUEV": 5,
        "SEED": 4,
        "HMC": 30,
        "Workload": 4,
        "TUSL": 10,
        "SelfRegulationSCP1": 3,
        "Blink": 2,
        "EyesOpenShut": 1,
        "FingerMovements": 1,
    }
    assert task_rules("TUSL").notch_hz == 60 and task_rules("TUAB").notch_hz == 50


def test_channels_the_task_never_saw_are_refused_naming_both_sets(
    tmp_path, capsys, recording, checkpoint
) -> None:
    """S001R02 (64 channels of a 10-10 cap) holds none of SelfRegulationSCP1's 6 training channels."""
    from neurolm.data.readers.ts import KNOWN_CHANNELS

    scp1 = KNOWN_CHANNELS["SelfRegulationSCP1"]
    out = tmp_path / "answers.csv"
    assert cli(["--checkpoint", checkpoint, "--task", "SelfRegulationSCP1", recording, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"neurolm predict: {recording}: channels ")
    assert f"trained on {','.join(scp1)}" in err and "FC5" in err and "--allow-channel-mismatch" in err
    assert not out.exists()

    assert (
        cli(
            [
                "--checkpoint",
                checkpoint,
                "--task",
                "SelfRegulationSCP1",
                recording,
                "-o",
                str(out),
                "--allow-channel-mismatch",
            ]
        )
        == 0
    )
    assert "warning" in capsys.readouterr().err and len(_rows(out)) == 61 // 3


def test_a_subset_of_the_task_channels_is_answered_with_a_note(capsys, recording, checkpoint) -> None:
    assert cli(["--checkpoint", checkpoint, "--task", "Workload", recording, "--channels", "FP1,FP2,CZ"]) == 0
    captured = capsys.readouterr()
    assert "missing here: F3,F4" in captured.err and len(captured.out.splitlines()) == 1 + 61 // 4


def _metrics_json(path: Path, bias: list[float], task: str = "SelfRegulationSCP1") -> Path:
    """A metrics.json shaped as `neurolm eval` writes it, with a val-fitted bias for ``task``."""
    entry = {"task": task, "split": "test", "metrics": {"balanced_accuracy": 0.5, "calibrated/bias": bias}}
    path.write_text(json.dumps({"tasks": {f"test/{task}": entry}, "metadata": {}}))
    return path


def test_calibration_adds_the_val_fitted_answer_beside_the_raw_one(tmp_path, recording, checkpoint) -> None:
    args = ["--checkpoint", checkpoint, "--task", "SelfRegulationSCP1", recording, "--allow-channel-mismatch"]
    raw = tmp_path / "raw.csv"
    assert cli([*args, "--output", str(raw)]) == 0
    probs = np.array([[float(r["p_negativity"]), float(r["p_positivity"])] for r in _rows(raw)])
    odds = np.log(probs[:, 1]) - np.log(probs[:, 0])
    # a bias between two windows' log-odds: some answers must flip, the rest stay
    shift = -float(np.median(odds)) + 1e-9
    out = tmp_path / "calibrated.csv"
    assert cli([*args, "--output", str(out), "--calibration", str(_metrics_json(tmp_path / "m.json", [0, shift]))]) == 0
    rows = _rows(out)
    assert list(rows[0])[-1] == "calibrated_answer"
    assert [r["answer"] for r in rows] == [r["answer"] for r in _rows(raw)]  # the raw answer is kept
    expected = np.array(["negativity", "positivity"])[(odds + shift > 0).astype(int)]
    assert [r["calibrated_answer"] for r in rows] == list(expected)
    assert 0 < sum(r["calibrated_answer"] != r["answer"] for r in rows) or np.allclose(odds, odds[0])


@pytest.mark.parametrize(
    "bias, task, message",
    [
        ([0, 1.0], "Blink", "no calibrated/bias for task SelfRegulationSCP1"),
        ([0, 1.0, 2.0], "SelfRegulationSCP1", "bias of 3 classes"),
    ],
)
def test_a_calibration_file_without_the_tasks_bias_is_refused(
    tmp_path, capsys, recording, checkpoint, bias, task, message
) -> None:
    metrics = _metrics_json(tmp_path / "m.json", bias, task)
    args = ["--checkpoint", checkpoint, "--task", "SelfRegulationSCP1", recording, "--calibration", str(metrics)]
    assert cli([*args, "--allow-channel-mismatch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    missing = ["--calibration", str(tmp_path / "absent.json")]
    assert cli([*args[:-2], *missing, "--allow-channel-mismatch"]) == 2
    assert "cannot read a metrics.json" in capsys.readouterr().err


def _export_with_preprocessing(root: Path, checkpoint: str, **trained) -> str:
    """A copy of ``checkpoint`` whose config.json records SCP1's training preprocessing as stage 3 writes it."""
    import shutil

    out = root / "export"
    shutil.copytree(checkpoint, out)
    meta = json.loads((out / "config.json").read_text())
    base = {"corpus": "ts", "dataset": "SelfRegulationSCP1", "l_freq": 0.1, "h_freq": 75.0, "notch": None,
            "sfreq": 200.0, "normalize": "none", "trial_scale": "none"}  # fmt: skip
    meta["extra"]["preprocessing"] = {"SelfRegulationSCP1": {**base, **trained}}
    (out / "config.json").write_text(json.dumps(meta))
    return str(out)


def _probabilities(path: Path) -> np.ndarray:
    return np.array([[float(r["p_negativity"]), float(r["p_positivity"])] for r in _rows(path)])


def test_the_band_pass_of_the_training_data_is_the_default(tmp_path, recording, checkpoint) -> None:
    """An export that says its task's data were band-passed at 0.5-20 Hz is answered on recordings filtered the
    same way unless the command line says otherwise."""
    trained = _export_with_preprocessing(tmp_path, checkpoint, l_freq=0.5, h_freq=20.0)
    common = ["--task", "SelfRegulationSCP1", recording, "--allow-channel-mismatch"]
    runs = {
        "recorded": ["--checkpoint", trained],
        "explicit": ["--checkpoint", checkpoint, "--l-freq", "0.5", "--h-freq", "20"],
        "official": ["--checkpoint", checkpoint],
        "overridden": ["--checkpoint", trained, "--l-freq", "0.1", "--h-freq", "75"],
    }
    probs = {}
    for name, args in runs.items():
        assert cli([*args, *common, "-o", str(tmp_path / f"{name}.csv")]) == 0
        probs[name] = _probabilities(tmp_path / f"{name}.csv")
    np.testing.assert_array_equal(probs["recorded"], probs["explicit"])
    np.testing.assert_array_equal(probs["overridden"], probs["official"])
    assert np.abs(probs["recorded"] - probs["official"]).max() > 1e-6  # a random tiny model: small, not zero


def test_training_data_normalised_per_dataset_is_refused_in_one_line(tmp_path, capsys, recording, checkpoint) -> None:
    trained = _export_with_preprocessing(tmp_path, checkpoint, normalize="dataset")
    args = ["--checkpoint", trained, "--task", "SelfRegulationSCP1", recording, "--allow-channel-mismatch"]
    assert cli([*args, "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "normalize=dataset" in err[0] and "--allow-preprocessing-mismatch" in err[0], err
    assert not (tmp_path / "x.csv").exists()
    assert cli([*args, "-o", str(tmp_path / "y.csv"), "--allow-preprocessing-mismatch"]) == 0
    assert len(_rows(tmp_path / "y.csv")) == 20
