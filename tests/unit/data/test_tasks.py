"""Instruction tasks render the exact official prompts (docs/reference.md §4.2) and parse positions (docs/reference.md §4.3)."""

from __future__ import annotations

import pytest

from neurolm.data.bpe import SEP_ID, load_gpt2_tokenizer
from neurolm.data.tasks import TASKS, get_task, tokenize_task

OFFICIAL_RESULT_IDX = {"TUAB": 7, "TUEV": 34, "SEED": 11, "HMC": 22, "Workload": 9, "TUSL": 17}


@pytest.fixture(scope="module")
def bpe():
    return load_gpt2_tokenizer()


def test_official_strings_and_answer_positions() -> None:
    assert get_task("TUAB").training_text(1) == "Question: Is this EEG segment abnormal? Answer: Yes <|endoftext|>"
    assert get_task("SEED").training_text(2).endswith("Answer: Negative <|endoftext|>")
    assert get_task("HMC").prompt == ("Question: Which sleep type does this EEG segment belong to? Options: (A) Wake. "
                                      "(B) NREM-1. (C) NREM-2. (D) NREM-3. (E) REM. Answer: (")
    assert get_task("TUSL").training_text(2) == ("Question: Which type does this EEG segment belong to? Options: "
                                                 "(A) background. (B) seizure. (C) slowing. Answer: (C) <|endoftext|>")
    assert {name: get_task(name).result_idx for name in OFFICIAL_RESULT_IDX} == OFFICIAL_RESULT_IDX
    assert get_task("TUEV").metric_names == ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted")
    assert get_task("Workload").metric_names == ("pr_auc", "roc_auc", "accuracy", "balanced_accuracy")


def test_token_ids_and_the_tuev_hmc_off_by_one(bpe) -> None:
    tuab = tokenize_task(get_task("TUAB"), bpe.encode)
    assert tuab.prompt[0] == SEP_ID and tuab.texts[1][: len(tuab.prompt)] == tuab.prompt
    assert tuab.target_start == len(tuab.prompt) and tuab.options == ((1400,), (3363,))  # " No", " Yes"
    hmc = tokenize_task(get_task("HMC"), bpe.encode)
    assert hmc.target_start == len(hmc.prompt) - 1  # official: the " (" token is also supervised
    assert [bpe.decode(o) for o in hmc.options] == ["A)", "B)", "C)", "D)", "E)"]


def test_a_new_task_is_one_entry(bpe) -> None:
    scp = get_task("SelfRegulationSCP1")
    assert scp.num_classes == 2 and scp.is_binary and scp.metric_names[0] == "pr_auc"
    assert scp.prompt.endswith("Options: (A) negativity. (B) positivity. Answer: (")
    assert len(tokenize_task(scp, bpe.encode).options) == 2
    assert set(OFFICIAL_RESULT_IDX) < set(TASKS)
    with pytest.raises(KeyError, match="known tasks"):
        get_task("MNIST")
