"""Tasks as YAML files (issue 14, item 1): the built-ins render exactly what the former Python table rendered
(docs/reference.md §4.2, §4.3), a bad file fails with one line naming file, key and value, and a task reference in a
job config is resolved on the driver into a definition that workers use without the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from neurolm.cli import main, run_command
from neurolm.config import ConfigError, EvaluateJobConfig, InstructJobConfig, PredictConfig, load_config
from neurolm.data.tasks import TASKS, get_task, tokenize_task
from neurolm.task_spec import TaskSpecError, builtin_tasks, load_task_file, resolve_task

ROOT = Path(__file__).resolve().parents[3]

# Per built-in task: evaluation prompt, answer words, result_idx (official get_pred), supervise_open_paren, metrics.
# The official six are the strings of docs/reference.md §4.2 and the positions of §4.3.
EXPECTED = {
    "TUAB": ("Question: Is this EEG segment abnormal? Answer:", ("No", "Yes"), 7, False, "binary"),
    "TUEV": (
        "Question: Which event type does this EEG segment belong to? Options: (A) spike and slow wave. (B) generalized "
        "periodic epileptiform discharge. (C) periodic lateralized epileptiform discharge. (D) eye movement. "
        "(E) artifact. (F) background. Answer: (",
        ("(A)", "(B)", "(C)", "(D)", "(E)", "(F)"), 34, True, "multiclass",
    ),
    "SEED": (
        "Question: Which emotion type does this EEG segment belong to? Answer:",
        ("Positive", "Neutral", "Negative"), 11, False, "multiclass",
    ),
    "HMC": (
        "Question: Which sleep type does this EEG segment belong to? Options: (A) Wake. (B) NREM-1. (C) NREM-2. "
        "(D) NREM-3. (E) REM. Answer: (",
        ("(A)", "(B)", "(C)", "(D)", "(E)"), 22, True, "multiclass",
    ),
    "Workload": ("Question: Is this EEG segment of high workload? Answer:", ("No", "Yes"), 9, False, "binary"),
    "TUSL": (
        "Question: Which type does this EEG segment belong to? Options: (A) background. (B) seizure. (C) slowing. "
        "Answer: (",
        ("(A)", "(B)", "(C)"), 17, False, "multiclass",
    ),
    "SelfRegulationSCP1": (
        "Question: Which slow cortical potential does this EEG segment show? Options: (A) negativity. "
        "(B) positivity. Answer: (",
        ("(A)", "(B)"), 16, False, "binary",
    ),
    "Blink": (
        "Question: Which blink does this EEG segment show? Options: (A) long blink. (B) short blink. Answer: (",
        ("(A)", "(B)"), 16, False, "binary",
    ),
    "EyesOpenShut": (
        "Question: Are the eyes open or shut during this EEG segment? Options: (A) open. (B) shut. Answer: (",
        ("(A)", "(B)"), 17, False, "binary",
    ),
    "FingerMovements": (
        "Question: Which hand is about to press a key after this EEG segment? Options: (A) left. (B) right. "
        "Answer: (",
        ("(A)", "(B)"), 19, False, "binary",
    ),
}
METRICS = {
    "binary": ("pr_auc", "roc_auc", "accuracy", "balanced_accuracy"),
    "multiclass": ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted"),
}
# sha256 of every prompt, training text and result_idx of the Python table the YAML files replaced (commit 734b2f9).
TABLE_SHA256 = "ec4e2418008a0e5709707f07e5314104cc832131c94421b70c2628871f005fdd"


def test_builtin_files_render_the_official_strings() -> None:
    assert list(TASKS)[:6] == ["TUAB", "TUEV", "SEED", "HMC", "Workload", "TUSL"]
    assert set(TASKS) == set(EXPECTED)
    for name, (prompt, words, result_idx, open_paren, kind) in EXPECTED.items():
        task = get_task(name)
        assert task.prompt == prompt, name
        assert task.answer_words == words, name
        assert task.result_idx == result_idx, name
        assert task.supervise_open_paren == open_paren, name
        assert task.metric_names == METRICS[kind], name
        stem = prompt.removesuffix(" (") if task.lettered else prompt
        assert [task.training_text(i) for i in range(task.num_classes)] == [
            f"{stem} {w} <|endoftext|>" for w in words
        ], name
    assert get_task("TUAB").training_text(1) == "Question: Is this EEG segment abnormal? Answer: Yes <|endoftext|>"
    assert get_task("TUSL").training_text(2) == (
        "Question: Which type does this EEG segment belong to? Options: (A) background. (B) seizure. (C) slowing. "
        "Answer: (C) <|endoftext|>"
    )


def test_builtin_files_are_byte_identical_to_the_former_table() -> None:
    blob = "\n".join(
        s
        for name in sorted(TASKS)
        for s in [
            name,
            TASKS[name].prompt,
            *(TASKS[name].training_text(i) for i in range(TASKS[name].num_classes)),
            str(TASKS[name].result_idx),
        ]
    )
    assert hashlib.sha256(blob.encode()).hexdigest() == TABLE_SHA256


def test_builtin_predict_channels_match_the_readers() -> None:
    from neurolm.data.readers.hmc import CHANNELS as HMC
    from neurolm.data.readers.ts import KNOWN_CHANNELS
    from neurolm.data.readers.tuh import TUH_CHANNELS
    from neurolm.data.readers.workload import CHANNELS as WORKLOAD

    expected = {"TUAB": TUH_CHANNELS, "TUEV": TUH_CHANNELS, "TUSL": TUH_CHANNELS, "HMC": HMC, "Workload": WORKLOAD,
                "SEED": None, **{k: v for k, v in KNOWN_CHANNELS.items() if k in TASKS}}
    assert {n: TASKS[n].predict_rules().channels for n in expected} == expected
    assert TASKS["SEED"].predict_rules().exclude == ("M1", "M2")


def test_builtins_are_package_data_named_by_task() -> None:
    folder = ROOT / "neurolm" / "builtin_tasks"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(TASKS)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\nneurolm = ["builtin_tasks/*.yaml"]' in pyproject
    assert builtin_tasks() is builtin_tasks()  # read once per process


def test_every_builtin_tokenizes() -> None:
    from neurolm.data.bpe import load_gpt2_tokenizer

    encode = load_gpt2_tokenizer().encode
    for task in TASKS.values():
        tokens = tokenize_task(task, encode)
        assert len(tokens.options) == task.num_classes and max(map(len, tokens.texts)) <= 80


def _write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "name: MyTask\nquestion: Is it?\nanswers: ['no', 'yes']\ndataset: mine\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nquestion: Q?\nanswers: [a]\ndataset: d\n", "answers = ['a']: a task needs at least 2 answers"),
        (GOOD + "colour: red\n", "colour = 'red': unknown key; allowed: name, question"),
        ("name: x\nquestion: Q?\nanswers: [a, b]\n", "dataset: missing"),
        ("name: x\nquestion: Q?\nanswers: [no, 'yes']\ndataset: d\n", "answers.0 = False: Input should be a valid "
         "string (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)"),
        ("name: x\nquestion: Q?\nanswers: [long blink, short]\ndataset: d\n", "set lettered: true"),
        (GOOD + "supervise_open_paren: true\n", "supervise_open_paren = true: needs lettered: true"),
        (GOOD + "metrics: [auroc]\n", "metrics = ['auroc']: unknown metric(s) ['auroc']"),
        (GOOD.replace("MyTask", "my/task"), "name = 'my/task': must be letters"),
        (GOOD + "predict: {window_s: 2.5}\n", "predict.window_s = 2.5: must be a whole number of seconds"),
        (GOOD + "corpus: tuabb\n", "corpus = 'tuabb': unknown corpus; known: edf, tueg, tuab, tuev, seed, hmc"),
        ("answers: [a, b\n", "not valid YAML"),
        ("- a\n- b\n", "a task must be a mapping of keys, got list"),
        ("name: x\nquestion: Q?\nanswers: [a, a]\ndataset: d\n", "answers must be distinct"),
    ],
)
def test_a_bad_task_file_fails_with_one_line_naming_file_key_and_value(tmp_path, text, message) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TaskSpecError) as err:
        load_task_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_references_are_builtin_names_or_files(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    assert resolve_task("TUAB") is TASKS["TUAB"]
    assert resolve_task(str(path)).name == "MyTask"
    with pytest.raises(TaskSpecError, match="unknown task 'MNIST'; built-in tasks"):
        resolve_task("MNIST")
    with pytest.raises(TaskSpecError, match="does not exist"):
        resolve_task(str(tmp_path / "none.yaml"))
    assert load_task_file(ROOT / "configs" / "tasks" / "example.yaml").name == "Example"


RUN = {"init": "/runs/pre/export", "run": {"name": "r", "storage_path": "/tmp/runs"}}


def test_instruct_config_carries_the_definition_to_workers(tmp_path, monkeypatch) -> None:
    """Workers rebuild the config from its dump (neurolm.train.launch) and may not see the driver's files."""
    path = _write(tmp_path, GOOD, "mine.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(InstructJobConfig, None, ["tasks=[{name: mine.yaml, train: /s/t}, {name: TUAB, train: /s/u}]"],
                      base=RUN)
    assert [t.name for t in cfg.tasks] == ["MyTask", "TUAB"]
    assert cfg.tasks[0].definition.answers == ("no", "yes")
    dumped = cfg.model_dump(mode="json")
    path.unlink()
    monkeypatch.chdir(ROOT)
    again = InstructJobConfig.model_validate(dumped)  # what a Ray worker does
    assert again == cfg and again.tasks[0].definition.prompt == "Question: Is it? Answer:"

    from neurolm.train.stages.instruct import InstructStage, task_tokens

    stage = InstructStage(again)
    assert stage.tasks["MyTask"].dataset == "mine"
    assert len(task_tokens(stage.tasks["MyTask"]).options) == 2


