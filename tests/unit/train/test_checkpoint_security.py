"""Checkpoints are data: a file planted in a real DeepSpeed checkpoint that would run code when unpickled is
refused, by resume (``load_checkpoint``) and by export (``consolidated_state_dict``), before it is unpickled and
with one line naming the file; real checkpoints of every ZeRO stage still resume and export."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from neurolm.config import DeepSpeedSection, OptimSection, TrainSection
from neurolm.train.checkpoint import (
    CheckpointError,
    TrainState,
    consolidated_state_dict,
    deepspeed_safe_globals,
    load_checkpoint,
    save_checkpoint,
    weights_only_loads,
)

pytestmark = pytest.mark.slow  # DeepSpeed engines


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module", autouse=True)
def _single_process_group():
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(29500 + os.getpid() % 1000),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    torch.set_num_threads(1)
    yield
    _destroy_process_group()


def _destroy_process_group() -> None:
    """Through DeepSpeed when it wraps the group, so it also drops its cached sub-groups (a later module's new
    group would otherwise meet DeepSpeed's stale references: 'Group ... is not registered')."""
    import deepspeed.comm as ds_comm

    if ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    elif torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _engine(stage: int, seed: int):
    from neurolm.train.engine import build_engine

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    return build_engine(
        model,
        DeepSpeedSection(zero_stage=stage),
        OptimSection(lr=1e-2),
        TrainSection(micro_batch_size=2, grad_accum_steps=1),
        False,
        10,
        10,
    )


def _trained_checkpoint(directory: Path, stage: int):
    engine = _engine(stage, seed=0)
    for _ in range(2):
        loss = engine(torch.randn(2, 8)).pow(2).mean()
        engine.backward(loss)
        engine.step()
    save_checkpoint(engine, str(directory), TrainState(step=2, world_size=1), rank=0)
    return engine


def _weights(engine) -> dict[str, torch.Tensor]:
    if engine.zero_optimization_stage() == 3:  # ZeRO-3 partitions parameters: gather them to compare
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            return {k: v.detach().clone().float() for k, v in engine.module.state_dict().items()}
    return {k: v.detach().clone().float() for k, v in engine.module.state_dict().items()}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_real_checkpoints_of_every_zero_stage_resume_and_export(tmp_path: Path, stage: int) -> None:
    switch_before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    saved = _weights(_trained_checkpoint(tmp_path, stage))
    fresh = _engine(stage, seed=1)
    state = load_checkpoint(fresh, str(tmp_path), world_size=1)
    assert state.step == 2
    assert fresh.global_steps == 2
    resumed = _weights(fresh)
    exported = consolidated_state_dict(str(tmp_path))
    for key, value in saved.items():
        torch.testing.assert_close(resumed[key], value)
        torch.testing.assert_close(exported[key], value)
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == switch_before  # the switch is scoped to the load


def _optim_file(directory: Path) -> Path:
    return next(Path(directory, "ds", "ds").glob("*optim_states.pt"))


def _plant(target: Path, marker: Path, fmt: str) -> None:
    if fmt == "torch":
        torch.save({"optimizer_state_dict": _Payload(marker)}, target)
    else:
        target.write_bytes(pickle.dumps({"optimizer_state_dict": _Payload(marker)}))


def _refusal(call, target: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and str(target) in message and "refusing to load" in message
    return message


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_planted_file_is_refused_by_resume_and_export_without_running(tmp_path: Path, fmt: str) -> None:
    ckpt, marker = tmp_path / "ckpt", tmp_path / "pwned"
    _trained_checkpoint(ckpt, stage=2)
    target = _optim_file(ckpt)
    _plant(target, marker, fmt)

    # As planted: the file's digest no longer matches the one its rank wrote.
    assert "sha256" in _refusal(lambda: load_checkpoint(_engine(2, seed=1), str(ckpt), 1), target)
    assert "sha256" in _refusal(lambda: consolidated_state_dict(str(ckpt)), target)

    # An attacker who also rewrites the rank's digests: the pickle scan refuses the class it would create.
    marker_file = ckpt / "rank_0.json"
    rank = json.loads(marker_file.read_text())
    rank["sha256"][target.relative_to(ckpt).as_posix()] = hashlib.sha256(target.read_bytes()).hexdigest()
    marker_file.write_text(json.dumps(rank))
    message = _refusal(lambda: load_checkpoint(_engine(2, seed=1), str(ckpt), 1), target)
    assert ("system" in message) if fmt == "torch" else ("not a torch checkpoint file" in message)
    _refusal(lambda: consolidated_state_dict(str(ckpt)), target)
    assert not marker.exists()


def test_deepspeed_own_loaders_run_weights_only(tmp_path: Path) -> None:
    """Defence in depth: even past the scan, DeepSpeed's ``torch.load(weights_only=False)`` is forced to the
    weights-only unpickler inside :func:`weights_only_loads`."""
    ckpt, marker = tmp_path / "ckpt", tmp_path / "pwned"
    _trained_checkpoint(ckpt, stage=2)
    _plant(_optim_file(ckpt), marker, "torch")
    fresh = _engine(2, seed=1)
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError, match="system"):
        fresh.load_checkpoint(str(ckpt / "ds"), tag="ds")
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        get_fp32_state_dict_from_zero_checkpoint(str(ckpt / "ds"), tag="ds")
    assert not marker.exists()
    shutil.rmtree(ckpt)


def test_weights_only_switch_holds_while_any_thread_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ensemble members export side by side in threads of one driver: one thread leaving must neither turn the
    process-wide switch off under another's load nor leave it on after the last one."""
    import threading

    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    inside, leave = threading.Event(), threading.Event()
    seen: list[object] = []

    def member() -> None:
        with weights_only_loads():
            inside.set()
            leave.wait(30)
            seen.append(os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD"))
            seen.append(set(deepspeed_safe_globals()) <= set(torch.serialization.get_safe_globals()))

    other = threading.Thread(target=member)
    with weights_only_loads():  # this thread is first in and first out; the other is still loading after
        other.start()
        assert inside.wait(30)
    leave.set()
    other.join(30)
    assert seen == ["1", True]
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == "1"
    assert not set(deepspeed_safe_globals()) & set(torch.serialization.get_safe_globals())


def test_weights_only_switch_undone_when_turning_it_on_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import neurolm.train.checkpoint as checkpoint

    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)

    def broken() -> list[object]:
        raise ImportError("no deepspeed here")

    working = checkpoint.deepspeed_safe_globals
    monkeypatch.setattr(checkpoint, "deepspeed_safe_globals", broken)
    with pytest.raises(ImportError), weights_only_loads():
        pass
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None
    monkeypatch.setattr(checkpoint, "deepspeed_safe_globals", working)
    with weights_only_loads():  # the count was not left behind
        assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == "1"
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None
