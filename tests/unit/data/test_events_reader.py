"""The ``events`` corpus on real EEG (PhysioNet S001R02): each label source (the recording's own annotations, a
CSV, a BIDS tree written here), the Nyquist rule, short windows and config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.config import ConfigError, PreprocessConfig, load_config
from neurolm.data import shards
from neurolm.data.samples import fetch_sample
from neurolm.data.signal import RecordingError, SignalParams, load_recording
from neurolm.preprocess import run_preprocess


@pytest.fixture(scope="module")
def s001r02() -> Path:
    return fetch_sample("S001R02.edf")


@pytest.fixture(scope="module")
def processed(s001r02: Path) -> np.ndarray:
    """S001R02 as the events corpus processes it (0.1-75 Hz, 60 Hz notch, 200 Hz), (64, 12200)."""
    return load_recording(s001r02, SignalParams(notch=60.0)).data


def _run(tmp_path: Path, corpus_dir: Path, *overrides: str) -> tuple[dict, dict]:
    cfg = load_config(
        PreprocessConfig,
        overrides=[
            "corpus=events",
            f"input={corpus_dir}",
            f"output={tmp_path / 'out'}",
            "notch=60",
            *overrides,
        ],
    )
    summary = run_preprocess(cfg, progress=False, executor="inline")
    manifest = json.loads((tmp_path / "out" / "events" / "_manifest.json").read_text())
    return summary, manifest


def _rows(tmp_path: Path) -> dict[str, np.ndarray]:
    table = shards.read_shards(str(tmp_path / "out" / "events"))
    table = table.sort_by([("recording", "ascending"), ("start_s", "ascending")])
    signals = np.stack(shards.table_to_signals(table))
    return {
        "signal": signals,
        "label": np.asarray(table.column("label").to_pylist()),
        "start_s": np.asarray(table.column("start_s").to_pylist()),
        "subject": np.asarray(table.column("subject").to_pylist()),
        "split": np.asarray(table.column("split").to_pylist()),
    }


def _copy(s001r02: Path, folder: Path) -> Path:
    (folder / "S001").mkdir(parents=True)
    return Path(shutil.copy(s001r02, folder / "S001" / "S001R02.edf"))


def test_own_annotations(tmp_path, s001r02, processed):
    # S001R02 (baseline, eyes open) carries one EDF+ annotation: T0 at 0 s for 60.2 s. (T1/T2 are in the task runs.)
    raw = mne.io.read_raw(s001r02, verbose="error")
    assert list(raw.annotations.description) == ["T0"] and raw.annotations.duration[0] == pytest.approx(60.2)
    _copy(s001r02, tmp_path / "in")
    summary, manifest = _run(tmp_path, tmp_path / "in", "window_s=4", "events.trial_start_offset_s=1")
    # Trial [1, 60.2] s -> 4-s windows at 1, 5, ..., 53 (the remainder is dropped): 14 samples of label 0.
    assert summary["samples"] == {"train": 14} and summary["written"] == 1
    assert manifest["events"]["label_mapping"] == {"T0": 0} and manifest["events"]["source"] == "annotations"
    assert manifest["events"]["window_s"] == 4 and manifest["events"]["band_changes"] == []
    rows = _rows(tmp_path)
    assert rows["start_s"].tolist() == [1.0 + 4 * k for k in range(14)]
    assert set(rows["label"].tolist()) == {0} and set(rows["subject"].tolist()) == {"S001"}
    # Each sample is the real processed recording at its place.
    np.testing.assert_allclose(rows["signal"][3], processed[:, 13 * 200 : 17 * 200], atol=1e-6)
    # Without a window length the trial is one window of its whole seconds (60.2 s -> 60 s).
    shutil.rmtree(tmp_path / "out")
    summary, manifest = _run(tmp_path, tmp_path / "in")
    assert summary["samples"] == {"train": 1} and manifest["events"]["window_s"] == 60
    # A regex that keeps nothing is one clear error.
    with pytest.raises(RecordingError, match="no labelled trial found"):
        _run(tmp_path, tmp_path / "in", "events.regex=T[12]")


def test_csv_labels(tmp_path, s001r02, processed):
    _copy(s001r02, tmp_path / "in")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,start,stop,label\n"
        "S001/S001R02.edf,2.0,6.5,rest\n"  # 4.5 s
        "S001R02.edf,10,14.2,fist\n"  # bare file name, 4.2 s
        "S001/S001R02.edf,30.5,39,rest\n"  # 8.5 s -> two 4-s windows
        "S001/S001R02.edf,58,64,fist\n"  # runs past the 61-s recording: dropped with a warning
    )
    summary, manifest = _run(tmp_path, tmp_path / "in", f"events.csv={labels}")
    # No window_s: the shortest trial (4.2 s) rounded down -> 4 s.
    assert manifest["events"]["label_mapping"] == {"fist": 0, "rest": 1}  # sorted names
    assert manifest["events"]["window_s"] == 4 and manifest["events"]["source"] == "csv"
    rows = _rows(tmp_path)
    assert rows["start_s"].tolist() == [2.0, 10.0, 30.5, 34.5]
    assert rows["label"].tolist() == [1, 0, 1, 1]
    np.testing.assert_allclose(rows["signal"][2], processed[:, 6100:6900], atol=1e-6)
    record = manifest["recordings"][0]
    assert any("reach outside" in w for w in record["warnings"])
    # An explicit mapping wins and drops names it lacks.
    shutil.rmtree(tmp_path / "out")
    _, manifest = _run(tmp_path, tmp_path / "in", f"events.csv={labels}", "events.mapping={rest: 1}")
    assert manifest["events"]["label_mapping"] == {"rest": 1} and _rows(tmp_path)["label"].tolist() == [
        1,
        1,
        1,
    ]
    # A bad row names its line.
    bad = tmp_path / "bad.csv"
    bad.write_text("file,start,stop,label\nS001R02.edf,5,3,rest\n")
    with pytest.raises(RecordingError, match="line 2: need start < stop"):
        _run(tmp_path, tmp_path / "in", f"events.csv={bad}")
    bad.write_text("file,start,stop,label\nnope.edf,1,3,rest\n")
    with pytest.raises(RecordingError, match="line 2: file 'nope.edf' is not a recording under input"):
        _run(tmp_path, tmp_path / "in", f"events.csv={bad}")


def _write_bids(root: Path, raw: mne.io.BaseRaw, subjects: list[str]) -> None:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "S001R02 as BIDS", "BIDSVersion": "1.8.0"})
    )
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{s}\tn/a\n" for s in subjects)
    )
    for k, subject in enumerate(subjects):
        eeg = root / f"sub-{subject}" / "eeg"
        eeg.mkdir(parents=True)
        # Each subject gets a different 30-s stretch of the real recording, written as EDF.
        part = raw.copy().crop(tmin=10.0 * k, tmax=10.0 * k + 30.0, include_tmax=False)
        part.set_annotations(None)
        mne.export.export_raw(eeg / f"sub-{subject}_task-rest_eeg.edf", part, fmt="edf", verbose="error")
        (eeg / f"sub-{subject}_task-rest_events.tsv").write_text(
            "onset\tduration\ttrial_type\tvalue\n"
            "1.0\t5.0\teyes_open\t1\n"
            "12.0\t5.0\teyes_closed\t2\n"
            "20.0\tn/a\tn/a\t3\n"  # no label: skipped
        )


def test_bids_events_tsv(tmp_path, s001r02):
    raw = mne.io.read_raw(s001r02, preload=True, verbose="error")
    _write_bids(tmp_path / "bids", raw, ["01", "02", "03"])
    summary, manifest = _run(tmp_path, tmp_path / "bids", "window_s=2", "split_fractions=[0.34,0.33,0.33]")
    assert manifest["events"]["source"] == "bids"  # found by dataset_description.json
    assert manifest["events"]["label_mapping"] == {"eyes_closed": 0, "eyes_open": 1}
    rows = _rows(tmp_path)
    assert sorted(set(rows["subject"].tolist())) == ["01", "02", "03"]
    # One subject per split, all samples of a subject in one split.
    assert sorted(set(rows["split"].tolist())) == ["test", "train", "val"]
    assert all(len(set(rows["split"][rows["subject"] == s].tolist())) == 1 for s in ("01", "02", "03"))
    # Per subject: two 5-s trials -> two 2-s windows each.
    assert summary["written"] == 3 and sum(summary["samples"].values()) == 12
    first = rows["subject"] == "01"
    assert rows["start_s"][first].tolist() == [1.0, 3.0, 12.0, 14.0]
    assert rows["label"][first].tolist() == [1, 1, 0, 0]
    # The events file is a source of the recording (its changes redo it).
    assert manifest["recordings"][0]["sources"][1]["path"].endswith("_events.tsv")


def test_nyquist_rule_lowers_the_band_edge(tmp_path, s001r02):
    raw = mne.io.read_raw(s001r02, preload=True, verbose="error").resample(100.0, verbose="error")
    (tmp_path / "in" / "S001").mkdir(parents=True)
    mne.export.export_raw(tmp_path / "in" / "S001" / "S001R02_100Hz.edf", raw, fmt="edf", verbose="error")
    summary, manifest = _run(tmp_path, tmp_path / "in", "window_s=4")
    assert summary["written"] == 1
    change = manifest["events"]["band_changes"][0]
    assert change["source_sfreq"] == 100.0 and change["h_freq"] == 45.0 and change["notch"] is None
    assert any("h_freq lowered from 75 to 45 Hz" in w for w in manifest["recordings"][0]["warnings"])
    assert any("notch at 60 Hz dropped" in w for w in manifest["recordings"][0]["warnings"])

    # Above the lowered edge the band-pass removed what the 100-Hz source had: the share of 48-50 Hz power
    # (relative to 10-40 Hz) drops by more than 10x against the source.
    def share(x: np.ndarray, sfreq: float) -> float:
        power = np.abs(np.fft.rfft(x * np.hanning(x.shape[-1]), axis=-1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
        return float(
            power[..., (freqs > 48) & (freqs < 50)].sum() / power[..., (freqs > 10) & (freqs < 40)].sum()
        )

    source = raw.get_data(units="uV")[:, : 15 * 400].reshape(64, 15, 400).transpose(1, 0, 2)
    assert share(_rows(tmp_path)["signal"].astype(np.float64), 200.0) < 0.1 * share(source, 100.0)
    # Configurable: the fraction of Nyquist, or refusing as the other corpora do.
    shutil.rmtree(tmp_path / "out")
    _, manifest = _run(tmp_path, tmp_path / "in", "window_s=4", "events.nyquist_fraction=0.8")
    assert manifest["events"]["band_changes"][0]["h_freq"] == 40.0
    shutil.rmtree(tmp_path / "out")
    summary, manifest = _run(tmp_path, tmp_path / "in", "window_s=4", "events.nyquist=refuse")
    assert summary["failed"] == 1 and "sampling rate 100 Hz is too low" in manifest["recordings"][0]["reason"]


def test_short_windows(tmp_path, s001r02, processed):
    _copy(s001r02, tmp_path / "in")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,start,stop,label\nS001R02.edf,10,10.5,a\nS001R02.edf,20,20.25,b\nS001R02.edf,30,32,a\n"
    )
    with pytest.raises(
        RecordingError, match=r"2 of 3 trials are shorter than the 1-s window \(shortest 0.250 s"
    ):
        _run(tmp_path, tmp_path / "in", f"events.csv={labels}")
    _, manifest = _run(tmp_path, tmp_path / "in", f"events.csv={labels}", "events.short_windows=pad")
    rows = _rows(tmp_path)
    assert manifest["events"]["window_s"] == 1 and rows["signal"].shape == (4, 64, 200)
    assert rows["start_s"].tolist() == [10.0, 20.0, 30.0, 31.0]
    np.testing.assert_allclose(rows["signal"][0][:, :100], processed[:, 2000:2100], atol=1e-6)
    assert not rows["signal"][0][:, 100:].any() and not rows["signal"][1][:, 50:].any()
    shutil.rmtree(tmp_path / "out")
    _run(tmp_path, tmp_path / "in", f"events.csv={labels}", "events.short_windows=extend")
    rows = _rows(tmp_path)
    # The 1 s of real EEG centred on each short trial: [9.75, 10.75) and [19.625, 20.625).
    assert rows["start_s"].tolist() == [9.75, 19.625, 30.0, 31.0]
    np.testing.assert_allclose(rows["signal"][1], processed[:, 3925:4125], atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "events.short_windows=stretch",
            "events.short_windows = \"stretch\": Input should be 'refuse', 'pad' or 'extend'",
        ),
        ("events.regex=(", 'events.regex = "(": Value error, not a regular expression'),
        (
            "events.csv=/nonexistent/labels.csv",
            'events.csv = "/nonexistent/labels.csv": Value error, no such file',
        ),
        ("events.mapping={a: -1}", "events.mapping = {...}: Value error, class indices must be >= 0"),
        ("events.nyquist_fraction=1.5", "events.nyquist_fraction = 1.5: Input should be less than 1"),
        ("events.source=csv", "events = {...}: Value error, source = 'csv' needs events.csv"),
        ("events.offset=1", "events.offset = 1: unknown key"),
    ],
)
def test_config_errors_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(
            PreprocessConfig, overrides=["corpus=events", f"input={tmp_path}", "output=out", override]
        )
    assert message in str(err.value)