def test_config_errors_name_the_task_entry(tmp_path) -> None:
    bad = _write(tmp_path, "name: x\nquestion: Q?\nanswers: [a]\ndataset: d\n")
    with pytest.raises(ConfigError) as err:
        load_config(InstructJobConfig, None, [f"tasks=[{{name: {bad}, train: /s}}]"], base=RUN)
    assert f"tasks.0.name: {bad}: answers = ['a']: a task needs at least 2 answers" in str(err.value)
    with pytest.raises(ConfigError, match="appear more than once"):
        load_config(InstructJobConfig, None, ["tasks=[{name: TUAB, train: /a}, {name: TUAB, train: /b}]"], base=RUN)
    with pytest.raises(ConfigError, match="name = 'TUEV' but definition.name = 'TUAB'"):
        load_config(InstructJobConfig, base={
            **RUN, "tasks": [{"name": "TUEV", "definition": TASKS["TUAB"].model_dump(), "train": "/a"}],
        })


def test_evaluate_and_predict_configs_resolve_task_files(tmp_path) -> None:
    path = _write(tmp_path, GOOD + "predict: {window_s: 4, channels: [C3, C4]}\n")
    ev = load_config(EvaluateJobConfig, None, [f"tasks=[{{name: {path}, test: /s/test}}]"],
                     base={"checkpoint": "/c", "output": "/o"})
    assert ev.tasks[0].name == "MyTask" and ev.tasks[0].definition.num_classes == 2
    assert EvaluateJobConfig.model_validate(ev.model_dump(mode="json")) == ev

    from neurolm.eval.predict import GENERIC_RULES, TaskRules, task_rules

    pred = load_config(PredictConfig, base={"checkpoint": "/c", "task": str(path), "recordings": ["/r.edf"]})
    assert pred.task == "MyTask" and task_rules(pred.definition) == TaskRules(4.0, 50.0, ("C3", "C4"))
    assert task_rules(resolve_task(str(_write(tmp_path, GOOD, "plain.yaml")))) == GENERIC_RULES
    assert task_rules("TUSL").notch_hz == 60


