"""The per-row scorer behind ``neurolm eval`` and ``neurolm predict`` (no Ray): option probabilities, the official
parse of generated tokens, parse-failure accounting, the actor class and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolm.data.bpe import load_gpt2_tokenizer
from neurolm.data.tasks import get_task, tokenize_task
from neurolm.eval.evaluate import (
    TaskScorer,
    eval_layout,
    score_batch,
    task_metrics_entry,
    write_evaluation_report,
)
from neurolm.models.io import save_pretrained
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def bpe():
    return load_gpt2_tokenizer()


def _model() -> NeuroLM:
    torch.manual_seed(0)
    return NeuroLM(NeuroLMConfig.preset("debug", per_sample_text_positions=True)).eval()


@torch.no_grad()
def _always_emit(model: NeuroLM, token_id: int) -> NeuroLM:
    """Make every text position's most likely next token ``token_id`` (constant final hidden state)."""
    model.gpt.ln_f.weight.zero_()
    model.gpt.ln_f.bias.zero_()
    model.gpt.ln_f.bias[0] = 1.0
    model.gpt.lm_head.weight.zero_()
    model.gpt.lm_head.weight[token_id, 0] = 10.0
    return model


def _shard_rows(n: int, channels: int = 3, seconds: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them from our shards (numpy batch format)."""
    rng = np.random.default_rng(seed)
    return {
        "signal": rng.standard_normal((n, channels, seconds * 200)).astype(np.float32),
        "channels": np.stack([np.arange(channels, dtype=np.int16) * 5] * n),
        "n_channels": np.full(n, channels, dtype=np.int16),
        "n_seconds": np.full(n, seconds, dtype=np.int32),
        "label": rng.integers(0, 2, n).astype(np.int64),
        "sample_id": np.asarray([f"s{i:03d}" for i in range(n)], dtype=object),
    }


def _layout(task_name: str, bpe, n: int = 6, eeg_max_len: int = 8):
    task = get_task(task_name)
    tokens = tokenize_task(task, bpe.encode)
    return task, tokens, eval_layout(_shard_rows(n), tokens, eeg_max_len=eeg_max_len, text_max_len=80)


def test_probabilities_are_a_softmax_over_options_and_sum_to_one(bpe) -> None:
    task, tokens, batch = _layout("TUEV", bpe)
    out = score_batch(_model(), task, tokens, batch, decode=bpe.decode)
    assert out["probs"].shape == (6, 6) and out["loglik"].shape == (6, 6)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        out["probs"], torch.softmax(torch.from_numpy(out["loglik"]), -1).numpy(), atol=1e-12
    )
    assert (out["loglik"] < 0).all()
    np.testing.assert_array_equal(out["pred"], out["probs"].argmax(axis=1))
    np.testing.assert_array_equal(out["label"], batch["label"])
    np.testing.assert_array_equal(out["sample_id"], batch["sample_id"])


def test_generated_answer_is_parsed_by_position_and_agrees_with_scoring(bpe) -> None:
    yes = bpe.encode(" Yes")
    assert len(yes) == 1
    task, tokens, batch = _layout("TUAB", bpe)
    out = score_batch(
        _always_emit(_model(), yes[0]), task, tokens, batch, decode=bpe.decode, max_new_tokens=5
    )
    assert list(out["generated"]) == [" Yes Yes Yes Yes Yes"] * 6
    np.testing.assert_array_equal(out["gen_pred"], 1)  # "Yes" is the word at result_idx 7 → label 1
    assert (out["probs"][:, 1] > 0.99).all() and (out["pred"] == 1).all()


def test_one_prefill_per_batch_answers_as_separate_scoring_and_generation(bpe) -> None:
    from neurolm.models.generate import generate, option_probabilities, score_options

    task, tokens, batch = _layout("TUEV", bpe)
    model = _model()
    out = score_batch(model, task, tokens, batch, decode=bpe.decode, max_new_tokens=4)
    inputs = [torch.from_numpy(np.asarray(batch[k])) for k in ("x", "input_chans", "input_time", "input_mask")]
    prompt = torch.tensor([tokens.prompt] * 6)
    probs = option_probabilities(score_options(model, *inputs, prompt, tokens.options).double())
    generated = generate(model, *inputs, prompt, max_new_tokens=4).tokens[:, prompt.shape[1]:]
    np.testing.assert_allclose(out["probs"], probs.numpy(), atol=1e-6)
    assert list(out["generated"]) == [bpe.decode(row.tolist()) for row in generated]


def test_bf16_scoring_runs_on_cpu_and_keeps_the_fp32_answers(bpe) -> None:
    task, tokens, batch = _layout("TUAB", bpe)
    fp32 = score_batch(_model(), task, tokens, batch, decode=bpe.decode)
    bf16 = score_batch(_model().to(torch.bfloat16), task, tokens, batch, decode=bpe.decode, dtype=torch.bfloat16)
    np.testing.assert_allclose(bf16["probs"], fp32["probs"], atol=0.01)
    np.testing.assert_array_equal(bf16["pred"], fp32["pred"])


def test_unparsable_generation_is_a_counted_failure_not_a_class(bpe) -> None:
    maybe = bpe.encode(" Maybe")
    task, tokens, batch = _layout("TUAB", bpe)
    out = score_batch(_always_emit(_model(), maybe[0]), task, tokens, batch, decode=bpe.decode)
    np.testing.assert_array_equal(out["gen_pred"], -1)
    np.testing.assert_allclose(out["probs"], 0.5)  # neither option is favoured
    metrics = task_metrics_entry(task, out)
    assert metrics["parse_failures"] == 6 and metrics["n"] == 6
    assert metrics["generation/accuracy"] == 0.0  # ours: a failure is wrong
    assert "official/roc_auc" in metrics and "roc_auc" in metrics


def test_multiclass_failures_count_as_last_class_only_in_official_metrics() -> None:
    task = get_task("SEED")  # last class: Negative (2)
    rows = {"label": np.full(8, 2), "probs": np.tile([0.5, 0.3, 0.2], (8, 1)), "gen_pred": np.full(8, -1)}
    m = task_metrics_entry(task, rows)
    assert m["parse_failures"] == 8
    assert m["official/accuracy"] == 1.0  # np.eye(K)[-1] → "Negative", as the official code
    assert m["generation/accuracy"] == 0.0
    assert m["accuracy"] == 0.0  # ours from argmax(probs) = Positive


def test_without_generation_there_is_no_official_score_and_no_failure_count() -> None:
    rows = {
        "label": np.array([0, 1, 1, 0]),
        "probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
    }
    m = task_metrics_entry(get_task("TUAB"), rows)
    assert m["parse_failures"] is None
    assert not any(k.startswith(("official/", "generation/")) for k in m)
    assert m["roc_auc"] == 0.75 and m["balanced_accuracy"] == 0.5


def test_scoring_requires_a_decoder_for_generation(bpe) -> None:
    task, tokens, batch = _layout("TUAB", bpe)
    with pytest.raises(ValueError, match="decode"):
        score_batch(_model(), task, tokens, batch, decode=None, generation=True)


def test_layout_keeps_sample_ids_and_flags_truncated_samples(bpe) -> None:
    _, _, batch = _layout("TUAB", bpe, n=3, eeg_max_len=4)  # 3 channels x 2 s = 6 tokens > 4
    assert batch["truncated"].all() and list(batch["sample_id"]) == ["s000", "s001", "s002"]
    assert batch["x"].shape == (3, 4, 200) and batch["prompt"].shape[0] == 3
    _, _, fits = _layout("TUAB", bpe, n=3, eeg_max_len=6)
    assert not fits["truncated"].any()


def test_actor_class_scores_mixed_task_batches_with_each_tasks_options(tmp_path: Path, bpe) -> None:
    save_pretrained(_model(), str(tmp_path / "export"))
    # Tasks as score_all hands them to actors: definitions from the config (here one object, one dumped mapping).
    definitions = [get_task("TUEV"), get_task("SelfRegulationSCP1").model_dump(mode="json")]
    scorer = TaskScorer(str(tmp_path / "export"), definitions, max_new_tokens=3)
    assert [t.name for t in scorer.tasks] == ["TUEV", "SelfRegulationSCP1"]
    tuev, tuev_tokens, a = _layout("TUEV", bpe, n=3)
    scp1, scp1_tokens, b = _layout("SelfRegulationSCP1", bpe, n=2)
    a_rows = eval_layout(_shard_rows(3), tuev_tokens, eeg_max_len=8, text_max_len=80, entry=0)
    b_rows = eval_layout(_shard_rows(2), scp1_tokens, eeg_max_len=8, text_max_len=80, entry=1)
    assert "prompt" not in a_rows and set(a_rows["entry"]) == {0}
    mixed = {k: np.concatenate([b_rows[k][:1], a_rows[k], b_rows[k][1:]]) for k in a_rows}  # rows 0, 4: SCP1
    out = scorer(mixed)
    assert set(out) == {"entry", "probs", "pred", "gen_pred", "generated", "label", "sample_id", "truncated"}
    assert out["probs"].shape == (5, 6)
    np.testing.assert_allclose(np.nansum(out["probs"], axis=1), 1.0, atol=1e-12)
    assert np.isnan(out["probs"][[0, 4], 2:]).all() and not np.isnan(out["probs"][1:4]).any()
    # Each group equals scoring that task alone, with its own prompt.
    alone = score_batch(scorer.model, tuev, tuev_tokens, a, decode=bpe.decode, max_new_tokens=3)
    np.testing.assert_allclose(out["probs"][1:4], alone["probs"], atol=1e-6)
    np.testing.assert_array_equal(out["gen_pred"][1:4], alone["gen_pred"])
    alone = score_batch(scorer.model, scp1, scp1_tokens, b, decode=bpe.decode, max_new_tokens=3)
    np.testing.assert_allclose(out["probs"][[0, 4], :2], alone["probs"], atol=1e-6)


def test_report_files_and_failure_column(tmp_path: Path) -> None:
    task = get_task("TUAB")
    rows = {
        "label": np.array([0, 1, 1, 0]),
        "probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
        "pred": np.array([0, 1, 0, 1]),
        "gen_pred": np.array([0, 1, -1, -1]),
        "generated": np.array([" No", " Yes", " Maybe", "!"], dtype=object),
        "sample_id": np.array(["a", "b", "c", "d"], dtype=object),
        "truncated": np.zeros(4, bool),
    }
    entry = {
        "key": "test/TUAB",
        "task": task,
        "split": "test",
        "rows": rows,
        "metrics": task_metrics_entry(task, rows),
    }
    files = write_evaluation_report([entry], tmp_path, title="t", metadata={"checkpoint": "ckpt"})
    names = {f.name for f in files}
    assert {
        "metrics.json",
        "report.md",
        "summary.png",
        "confusion_test_TUAB.png",
        "confusion_test_TUAB_generated.png",
        "metrics_test_TUAB.png",
        "predictions_test_TUAB.csv",
    } <= names
    report = json.loads((tmp_path / "metrics.json").read_text())
    t = report["tasks"]["test/TUAB"]
    assert t["metrics"]["parse_failures"] == 2
    assert t["confusion_matrix_generated"] == [[1, 0, 1], [0, 1, 1]]  # failures in their own column
    assert t["parse_failure_examples"] == [" Maybe", "!"]
    lines = (tmp_path / "predictions_test_TUAB.csv").read_text().splitlines()
    assert lines[0] == "sample_id,label,pred,p_No,p_Yes,gen_pred,generated" and len(lines) == 5
    assert "| test/TUAB | 4 | 2 |" in (tmp_path / "report.md").read_text()


def test_report_without_generation_shows_no_failure_count(tmp_path: Path) -> None:
    task = get_task("SEED")
    rows = {
        "label": np.array([0, 1, 2]),
        "probs": np.eye(3) * 0.7 + 0.1,
        "pred": np.array([0, 1, 2]),
        "sample_id": np.array(["a", "b", "c"], dtype=object),
    }
    entry = {
        "key": "val/SEED",
        "task": task,
        "split": "val",
        "rows": rows,
        "metrics": task_metrics_entry(task, rows),
    }
    write_evaluation_report([entry], tmp_path, title="t", metadata={})
    t = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["val/SEED"]
    assert t["metrics"]["parse_failures"] is None and "confusion_matrix_generated" not in t
    assert not (tmp_path / "confusion_val_SEED_generated.png").exists()
    assert "| val/SEED | 3 | – | 1.0000 | – |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "predictions_val_SEED.csv").read_text().splitlines()[0] == (
        "sample_id,label,pred,p_Positive,p_Neutral,p_Negative"
    )


@pytest.mark.parametrize(
    "preset", sorted((Path(__file__).resolve().parents[3] / "configs" / "evaluate").glob("*.yaml"))
)
def test_evaluate_presets_build_valid_configs(preset: Path) -> None:
    from neurolm.config import EvaluateJobConfig, load_config

    overrides = ["checkpoint=/ckpt", "output=/out"]
    if "tasks: []" in preset.read_text():
        overrides.append("tasks=[{name: TUAB, test: /shards/tuab/test}]")
    cfg = load_config(EvaluateJobConfig, preset, overrides)
    assert cfg.tasks and all(get_task(t.name) for t in cfg.tasks)
    assert cfg.num_cpus_per_actor * cfg.concurrency <= 8
