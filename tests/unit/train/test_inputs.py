"""Every input of a training job is checked before Ray: missing or empty shards, shards without the shard
schema, missing or wrong exports → one line naming the key and the value, exit code 2, and no Ray started."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from neurolm.config import ConfigError, InstructJobConfig, PretrainJobConfig, TokenizerJobConfig, load_config
from neurolm.data import shards
from neurolm.data.readers.base import RecordingSamples, RecordingTask
from neurolm.models.io import save_pretrained
from neurolm.models.neurolm import NeuroLM, NeuroLMConfig
from neurolm.models.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.train.inputs import check_stage_inputs

REPO = Path(__file__).resolve().parents[3]


def _good_shards(directory: Path) -> str:
    """One real sample shard (2 channels, 1 s at 200 Hz), written by the preprocessing writer."""
    directory.mkdir(parents=True)
    task = RecordingTask(corpus="d", dataset="d", recording="r", sources=(), subject="", split="train")
    samples = RecordingSamples(
        signals=np.zeros((1, 2, 200), np.float32), start_s=np.zeros(1), labels=np.full(1, -1),
        splits=["train"], channel_indices=np.array([0, 1], np.int16), channel_names=("FP1", "FPZ"),
        source_sfreq=200.0, source_seconds=1.0,
    )  # fmt: skip
    (directory / "part-r-00000.parquet").write_bytes(shards.parquet_bytes(shards.samples_to_table(task, samples)))
    return str(directory)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    tok = save_pretrained(NeuralTokenizer(TokenizerConfig.preset("debug")), str(root / "tokenizer"))
    lm = save_pretrained(NeuroLM(NeuroLMConfig.preset("debug")), str(root / "neurolm"))
    return {"tokenizer": tok, "neurolm": lm}


def _pretrain(tmp_path: Path, exports: dict[str, str], *overrides: str) -> PretrainJobConfig:
    base = [
        f"data.train=[{_good_shards(tmp_path / 'good')}]",
        f"tokenizer={exports['tokenizer']}",
        f"run.storage_path={tmp_path / 'runs'}",
    ]
    return load_config(PretrainJobConfig, REPO / "configs/pretrain/debug.yaml", [*base, *overrides])


def test_valid_inputs_pass(tmp_path: Path, exports: dict[str, str]) -> None:
    check_stage_inputs(_pretrain(tmp_path, exports))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.train=[/no/such/shards]", r"data.train = '/no/such/shards': no such directory"),
        ("data.train=[]", r"data.train = \[\]: no shards given"),
        ("data.val=[{empty}]", r"data.val = '.*empty': no .parquet shards found"),
        ("data.train=[{bad}]", r"data.train = '.*bad': not sample shards: .*column 'sample_id' is missing"),
        ("data.train=[{corrupt}]", r"data.train = '.*corrupt': .*is not a readable Parquet file"),
        ("tokenizer=/no/such/export", r"tokenizer = '/no/such/export': no such directory"),
        ("tokenizer=/no/such/VQ.pt", r"tokenizer = '/no/such/VQ.pt': no such file"),
        ("tokenizer={neurolm}", r"tokenizer = '.*neurolm': holds a 'neurolm' export, expected a 'tokenizer'"),
        ("tokenizer={no_weights}", r"tokenizer = '.*no_weights': model.safetensors is missing"),
        ("tokenizer={bad_config}", r"tokenizer = '.*bad_config': config.json does not describe a tokenizer"),
        ("data.text={bad}", r"data.text = '.*bad': not text shards: .*no 'tokens' column"),
    ],
)
def test_each_bad_input_is_one_line_naming_key_and_value(
    tmp_path: Path, exports: dict[str, str], override: str, expected: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "bad" / "part-0.parquet")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "part-0.parquet").write_bytes(b"not parquet")
    for name in ("no_weights", "bad_config"):
        (tmp_path / name).mkdir()
        meta = json.loads(Path(exports["tokenizer"], "config.json").read_text())
        if name == "bad_config":
            meta["config"] = {"no_such_field": 1}
            (tmp_path / name / "model.safetensors").write_bytes(b"")
        (tmp_path / name / "config.json").write_text(json.dumps(meta))
    paths = {k: str(tmp_path / k) for k in ("empty", "bad", "corrupt", "no_weights", "bad_config")}
    cfg = _pretrain(tmp_path, exports, override.format(**paths, neurolm=exports["neurolm"]))
    with pytest.raises(ConfigError, match=expected) as err:
        check_stage_inputs(cfg)
    assert "\n" not in str(err.value)


def test_tokenizer_stage_with_the_debug_presets_empty_train_is_refused(tmp_path: Path) -> None:
    cfg = load_config(
        TokenizerJobConfig, REPO / "configs/tokenizer/debug.yaml", [f"run.storage_path={tmp_path}"]
    )
    with pytest.raises(ConfigError, match=r"^data.train = \[\]: no shards given"):
        check_stage_inputs(cfg)


def test_instruct_checks_task_shards_and_the_init_export(tmp_path: Path, exports: dict[str, str]) -> None:
    good = _good_shards(tmp_path / "task")
    base = [f"run.storage_path={tmp_path / 'runs'}", f"tasks=[{{name: SelfRegulationSCP1, train: {good}}}]"]
    cfg = load_config(
        InstructJobConfig, REPO / "configs/instruct/debug.yaml", [*base, f"init={exports['neurolm']}"]
    )
    check_stage_inputs(cfg)
    with pytest.raises(ConfigError, match=r"^init = '.*tokenizer': holds a 'tokenizer' export, expected"):
        check_stage_inputs(cfg.model_copy(update={"init": exports["tokenizer"]}))
    missing = [
        *base[:1],
        "tasks=[{name: SelfRegulationSCP1, train: /no/such/task}]",
        f"init={exports['neurolm']}",
    ]
    cfg = load_config(InstructJobConfig, REPO / "configs/instruct/debug.yaml", missing)
    with pytest.raises(
        ConfigError, match=r"^tasks\[0\].train \(SelfRegulationSCP1\) = '/no/such/task': no such"
    ):
        check_stage_inputs(cfg)


def test_the_job_exits_2_with_one_line_and_starts_no_ray(
    tmp_path: Path, exports: dict[str, str], capsys, monkeypatch
) -> None:
    import ray

    from neurolm.cli import run_command

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was asked for before the inputs were checked")

    monkeypatch.setattr(ray, "init", no_ray)
    connected = ray.is_initialized()  # the test session may run a Ray cluster of its own

    overrides = [
        "data.train=[/no/such/shards]",
        f"tokenizer={exports['tokenizer']}",
        f"run.storage_path={tmp_path / 'runs'}",
    ]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    argv = ["pretrain", "--config", str(REPO / "configs/pretrain/debug.yaml"), *overrides]
    assert run_command("train", argv) == 2  # what ray_jobs/pretrain.py and `neurolm train` run
    err = capsys.readouterr().err.strip()
    assert err == "neurolm train: data.train = '/no/such/shards': no such directory"
    assert ray.is_initialized() == connected
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p.name() for p in started if "raylet" in p.name() or "gcs" in p.name()]
