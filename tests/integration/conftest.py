"""Integration fixtures: real sample EEG preprocessed into shards on the local S3 server, and text shards."""

from __future__ import annotations

import pytest

from neurolm import storage
from neurolm.config import PreprocessConfig, load_config


@pytest.fixture(scope="session")
def eeg_shards(ray_cluster: None, s3_uri: str) -> dict[str, str]:
    """S001R02 (PhysioNet, 64 ch, 4-s windows) and SelfRegulationSCP1 (6 ch, labelled) as shards on S3."""
    from neurolm.data.samples import fetch_sample
    from neurolm.preprocess import run_preprocess

    root = storage.join(s3_uri, "shards")
    runs = [
        ("edf", str(fetch_sample("S001R02.edf")), "mmidb", ["window_s=4", "notch=60"]),
        ("ts", str(fetch_sample("SelfRegulationSCP1")), "SelfRegulationSCP1", []),
    ]
    for corpus, path, dataset, overrides in runs:
        cfg = load_config(PreprocessConfig, None, overrides, base={
            "corpus": corpus, "input": path, "output": root, "dataset": dataset,
        })
        summary = run_preprocess(cfg, progress=False)
        assert summary["failed"] == 0, summary
    return {
        "mmidb_train": storage.join(root, "mmidb", "train"),
        "scp1_train": storage.join(root, "SelfRegulationSCP1", "train"),
        "scp1_val": storage.join(root, "SelfRegulationSCP1", "val"),
        "scp1_test": storage.join(root, "SelfRegulationSCP1", "test"),
    }


@pytest.fixture(scope="session")
def text_shards(s3_uri: str) -> str:
    """GPT-2 token shards of Python's own documentation (offline English text) on S3."""
    from neurolm.data.text import prepare

    uri = storage.join(s3_uri, "text")
    prepare([], uri, window=129, builtin="python-docs")
    return storage.join(uri, "train")
