"""Checkpoints: a DeepSpeed checkpoint per rank plus a ``state.json`` sidecar, reported by every rank.

Layout of one checkpoint directory (Ray merges every rank's files into it)::

    ds/latest, ds/<tag>/mp_rank_00_model_states.pt, ds/<tag>/*zero_pp_rank_<r>_*optim_states.pt
    state.json      step, epoch, position in the epoch, samples/tokens seen, config and its hash, model config
    rank_<r>.json   each rank's own data position (proves every rank's files arrived)

A checkpoint is usable only when ``state.json`` and one ``rank_<r>.json`` per rank are present: Ray registers a
checkpoint only after every rank has reported it, and :func:`validate_checkpoint_dir` refuses anything partial.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

DS_TAG = "ds"


@dataclass
class TrainState:
    """Counters that make a resumed run continue exactly where the checkpoint was taken."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    micro_in_epoch: int = 0  # micro-batches of this epoch already consumed (per rank)
    text_batches: int = 0  # text micro-batches consumed since the start (per rank)
    samples: int = 0  # EEG samples seen, all ranks
    tokens: int = 0  # tokens seen, all ranks
    world_size: int = 1
    resumes: int = 0  # how many times this run was resumed from a checkpoint (restarts and reruns)
    config_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)  # the built model's config: what exports rebuild

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        return cls(**json.loads(text))


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or does not belong to this run's config."""


def save_checkpoint(engine, directory: str, state: TrainState, rank: int) -> None:
    """Every rank: write its DeepSpeed shard and its rank marker; rank 0 also writes ``state.json``."""
    engine.save_checkpoint(os.path.join(directory, "ds"), tag=DS_TAG)
    Path(directory, f"rank_{rank}.json").write_text(
        json.dumps({"rank": rank, "micro_in_epoch": state.micro_in_epoch, "step": state.step})
    )
    if rank == 0:
        Path(directory, "state.json").write_text(state.to_json())


def validate_checkpoint_dir(directory: str) -> TrainState:
    """Read ``state.json`` and check every rank's marker and DeepSpeed files are there."""
    state_file = Path(directory, "state.json")
    if not state_file.exists():
        raise CheckpointError(f"{directory}: no state.json (incomplete checkpoint)")
    state = TrainState.from_json(state_file.read_text())
    missing = [r for r in range(state.world_size) if not Path(directory, f"rank_{r}.json").exists()]
    if missing:
        raise CheckpointError(f"{directory}: ranks {missing} did not finish writing their checkpoint files")
    # ZeRO 0-2 write mp_rank_00_model_states.pt; ZeRO-3 writes zero_pp_rank_<r>_mp_rank_00_model_states.pt.
    if not any(Path(directory, "ds", DS_TAG).glob("*model_states.pt")):
        raise CheckpointError(f"{directory}: DeepSpeed model states are missing")
    return state


def load_checkpoint(engine, directory: str, world_size: int) -> TrainState:
    """Every rank: restore model, optimizer and scheduler from a checkpoint; return the counters."""
    state = validate_checkpoint_dir(directory)
    if state.world_size != world_size:
        # ZeRO optimizer shards are per rank; DeepSpeed reshards stage 1/2 fp32 states on load only with
        # universal checkpoints, so we insist on the same world size and say so.
        raise CheckpointError(
            f"{directory}: written by {state.world_size} workers, resuming with {world_size}; "
            "resume with scaling.num_workers matching the checkpoint"
        )
    load_path, _ = engine.load_checkpoint(
        os.path.join(directory, "ds"), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise CheckpointError(f"{directory}: DeepSpeed could not load the checkpoint")
    return state


def consolidated_state_dict(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a checkpoint directory, without DeepSpeed engines or Ray (any ZeRO stage).

    ZeRO-partitioned or bf16 checkpoints are merged with DeepSpeed's ``zero_to_fp32``; plain fp32 ZeRO-0
    checkpoints hold the whole module already.
    """
    ds_dir = os.path.join(checkpoint_dir, "ds")
    tag_dir = os.path.join(ds_dir, DS_TAG)
    shards = [f for f in os.listdir(tag_dir) if "zero_pp_rank" in f]
    if shards:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(ds_dir, tag=DS_TAG)
    else:
        blob = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                          weights_only=False)
        state = blob["module"]
    return {k: v.float().contiguous() for k, v in state.items()}
