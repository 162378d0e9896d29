"""One corpus registry (issue 14, item 2): every corpus is declared once in neurolm/corpora.py and config
validation, the reader table, the readers' rules, `neurolm predict`'s rules and the stand-ins derive from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from neurolm.channels import normalize_channel_name
from neurolm.config import CORPORA as CONFIG_CORPORA
from neurolm.config import ConfigError, PreprocessConfig, load_config
from neurolm.config_preprocess import LeakageOptions
from neurolm.corpora import CORPORA, GENERIC_CORPUS, get_corpus, pretraining_corpora
from neurolm.data import synthetic
from neurolm.data.readers import READER_MODULES, get_reader
from neurolm.data.standins import STANDINS
from neurolm.data.tasks import TASKS
from neurolm.eval.predict import GENERIC_RULES, TASK_RULES, TaskRules
from neurolm.task_spec import parse_task

ROOT = Path(__file__).resolve().parents[3]
PAPER_CORPORA = {"tuab", "tuev", "seed", "hmc", "workload", "tusl"}


@pytest.mark.parametrize("name", list(CORPORA))
def test_every_corpus_has_a_reader_that_uses_its_declaration(name: str) -> None:
    corpus = CORPORA[name]
    reader = get_reader(name)
    assert reader.__name__ == corpus.reader == READER_MODULES[name]
    assert callable(reader.list_recordings) and callable(reader.read_recording)
    assert reader.DEFAULT_NOTCH_HZ == corpus.notch_hz
    for constant in ("WINDOW_S", "SAMPLE_S", "EPOCH_S"):  # the reader's own name for its sample length
        if hasattr(reader, constant):
            assert getattr(reader, constant) == corpus.window_s
    if hasattr(reader, "CHANNELS"):
        assert reader.CHANNELS == corpus.channels


def test_declared_channels_are_vocabulary_names() -> None:
    for corpus in CORPORA.values():
        for name in (corpus.channels or ()) + corpus.exclude:
            assert normalize_channel_name(name) == name, f"{corpus.name}: {name}"


def test_unknown_corpus_fails_with_one_line_listing_the_known() -> None:
    with pytest.raises(ValueError, match=r"^unknown corpus 'tuabb'; known: edf, tueg, tuab") as err:
        get_reader("tuabb")
    assert "\n" not in str(err.value)
    assert get_corpus("tuab") is CORPORA["tuab"]


def test_config_validation_takes_the_names_from_the_registry() -> None:
    assert CONFIG_CORPORA == tuple(CORPORA)
    assert get_args(PreprocessConfig.model_fields["corpus"].annotation) == tuple(CORPORA)
    for name in CORPORA:
        assert load_config(PreprocessConfig, base={"corpus": name, "input": "x", "output": "y"}).corpus == name
    with pytest.raises(ConfigError, match=r"corpus = \"nope\": Input should be 'edf', 'tueg'"):
        load_config(PreprocessConfig, base={"corpus": "nope", "input": "x", "output": "y"})
    assert LeakageOptions().corpora == pretraining_corpora() == ("tueg",)
    with pytest.raises(ValueError, match=r"unknown corpus \['tuegg'\]"):
        LeakageOptions(corpora=("tuegg",))


def test_standins_are_the_declared_ones() -> None:
    declared = {name for name, corpus in CORPORA.items() if corpus.standin is not None}
    assert set(STANDINS) == declared == PAPER_CORPORA
    for name, standin in STANDINS.items():
        corpus = CORPORA[name]
        assert standin.task == corpus.task and standin.task in TASKS
        assert standin.build is getattr(synthetic, corpus.standin.builder)
        assert dict(standin.kwargs) == dict(corpus.standin.kwargs)
    # The cached tree's name hashes the builder and its arguments: unchanged by the move into the registry.
    assert {name: s.key for name, s in STANDINS.items()} == {
        "tuab": "tuab-2e03f45caf", "tuev": "tuev-d35acd7319", "seed": "seed-953123618a", "hmc": "hmc-edca6fd064",
        "workload": "workload-ec74ab3e8b", "tusl": "tusl-1bdcaec9b7",
    }  # fmt: skip


def test_each_declared_task_is_a_builtin_on_that_corpus() -> None:
    for name, corpus in CORPORA.items():
        if corpus.task is not None:
            task = TASKS[corpus.task]
            assert task.corpus == name and task.dataset == name


def test_predict_rules_of_the_builtins_come_from_their_corpus() -> None:
    for name, task in TASKS.items():
        rules, corpus = TASK_RULES[name], CORPORA[task.corpus or "edf"]
        own = task.predict
        assert rules.notch_hz == (own.notch_hz if own.notch_hz is not None else corpus.notch_hz)
        assert rules.channels == (own.channels if own.channels is not None else corpus.channels)
        assert rules.exclude == (own.exclude if own.exclude is not None else corpus.exclude)
        if own.window_s is None:
            assert rules.window_s == corpus.window_s
    # The official tasks state no rule of their own: their corpus is the one table.
    for name in ("TUAB", "TUEV", "SEED", "HMC", "Workload", "TUSL"):
        assert TASKS[name].predict.model_dump(exclude_none=True) == {}
        assert "\npredict:" not in (ROOT / "neurolm" / "builtin_tasks" / f"{name}.yaml").read_text()
    assert GENERIC_RULES == TaskRules(float(GENERIC_CORPUS.window_s or 0), GENERIC_CORPUS.notch_hz)


def test_a_task_file_overrides_its_corpus_field_by_field() -> None:
    base = {"name": "Mine", "question": "Is it?", "answers": ["No", "Yes"], "dataset": "mine"}
    slowing = TaskRules.of(parse_task({**base, "corpus": "tusl", "predict": {"window_s": 2}}))
    assert slowing == TaskRules(2.0, 60.0, CORPORA["tusl"].channels)
    generic = TaskRules.of(parse_task({**base, "predict": {"notch_hz": 60}}))
    assert generic == TaskRules(10.0, 60.0)
    # A corpus without a fixed sample length (ts: the trial's) falls back to the generic 10 s.
    assert TaskRules.of(parse_task({**base, "corpus": "ts"})).window_s == 10.0


def test_no_second_table_of_corpus_facts() -> None:
    """Reader constants and lists of corpus names outside the registry would drift from it."""
    literal_notch = re.compile(r"^DEFAULT_NOTCH_HZ\s*=\s*[0-9]", re.M)
    name_list = re.compile(r"""["']tueg["'],\s*["']tuab["']""")
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "neurolm").rglob("*.py"))
        if path.name != "corpora.py" and (literal_notch.search(path.read_text()) or name_list.search(path.read_text()))
    ]
    assert offenders == []


def test_unset_ts_options_keep_earlier_fingerprints() -> None:
    """Adding the `ts` section must not make every earlier preprocessing run redo its recordings."""
    from neurolm.data.preprocessing import task_fingerprint
    from neurolm.data.readers.base import RecordingTask

    task = RecordingTask("ts", "d", "d_TRAIN", (), "", None)
    cfg = PreprocessConfig(corpus="ts", input="x", output="y")
    # Computed before the section existed (main at ec0de76); a PREPROCESSING_VERSION bump changes it on purpose.
    assert task_fingerprint(task, cfg) == "4f5624eed5c540e012d63c48009b191c"
    renamed = cfg.model_copy(update={"ts": cfg.ts.model_copy(update={"channels": ("C3", "C4")})})
    assert task_fingerprint(task, renamed) != task_fingerprint(task, cfg)
