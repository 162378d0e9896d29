"""The leakage guard on corpus-layout trees: TUEG recordings of subjects held out by TUAB (val/test) never reach
the pre-training shards, what was excluded is written down, and the order of preprocessing does not matter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurolm import storage
from neurolm.config import PreprocessConfig, load_config
from neurolm.data import leakage, shards, synthetic
from neurolm.preprocess import run_preprocess


def _cfg(corpus: str, tree: Path, out: Path, *overrides: str) -> PreprocessConfig:
    return load_config(
        PreprocessConfig,
        overrides=[
            f"corpus={corpus}",
            f"input={tree}",
            f"output={out}",
            "split_fractions=[0.5,0.25,0.25]",
            *overrides,
        ],
    )


def _subjects_in_shards(dataset: Path) -> set[str]:
    if not list(dataset.rglob("part-*.parquet")):
        return set()
    return set(shards.read_shards(str(dataset)).column("subject").to_pylist())


@pytest.fixture(scope="module")
def tuab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A TUAB tree (6 train-folder subjects -> train/val, 6 eval subjects -> test) and its split by subject."""
    root = tmp_path_factory.mktemp("tuab")
    tree = synthetic.make_tuab_tree(root / "tree", subjects_per_folder=3, seconds=21.0)
    run_preprocess(_cfg("tuab", tree, root / "probe"), progress=False, executor="inline")
    manifest = shards.read_manifest(str(root / "probe" / "tuab"))
    return tree, {r["subject"]: r["split"] for r in manifest["recordings"]}


def _tueg_tree(root: Path, split_of: dict[str, str]) -> tuple[Path, dict[str, str]]:
    pick = {
        split: sorted(s for s, sp in split_of.items() if sp == split)[0] for split in ("test", "val", "train")
    }
    # The test subject first: make_tueg_tree also gives it a second (linked-ears) session.
    subjects = [pick["test"], pick["val"], pick["train"], "zzzzzzzz"]
    return synthetic.make_tueg_tree(root, subjects=subjects, seconds=70.0), pick


def test_guard_excludes_held_out_subjects_and_records_them(tmp_path, tuab):
    tree, split_of = tuab
    out = tmp_path / "shards"
    run_preprocess(_cfg("tuab", tree, out), progress=False, executor="inline")
    tueg, pick = _tueg_tree(tmp_path / "tueg", split_of)
    summary = run_preprocess(_cfg("tueg", tueg, out), progress=False, executor="inline")
    # Kept: the TUAB train subject and the subject TUAB never saw.
    assert _subjects_in_shards(out / "tueg") == {pick["train"], "zzzzzzzz"}
    assert summary["recordings"] == 2
    report = json.loads((out / "tueg" / leakage.LEAKAGE_NAME).read_text())
    assert report["planned"] == 5 and report["kept"] == 2
    assert [d["dataset"] for d in report["downstream"]] == ["tuab"]
    assert report["downstream"][0]["held_out_subjects"] == sum(
        s in ("val", "test") for s in split_of.values()
    )
    excluded = {e["recording"]: e["reasons"] for e in report["excluded"]}
    test_subject, val_subject = pick["test"], pick["val"]
    assert excluded[f"000/{test_subject}/s001_2015/01_tcp_ar/{test_subject}_s001_t000"] == [
        f"subject {test_subject} in tuab/test",
        f"recording {test_subject}_s001_t000 in tuab/test",
    ]
    # Another session of a held-out subject goes too (by subject; its file name is in no downstream split).
    assert excluded[f"000/{test_subject}/s002_2016/02_tcp_le/{test_subject}_s002_t000"] == [
        f"subject {test_subject} in tuab/test"
    ]
    assert excluded[f"000/{val_subject}/s001_2015/01_tcp_ar/{val_subject}_s001_t000"][0] == (
        f"subject {val_subject} in tuab/val"
    )
    manifest = shards.read_manifest(str(out / "tueg"))
    assert manifest["leakage"] == report
    # Downstream datasets are never filtered.
    assert shards.read_manifest(str(out / "tuab"))["summary"]["recordings"] == 12
    # Recording-only matching keeps the held-out subject's other session (a TUH file name carries its subject).
    run_preprocess(_cfg("tueg", tueg, out, "leakage.match=[recording]"), progress=False, executor="inline")
    report = json.loads((out / "tueg" / leakage.LEAKAGE_NAME).read_text())
    assert report["kept"] == 3 and len(report["excluded"]) == 2


