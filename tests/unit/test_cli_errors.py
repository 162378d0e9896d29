"""One error path for every command: a bad config is one line naming the key and value, exit 2, no traceback,
also when it is raised deep inside a job (a stage's model preset, before Ray starts)."""

from __future__ import annotations

import pytest

from neurolm.cli import main, run_command
from neurolm.config import ConfigError


def test_train_config_error_raised_inside_fit_stage_is_one_line_exit_2(tmp_path, capsys) -> None:
    # Valid against the job schema, rejected by the stage (unknown model preset) inside fit_stage.
    code = main(["train", "tokenizer", "--config", "configs/tokenizer/debug.yaml", "model.preset=nope",
                 f"data.train={tmp_path}", f"run.storage_path={tmp_path / 'runs'}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("neurolm train: ") and "nope" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_unknown_key_is_one_line_naming_it(capsys) -> None:
    assert main(["train", "pretrain", "--config", "configs/pretrain/debug.yaml", "train.max_stepz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.max_stepz" in err and "unknown key" in err


def test_errors_map_to_exit_codes_in_one_place(capsys) -> None:
    from pydantic import BaseModel

    class Model(BaseModel):
        n: int

    def bad_value(argv: list[str]) -> int:
        Model(n="many")  # a pydantic ValidationError raised outside load_config
        return 0

    def missing_file(argv: list[str]) -> int:
        open("/nonexistent/neurolm-input")  # noqa: SIM115
        return 0

    def config_error(argv: list[str]) -> int:
        raise ConfigError("workdir = 'x': must be a URI")

    def bug(argv: list[str]) -> int:
        raise KeyError("a bug keeps its traceback")

    assert run_command("x", [], bad_value) == 2
    assert "n = 'many'" in capsys.readouterr().err
    assert run_command("x", [], missing_file) == 1
    assert "/nonexistent/neurolm-input" in capsys.readouterr().err
    assert run_command("x", [], config_error) == 2
    assert capsys.readouterr().err == "neurolm x: workdir = 'x': must be a URI\n"
    with pytest.raises(KeyError):
        run_command("x", [], bug)
