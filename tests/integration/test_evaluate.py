"""``neurolm eval`` on the local Ray instance and S3 server: Ray Data actors score the real SelfRegulationSCP1 test
shards, the report lands on S3, and the distributed rows equal in-process scoring. ``neurolm predict`` reads its
checkpoint from and writes its answers to S3."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolm import storage

REPO = Path(__file__).resolve().parents[2]
TASK = "SelfRegulationSCP1"

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module")
def instruct_export(request: pytest.FixtureRequest, s3_uri: str) -> str:
    """The pipeline's instruction-tuned export when the session has one, else a tiny untrained NeuroLM on S3
    (the evaluation path does not depend on what the model learnt)."""
    try:
        return request.getfixturevalue("debug_pipeline")["instruct_export"]
    except pytest.FixtureLookupError:
        from neurolm.models.io import save_pretrained
        from neurolm.models.neurolm import NeuroLM, NeuroLMConfig

        torch.manual_seed(0)
        model = NeuroLM(NeuroLMConfig.preset("debug", per_sample_text_positions=True))
        return save_pretrained(model, storage.join(s3_uri, "eval-test", "export"))


def _csv(uri: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(storage.read_text(uri))))


def test_actor_evaluation_writes_the_report_to_s3(eeg_shards, instruct_export, s3_uri, capsys) -> None:
    from neurolm.eval.evaluate import cli

    output = storage.join(s3_uri, "eval-test", "report")
    tasks = (
        f"tasks=[{{name: {TASK}, test: '{eeg_shards['scp1_test']}', calibrate_on: '{eeg_shards['scp1_val']}'}}, "
        f"{{name: {TASK}, test: '{eeg_shards['scp1_val']}', split: val}}]"
    )  # two streams, one actor pool
    code = cli(
        [
            "--config",
            str(REPO / "configs/evaluate/debug.yaml"),
            f"checkpoint={instruct_export}",
            tasks,
            f"output={output}",
            "concurrency=2",
            "batch_size=48",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    key = f"test/{TASK}"
    m = {k.removeprefix(key + "/"): v for k, v in summary["metrics"].items() if k.startswith(key + "/")}
    ours = {"balanced_accuracy", "cohen_kappa", "f1_weighted", "roc_auc", "pr_auc", "accuracy"}
    official = {f"official/{k}" for k in ("balanced_accuracy", "roc_auc", "pr_auc", "accuracy")}
    assert ours | official | {"n", "parse_failures"} <= set(m)
    assert m["n"] == 293 and summary["tasks"][f"val/{TASK}"]["n"] == 30
    assert summary["rows"] == 323 and summary["rows_per_s"] > 0

    names = {u.rsplit("/", 1)[1] for u in storage.list_files(output)}
    slug = f"test_{TASK}"
    assert {
        "metrics.json",
        "report.md",
        "summary.png",
        f"confusion_{slug}.png",
        f"confusion_{slug}_generated.png",
        f"metrics_{slug}.png",
        f"predictions_{slug}.csv",
        f"predictions_val_{TASK}.csv",
    } <= names
    report = json.loads(storage.read_text(storage.join(output, "metrics.json")))
    rows = _csv(storage.join(output, f"predictions_{slug}.csv"))
    assert len(rows) == 293 and len({r["sample_id"] for r in rows}) == 293  # every row scored exactly once
    failures = sum(int(r["gen_pred"]) == -1 for r in rows)
    assert report["tasks"][key]["metrics"]["parse_failures"] == m["parse_failures"] == failures
    probs = np.array([[float(r["p_negativity"]), float(r["p_positivity"])] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert "| test/SelfRegulationSCP1 | 293 |" in storage.read_text(storage.join(output, "report.md"))

    # Decision calibration on the val split (issue 16): the bias is fitted on the same 30 val rows the second entry
    # scored, and the calibrated test metrics are the test probabilities shifted by it.
    from neurolm.eval.calibration import apply_class_bias
    from neurolm.eval.metrics import balanced_accuracy

    bias = np.asarray(m["calibrated/bias"])
    assert m["calibrated/val_rows"] == 30 and bias.shape == (2,) and bias[0] == 0
    assert m["calibrated/val_balanced_accuracy_before"] == pytest.approx(
        summary["metrics"][f"val/{TASK}/balanced_accuracy"])
    assert m["calibrated/val_balanced_accuracy_after"] >= m["calibrated/val_balanced_accuracy_before"]
    labels = np.array([int(r["label"]) for r in rows])
    calibrated = np.array([int(r["calibrated_pred"]) for r in rows])  # written beside the raw prediction
    assert m["calibrated/balanced_accuracy"] == pytest.approx(balanced_accuracy(labels, calibrated))
    # the same decision as shifting the (6-digit) CSV probabilities, up to rows tied at that precision
    shifted = apply_class_bias(probs, bias).argmax(axis=1)
    assert np.mean(shifted == calibrated) > 0.9

    # The actors' answers are the in-process answers (per-sample text positions: batch composition is irrelevant).
    from neurolm.data.bpe import load_gpt2_tokenizer
    from neurolm.data.shards import read_shards, table_to_signals
    from neurolm.data.tasks import get_task, tokenize_task
    from neurolm.eval.evaluate import eval_layout, load_scoring_model, score_batch

    table = read_shards(eeg_shards["scp1_test"])
    pick = np.argsort(table.column("sample_id").to_pylist())[:8]
    signals = table_to_signals(table)
    batch = {
        c: np.asarray(table.column(c).to_pylist(), dtype=object if c in ("sample_id", "channels") else None)[
            pick
        ]
        for c in ("sample_id", "label", "n_channels", "n_seconds", "channels")
    }
    batch["signal"] = np.stack([signals[i] for i in pick])  # (8, C, T·200)
    bpe = load_gpt2_tokenizer()
    tokens = tokenize_task(get_task(TASK), bpe.encode)
    local = score_batch(
        load_scoring_model(instruct_export),
        get_task(TASK),
        tokens,
        eval_layout(batch, tokens, eeg_max_len=64, text_max_len=40),
        decode=bpe.decode,
    )
    by_id = {r["sample_id"]: r for r in rows}
    for i, sid in enumerate(local["sample_id"]):
        np.testing.assert_allclose(
            [float(by_id[sid]["p_negativity"]), float(by_id[sid]["p_positivity"])],
            local["probs"][i],
            atol=1e-5,
        )
        assert int(by_id[sid]["gen_pred"]) == local["gen_pred"][i]


def test_in_process_scoring_equals_the_actor_pool(eeg_shards, instruct_export) -> None:
    """``concurrency: 0`` (no Ray, what small evaluations such as the demo's use) scores every row as the actor
    pool does: same rows, same probabilities and answers, two tasks' entries kept apart."""
    from neurolm.eval.evaluate import evaluation_config, score_all

    fields = dict(
        checkpoint=instruct_export,
        tasks=[{"name": TASK, "test": eeg_shards["scp1_test"]}, {"name": TASK, "test": eeg_shards["scp1_val"],
                                                                   "split": "val"}],
        output="/tmp/unused",
        eeg_max_len=64,
        text_max_len=40,
        batch_size=40,
        official_generation=True,
    )
    local = score_all(evaluation_config(**fields, concurrency=0), eeg_max_len=64)
    actors = score_all(evaluation_config(**fields, concurrency=2, num_cpus_per_actor=0.5), eeg_max_len=64)
    assert [len(e["label"]) for e in local] == [len(e["label"]) for e in actors] == [293, 30]
    for mine, theirs in zip(local, actors, strict=True):
        assert list(mine["sample_id"]) == list(theirs["sample_id"])
        np.testing.assert_allclose(mine["probs"], theirs["probs"], atol=1e-6)
        for key in ("label", "pred", "gen_pred", "truncated"):
            np.testing.assert_array_equal(mine[key], theirs[key])


def test_predict_reads_checkpoint_and_writes_answers_on_s3(instruct_export, s3_uri) -> None:
    from neurolm.data.samples import fetch_sample
    from neurolm.eval.predict import cli

    out = storage.join(s3_uri, "eval-test", "predict", "answers.json")
    assert (
        cli(
            [
                "--checkpoint",
                instruct_export,
                "--task",
                TASK,
                str(fetch_sample("S001R02.edf")),
                "-o",
                out,
                "--allow-channel-mismatch",
            ]
        )  # S001R02 has none of SCP1's channels: refused without the flag
        == 0
    )
    doc = json.loads(storage.read_text(out))
    assert len(doc["rows"]) == 20 and doc["classes"] == ["negativity", "positivity"]


def test_an_ensemble_scores_the_mean_of_its_members_answer_probabilities(eeg_shards, instruct_export, s3_uri) -> None:
    """``ensemble`` (the pipeline's ``seeds``, docs/recipe.md §13): each row's answer probabilities are the mean of
    the members' own, every member's metrics are those of evaluating it alone, and the report says so."""
    from neurolm.eval.evaluate import evaluate_checkpoint, evaluation_config
    from neurolm.eval.metrics import balanced_accuracy
    from neurolm.models.io import save_pretrained
    from neurolm.models.neurolm import NeuroLM, NeuroLMConfig

    torch.manual_seed(7)
    other = save_pretrained(
        NeuroLM(NeuroLMConfig.preset("debug", per_sample_text_positions=True)),
        storage.join(s3_uri, "eval-test", "export-seed7"),
    )
    fields = dict(
        tasks=[{"name": TASK, "test": eeg_shards["scp1_test"], "calibrate_on": eeg_shards["scp1_val"]}],
        eeg_max_len=64, text_max_len=40, batch_size=64, concurrency=0, official_generation=False,
    )  # fmt: skip
    out = {}
    for name, checkpoint, ensemble in (("a", instruct_export, []), ("b", other, []), ("ab", instruct_export, [other])):
        output = storage.join(s3_uri, "eval-test", f"ensemble-{name}")
        summary = evaluate_checkpoint(evaluation_config(checkpoint=checkpoint, ensemble=ensemble, output=output, **fields))
        out[name] = (summary["metrics"], _csv(storage.join(output, f"predictions_test_{TASK}.csv")), output)

    key = f"test/{TASK}"
    (ma, rows_a, _), (mb, rows_b, _), (mab, rows_ab, output) = out["a"], out["b"], out["ab"]
    assert [r["sample_id"] for r in rows_a] == [r["sample_id"] for r in rows_b] == [r["sample_id"] for r in rows_ab]
    cols = ["p_negativity", "p_positivity"]
    pa, pb, pab = (np.array([[float(r[c]) for c in cols] for r in rows]) for rows in (rows_a, rows_b, rows_ab))
    assert not np.allclose(pa, pb, atol=1e-3)  # two different models: the mean is not either of them
    np.testing.assert_allclose(pab, (pa + pb) / 2, atol=1e-5)
    labels = np.array([int(r["label"]) for r in rows_ab])
    assert mab[f"{key}/balanced_accuracy"] == pytest.approx(balanced_accuracy(labels, pab.argmax(axis=1), 2), abs=1e-9)
    for j, single in enumerate((ma, mb)):  # each member's own figures, as when it is evaluated alone
        for metric in ("balanced_accuracy", "roc_auc", "calibrated/balanced_accuracy", "majority_share"):
            assert mab[f"{key}/member{j}/{metric}"] == pytest.approx(single[f"{key}/{metric}"], abs=1e-9)
        assert [int(r[f"pred_member{j}"]) for r in rows_ab] == [int(r["pred"]) for r in (rows_a, rows_b)[j]]
    report = json.loads(storage.read_text(storage.join(output, "metrics.json")))
    assert [m["checkpoint"] for m in report["tasks"][key]["members"]] == [instruct_export, other]
    assert report["metadata"]["ensemble"] == [other]
    md = storage.read_text(storage.join(output, "report.md"))
    assert "**ensemble of 2**" in md and f"member 1 (`{other}`)" in md and "and 1 more (an ensemble" in md