def test_order_of_preprocessing_does_not_matter(tmp_path, tuab):
    tree, split_of = tuab
    out = tmp_path / "shards"
    tueg, pick = _tueg_tree(tmp_path / "tueg", split_of)
    # Pre-training corpus first: nothing to compare against, so everything is kept and the report says why.
    first = run_preprocess(_cfg("tueg", tueg, out), progress=False, executor="inline")
    report = json.loads((out / "tueg" / leakage.LEAKAGE_NAME).read_text())
    assert report["downstream"] == [] and "no downstream manifest found" in report["note"]
    assert _subjects_in_shards(out / "tueg") == {pick["test"], pick["val"], pick["train"], "zzzzzzzz"}
    assert first["written"] == 4 and first["skipped"] == 1  # the linked-ears session
    # Downstream next, then the pre-training corpus again: the held-out recordings and their shards go, the rest
    # is reused untouched.
    run_preprocess(_cfg("tuab", tree, out), progress=False, executor="inline")
    kept_shards = {
        p.name: p.read_bytes() for p in (out / "tueg").rglob("part-*.parquet") if "zzzzzzzz" in p.name
    }
    again = run_preprocess(_cfg("tueg", tueg, out), progress=False, executor="inline")
    assert (again["reused"], again["processed"]) == (2, 0)
    assert _subjects_in_shards(out / "tueg") == {pick["train"], "zzzzzzzz"}
    assert not any(pick["test"] in p.name for p in (out / "tueg").rglob("*"))
    assert {
        p.name: p.read_bytes() for p in (out / "tueg").rglob("part-*.parquet") if "zzzzzzzz" in p.name
    } == (kept_shards)


def test_guard_can_be_turned_off_or_pointed_at_datasets(tmp_path, tuab):
    tree, split_of = tuab
    out = tmp_path / "shards"
    run_preprocess(_cfg("tuab", tree, tmp_path / "elsewhere"), progress=False, executor="inline")
    tueg, pick = _tueg_tree(tmp_path / "tueg", split_of)
    run_preprocess(_cfg("tueg", tueg, out, "leakage.enabled=false"), progress=False, executor="inline")
    assert json.loads((out / "tueg" / leakage.LEAKAGE_NAME).read_text()) == {"enabled": False, "excluded": []}
    assert len(_subjects_in_shards(out / "tueg")) == 4
    # Downstream datasets stored elsewhere are named explicitly.
    downstream = f"leakage.downstream=[{tmp_path / 'elsewhere' / 'tuab'}]"
    run_preprocess(_cfg("tueg", tueg, out, downstream), progress=False, executor="inline")
    assert _subjects_in_shards(out / "tueg") == {pick["train"], "zzzzzzzz"}
    with pytest.raises(storage.StorageError, match="leakage.downstream: no readable _manifest.json"):
        run_preprocess(
            _cfg("tueg", tueg, out, f"leakage.downstream=[{tmp_path / 'nope'}]"), executor="inline"
        )


def test_held_out_reads_per_sample_splits():
    # SEED/.ts-style records: the split is per sample, given by the record's sample counts.
    manifest = {
        "dataset": "seed",
        "corpus": "seed",
        "recordings": [
            {"recording": "1_20131027", "subject": "1", "split": None, "n_samples": {"train": 9, "test": 3}},
            {"recording": "2_20131030", "subject": "2", "split": None, "n_samples": {"train": 12}},
            {"recording": "3_20131101", "subject": "3", "split": "val", "n_samples": {}},
        ],
    }
    held = leakage.held_out({"s3://b/seed": manifest}, ("val", "test"))
    assert held.subjects == {"1": {"seed/test"}, "3": {"seed/val"}}
    assert set(held.recordings) == {"1_20131027", "3_20131101"}
    assert held.sources[0]["held_out_subjects"] == 2
