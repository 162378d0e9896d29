"""Which checkpoint directories a resume accepts (no DeepSpeed needed: the files are what matter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurolm.train.checkpoint import CheckpointError, TrainState, validate_checkpoint_dir


def _checkpoint(root: Path, model_files: list[str], ranks: list[int], world: int = 2) -> Path:
    (root / "ds" / "ds").mkdir(parents=True)
    for name in model_files:
        (root / "ds" / "ds" / name).write_bytes(b"x")
    for r in ranks:
        (root / f"rank_{r}.json").write_text("{}")
    (root / "state.json").write_text(TrainState(step=7, world_size=world).to_json())
    return root


@pytest.mark.parametrize("files", [
    ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"],  # ZeRO 0-2
    ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"],  # ZeRO-3
])
def test_complete_checkpoints_of_every_zero_stage_are_accepted(tmp_path: Path, files: list[str]) -> None:
    assert validate_checkpoint_dir(str(_checkpoint(tmp_path, files, [0, 1]))).step == 7


def test_a_checkpoint_missing_a_rank_or_the_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"ranks \[1\]"):
        validate_checkpoint_dir(str(_checkpoint(tmp_path / "a", ["mp_rank_00_model_states.pt"], [0])))
    with pytest.raises(CheckpointError, match="model states are missing"):
        validate_checkpoint_dir(str(_checkpoint(tmp_path / "b", ["zero_pp_rank_0_mp_rank_00_optim_states.pt"], [0, 1])))
    (tmp_path / "c").mkdir()
    with pytest.raises(CheckpointError, match="no state.json"):
        validate_checkpoint_dir(str(tmp_path / "c"))