def _pipeline(tasks, tmp_path):
    from neurolm.pipeline import PipelineConfig

    step = {"config": "configs/instruct/small-task.yaml"}
    return load_config(PipelineConfig, base={
        "workdir": str(tmp_path), "preprocess": [{"corpus": "ts", "input": "sample:Blink", "dataset": "Blink"},
                                                  {"corpus": "ts", "input": "x", "dataset": "mine"}],
        "tokenizer": step, "pretrain": step, "instruct": step, "tasks": tasks,
    })


def test_pipeline_tasks_as_list_or_mapping(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    listed = _pipeline(["Blink", str(path)], tmp_path)
    assert [(t.name, t.uses) for t in listed.tasks] == [("Blink", "Blink"), ("MyTask", "mine")]
    mapped = _pipeline({"Blink": "mine", str(path): None}, tmp_path)
    assert [(t.name, t.uses) for t in mapped.tasks] == [("Blink", "mine"), ("MyTask", "mine")]
    with pytest.raises(ConfigError, match=r"tasks.0 \(TUAB\): dataset 'tuab' is not among the preprocessed ones"):
        _pipeline(["TUAB"], tmp_path)


def test_tasks_command(tmp_path, capsys, monkeypatch) -> None:
    good, bad = _write(tmp_path, GOOD), _write(tmp_path, "name: x\nquestion: Q?\nanswers: [a]\ndataset: d\n", "b.yaml")
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "TUEV                       6  lettered  tuev" in out
    assert main(["tasks", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"MyTask                     2  words     mine                 {good}" in out and "at least 2" in out
    assert main(["tasks", "show", "HMC"]) == 0
    out = capsys.readouterr().out
    assert "Answer: (A) <|endoftext|>  [" in out and "the answer is word 22" in out
    assert yaml.safe_load(out.split("\n\n")[0])["answers"] == ["Wake", "NREM-1", "NREM-2", "NREM-3", "REM"]
    assert main(["tasks", "check", str(good)]) == 0
    assert "ok: task MyTask, 2 classes, dataset mine" in capsys.readouterr().out
    assert run_command("tasks", ["check", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"neurolm tasks: {bad}: answers = ['a']: a task needs at least 2 answers\n"
    assert main(["tasks", "show", "MNIST"]) == 2
    assert "unknown task 'MNIST'" in capsys.readouterr().err
