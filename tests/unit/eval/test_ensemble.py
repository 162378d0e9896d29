"""Ensemble evaluation (docs/recipe.md §13): rows combined across members, the members' table in the report, and
the configs that refuse an ensemble that would count one model twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolm.config import ConfigError

SCP1 = str(Path(__file__).resolve().parents[3] / "configs" / "pipeline" / "scp1.yaml")


def _rows(probs: list[list[float]], ids=("a", "b", "c"), labels=(0, 1, 1)) -> dict[str, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    return {"sample_id": np.asarray(ids, dtype=object), "label": np.asarray(labels), "probs": p,
            "pred": p.argmax(axis=1), "truncated": np.zeros(len(ids), bool),
            "gen_pred": np.zeros(len(ids), np.int64), "generated": np.asarray(["x"] * len(ids), dtype=object)}  # fmt: skip


def test_ensemble_rows_average_the_members_probabilities_and_answer_by_their_argmax() -> None:
    from neurolm.eval.evaluate import ensemble_rows

    m0 = [_rows([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])]
    m1 = [_rows([[0.7, 0.3], [0.1, 0.9], [0.45, 0.55]])]
    (rows,) = ensemble_rows([m0, m1], ["T"])
    np.testing.assert_allclose(rows["probs"], [[0.8, 0.2], [0.35, 0.65], [0.325, 0.675]])
    assert rows["pred"].tolist() == [0, 1, 1]  # member 0 alone answers row b with class 0
    assert list(rows["sample_id"]) == ["a", "b", "c"] and rows["label"].tolist() == [0, 1, 1]
    assert "gen_pred" not in rows and "generated" not in rows  # an ensemble does not generate


@pytest.mark.parametrize("change", [{"ids": ("a", "b", "d")}, {"labels": (0, 1, 0)}, {"ids": ("a", "b")}])
def test_ensemble_rows_refuse_members_that_scored_other_rows(change) -> None:
    from neurolm.eval.evaluate import ensemble_rows

    n = len(change.get("ids", "abc"))
    m1 = [_rows([[0.5, 0.5]] * n, **change)]
    with pytest.raises(ValueError, match="T: ensemble member 1 scored other rows or labels than member 0"):
        ensemble_rows([[_rows([[0.5, 0.5]] * 3)], m1], ["T"])


def test_the_report_puts_each_member_beside_the_ensemble() -> None:
    from neurolm.eval.report import ensemble_markdown

    members = [{"checkpoint": "s3://b/s1/export", "metrics": {"balanced_accuracy": 0.81, "roc_auc": 0.9}},
               {"checkpoint": "s3://b/s2/export", "metrics": {"balanced_accuracy": 0.84, "collapsed": True}}]  # fmt: skip
    report = {"tasks": {"test/T": {"metrics": {"balanced_accuracy": 0.87, "roc_auc": 0.95}, "members": members},
                        "test/U": {"metrics": {"balanced_accuracy": 0.5}}}}  # fmt: skip
    md = ensemble_markdown(report)
    lines = [line for line in md.splitlines() if line.startswith("| test/")]
    assert lines == [
        "| test/T | member 0 (`s3://b/s1/export`) | 0.8100 | – | 0.9000 | no |",
        "| test/T | member 1 (`s3://b/s2/export`) | 0.8400 | – | – | yes |",
        "| test/T | **ensemble of 2** | 0.8700 | – | 0.9500 | no |",
    ]
    assert ensemble_markdown({"tasks": {"test/U": report["tasks"]["test/U"]}}) == ""


def test_an_evaluation_refuses_a_member_listed_twice() -> None:
    from neurolm.eval.evaluate import _check_config, evaluation_config

    cfg = evaluation_config(checkpoint="/m/a", ensemble=["/m/b", "/m/a"], output="/tmp/out",
                            tasks=[{"name": "SelfRegulationSCP1", "test": "/shards/test"}])  # fmt: skip
    with pytest.raises(ConfigError, match=r"ensemble: \['/m/a'\] listed more than once"):
        _check_config(cfg)


def test_the_pipeline_refuses_a_seed_given_twice() -> None:
    from neurolm.config import load_config
    from neurolm.pipeline import PipelineConfig

    with pytest.raises(ConfigError, match=r"seeds.*seed\(s\) \[2\] appear more than once"):
        load_config(PipelineConfig, SCP1, ["seeds=[2,3,2]"])
    assert load_config(PipelineConfig, SCP1, ["seeds=[1234,2,3]"]).seeds == [1234, 2, 3]


def test_members_tuned_with_other_eeg_lengths_are_refused_before_scoring(tmp_path) -> None:
    import json

    from neurolm.eval.evaluate import evaluate_checkpoint, evaluation_config

    for name, length in (("a", 48), ("b", 64)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"extra": {"eeg_max_len": length}}))
    (tmp_path / "test").mkdir()  # no shards: scoring would fail, so the error must come first
    cfg = evaluation_config(checkpoint=str(tmp_path / "a"), ensemble=[str(tmp_path / "b")], concurrency=0,
                            output=str(tmp_path / "out"),
                            tasks=[{"name": "SelfRegulationSCP1", "test": str(tmp_path / "test")}])  # fmt: skip
    with pytest.raises(ConfigError, match=r"ensemble.0 \(.*/b\): tuned with 64 EEG tokens per sample, the checkpoint with 48"):
        evaluate_checkpoint(cfg)


def test_members_at_once_needs_seeds() -> None:
    from neurolm.config import load_config
    from neurolm.pipeline import PipelineConfig

    with pytest.raises(ConfigError, match=r"members_at_once=2 needs two or more seeds \(seeds: \[\]\)"):
        load_config(PipelineConfig, SCP1, ["seeds=[]", "members_at_once=2"])
    with pytest.raises(ConfigError, match="members_at_once"):
        load_config(PipelineConfig, SCP1, ["members_at_once=0"])
    assert load_config(PipelineConfig, SCP1, ["members_at_once=3"]).members_at_once == 3


def test_side_by_side_members_overlap_keep_their_order_and_stop_at_a_failure() -> None:
    import threading
    import time

    from neurolm.pipeline import _side_by_side

    both_running = threading.Barrier(2, timeout=10)  # one after the other, the first call would wait forever

    def fit(seed: int) -> str:
        both_running.wait()
        time.sleep(0.05 * seed)  # the second seed ends first
        return f"member {seed}"

    assert _side_by_side(fit, [2, 1], at_once=2) == ["member 2", "member 1"]
    started = []

    def failing(seed: int) -> int:
        started.append(seed)
        if seed == 1:
            raise RuntimeError("stage 3 of seed 1 failed")
        time.sleep(0.2)
        return seed

    with pytest.raises(RuntimeError, match="seed 1 failed"):
        _side_by_side(failing, [1, 2, 3, 4, 5], at_once=2)
    assert 1 in started and len(started) < 5  # seeds not yet started when it failed are not started
    assert _side_by_side(lambda s: s * 10, [1, 2], at_once=1) == [10, 20]
