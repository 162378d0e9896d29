"""`neurolm preprocess --corpus events` through the CLI on the local Ray cluster: a BIDS tree of real EEG (three
stretches of PhysioNet S001R02, one resampled to 100 Hz) to shards that Ray Data reads back."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.data.samples import fetch_sample
from neurolm.data.shards import batch_to_signals, read_manifest
from neurolm.preprocess import cli


def write_bids(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "S001R02 BIDS", "BIDSVersion": "1.8.0"})
    )
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\nsub-03\n")
    raw = mne.io.read_raw(fetch_sample("S001R02.edf"), preload=True, verbose="error")
    for k, subject in enumerate(("01", "02", "03")):
        eeg = root / f"sub-{subject}" / "eeg"
        eeg.mkdir(parents=True)
        part = raw.copy().crop(10.0 * k, 10.0 * k + 30.0, include_tmax=False)
        part.set_annotations(None)
        if subject == "03":
            part.resample(100.0, verbose="error")  # below twice the 75-Hz edge: the Nyquist rule applies
        mne.export.export_raw(eeg / f"sub-{subject}_task-rest_eeg.edf", part, fmt="edf", verbose="error")
        (eeg / f"sub-{subject}_task-rest_events.tsv").write_text(
            "onset\tduration\ttrial_type\n1.0\t5.0\topen\n12.0\t5.0\tclosed\n22.0\t6.0\topen\n"
        )


@pytest.mark.ray
@pytest.mark.slow
def test_events_cli_on_ray(ray_cluster, tmp_path, capsys):
    import ray

    write_bids(tmp_path / "bids")
    out = tmp_path / "shards"
    argv = ["--corpus", "events", "--input", str(tmp_path / "bids"), "--output", str(out), "--no-progress",
            "window_s=2", "notch=60", "split_fractions=[0.34,0.33,0.33]"]  # fmt: skip
    assert cli(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    # Per subject: trials of 5, 5 and 6 s -> 2 + 2 + 3 two-second windows.
    assert summary["written"] == 3 and sum(summary["samples"].values()) == 21
    manifest = read_manifest(str(out / "events"))
    assert manifest["events"]["label_mapping"] == {"closed": 0, "open": 1}
    assert [c["recording"] for c in manifest["events"]["band_changes"]] == ["sub-03/eeg/sub-03_task-rest_eeg"]
    assert manifest["events"]["band_changes"][0]["h_freq"] == 45.0
    rows = (
        ray.data.read_parquet(str(out / "events"))
        .map_batches(
            lambda b: {
                "shape": np.array([s.shape for s in batch_to_signals(b)]),
                "subject": b["subject"],
                "label": b["label"],
            },
            batch_format="numpy",
            batch_size=8,
        )
        .take_all()
    )
    assert [tuple(r["shape"]) for r in rows] == [(64, 400)] * 21
    assert sorted({r["subject"] for r in rows}) == ["01", "02", "03"]
    assert sorted(int(r["label"]) for r in rows) == [0] * 6 + [1] * 15
