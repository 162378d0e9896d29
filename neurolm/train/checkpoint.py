"""Checkpoints: a DeepSpeed checkpoint per rank plus a ``state.json`` sidecar, reported by every rank.

Layout of one checkpoint directory (Ray merges every rank's files into it)::

    ds/latest, ds/<tag>/mp_rank_00_model_states.pt, ds/<tag>/*zero_pp_rank_<r>_*optim_states.pt
    state.json      step, epoch, position in the epoch, samples/tokens seen, config and its hash, model config
    rank_<r>.json   each rank's own data position (proves every rank's files arrived)

A checkpoint is usable only when ``state.json`` and one ``rank_<r>.json`` per rank are present: Ray registers a
checkpoint only after every rank has reported it, and :func:`validate_checkpoint_dir` refuses anything partial.

Checkpoints are data, never code (docs/security.md): whoever can write to ``run.storage_path`` must not be able
to run code on the cluster. So before anything is unpickled, :func:`verify_checkpoint_files` checks every
DeepSpeed file against the sha256 digests its rank wrote into ``rank_<r>.json`` at save time (tampering and
mixed-up files) and scans its pickle for the classes it would create, refusing any outside
:func:`deepspeed_safe_globals`; and every load itself (ours, DeepSpeed's engine and ``zero_to_fp32``) runs
inside :func:`weights_only_loads`, torch's weights-only unpickler with that allow-list.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

DS_TAG = "ds"
_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


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


def deepspeed_safe_globals() -> list[Any]:
    """The classes DeepSpeed 0.19 pickles into its checkpoint files beside tensors and plain containers.

    Found by scanning real checkpoints (ZeRO 0-3, torch AdamW, LambdaLR; ``get_unsafe_globals_in_checkpoint``):
    ZeRO 1-3 optimizer states hold the loss scaler, the ZeRO stage enum and (ZeRO 1-2) fragment addresses;
    model states hold none. ``DynamicLossScaler`` is what fp16 training stores in the same place.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


_SWITCH_LOCK = threading.Lock()
_switch_holders = 0  # threads inside weights_only_loads(); the switch is on while any is
_switch_restore: contextlib.ExitStack | None = None


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside, DeepSpeed's own included, uses the weights-only unpickler with
    :func:`deepspeed_safe_globals` allowed.

    DeepSpeed's loaders call ``torch.load(..., weights_only=False)``; torch lets ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
    override that explicit argument (read at each call), which is the one switch that reaches inside them.
    The variable and torch's allow-list are process-wide, and the pipeline loads checkpoints from several threads
    at once (ensemble members side by side), so the switch is counted: the first thread in turns it on, the last
    one out restores what was there. Without the count, one thread leaving would turn it off under another's load
    (that load unpickling freely) or leave it on for good.
    """
    global _switch_holders, _switch_restore
    with _SWITCH_LOCK:
        if _switch_holders == 0:
            with contextlib.ExitStack() as restore:  # a failure half-way undoes what was set
                saved = {k: os.environ.get(k) for k in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
                restore.callback(_restore_environ, saved)
                os.environ[_FORCE_WEIGHTS_ONLY] = "1"
                os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)
                restore.enter_context(torch.serialization.safe_globals(deepspeed_safe_globals()))
                _switch_restore = restore.pop_all()
        _switch_holders += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            _switch_holders -= 1
            if _switch_holders == 0 and _switch_restore is not None:
                restore, _switch_restore = _switch_restore, None
                restore.close()


def _restore_environ(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_digests(directory: str) -> dict[str, str]:
    """sha256 of every file below ``directory/ds``, by path relative to ``directory``."""
    root = Path(directory)
    return {
        p.relative_to(root).as_posix(): _sha256(p) for p in sorted(Path(directory, "ds").rglob("*")) if p.is_file()
    }


def verify_checkpoint_files(directory: str) -> None:
    """Refuse a checkpoint whose DeepSpeed files could run code or were not written by the run's ranks.

    Nothing is unpickled here. Each file under ``ds/<tag>/`` must (1) match a sha256 digest from some
    ``rank_<r>.json`` (checkpoints written before digests existed skip this part), and (2) reference no class
    outside torch's weights-only set and :func:`deepspeed_safe_globals` (a scan of the pickle opcodes).

    Raises
    ------
    CheckpointError
        One line naming the file and why.
    """
    digests: dict[str, set[str]] = {}
    for marker in sorted(Path(directory).glob("rank_*.json")):
        try:
            files = json.loads(marker.read_text()).get("sha256", {})
        except (json.JSONDecodeError, AttributeError):
            raise CheckpointError(f"{marker}: not a rank marker written by neurolm (unreadable JSON)") from None
        for name, digest in files.items():
            digests.setdefault(name, set()).add(digest)
    allowed = {_qualname(g) for g in deepspeed_safe_globals()}
    root = Path(directory)
    tag_dir = Path(directory, "ds", DS_TAG)
    for path in sorted(p for p in tag_dir.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if digests:
            if name not in digests:
                raise CheckpointError(f"{path}: refusing to load: no rank of the run wrote this file (no digest)")
            if _sha256(path) not in digests[name]:
                raise CheckpointError(
                    f"{path}: refusing to load: its sha256 differs from the one written at save time"
                )
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as err:  # not a torch zip file: a plain pickle could do anything on load
            raise CheckpointError(f"{path}: refusing to load: not a torch checkpoint file ({err})") from None
        refused = sorted(set(unsafe) - allowed)
        if refused:
            raise CheckpointError(
                f"{path}: refusing to load: it would create {', '.join(refused)} when unpickled "
                "(checkpoints may hold only tensors and DeepSpeed state)"
            )


def save_checkpoint(engine, directory: str, state: TrainState, rank: int) -> None:
    """Every rank: write its DeepSpeed shard and its rank marker (with the sha256 of every file this rank
    wrote); rank 0 also writes ``state.json``."""
    engine.save_checkpoint(os.path.join(directory, "ds"), tag=DS_TAG)
    Path(directory, f"rank_{rank}.json").write_text(
        json.dumps({"rank": rank, "micro_in_epoch": state.micro_in_epoch, "step": state.step,
                    "sha256": _file_digests(directory)})
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


def content_key(fs: Any, path: str) -> str:
    """What names a checkpoint's content on ``fs`` (a ``pyarrow.fs.FileSystem``): its path and its rank markers,
    which hold the sha256 of every file (:func:`save_checkpoint`). The key of :func:`node_local_copy`."""
    import pyarrow.fs

    markers = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(path))
                     if i.path.rsplit("/", 1)[-1].startswith("rank_"))  # fmt: skip
    return path + "".join(fs.open_input_stream(m).read().decode() for m in markers)


def node_local_copy(key: str, download: Callable[[str], None], root: str | None = None) -> str:
    """A local copy of a remote checkpoint, downloaded once per node however many ranks of the node ask for it.

    The first caller downloads (``download(directory)``) into a private directory and publishes it with an
    atomic rename; callers that come while it downloads wait on a file lock, later ones find the copy. Nothing
    is ever rewritten while a rank reads it: Ray's ``Checkpoint.as_directory()`` downloads into one temporary
    directory per checkpoint object and does so again for every caller that finds the download lock free, so a
    rank starting late rewrote the files another rank of its node was loading (an ``EOFError`` from
    ``torch.load`` after a storage outage; docs/resilience.md). ``key`` names the content (the caller derives
    it from the checkpoint's rank markers, which hold the digest of every file), so a copy left behind by a
    crashed process is only reused for the same files. A failed download leaves nothing behind.
    The caller removes the copy when every rank is done with it (:func:`remove_local_copy`)."""
    root = root or tempfile.gettempdir()
    name = "neurolm-checkpoint-" + hashlib.sha256(key.encode()).hexdigest()[:24]
    target = os.path.join(root, name)
    with open(target + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.isdir(target):
                partial = tempfile.mkdtemp(prefix=name + ".partial-", dir=root)
                try:
                    download(partial)
                    os.rename(partial, target)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def remove_local_copy(directory: str) -> None:
    """Delete a :func:`node_local_copy` (call once no rank of the node reads it any more)."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.remove(directory + ".lock")


def load_checkpoint(engine, directory: str, world_size: int, elastic: bool = False) -> TrainState:
    """Every rank: restore model, optimizer and scheduler from a checkpoint; return the counters.

    A checkpoint written by another number of workers loads only when ``elastic`` (``scaling.min_workers`` set):
    its per-rank counters are rescaled to ``world_size`` (:func:`rescale_counters`) and ZeRO-1/2 optimizer
    partitions are resharded through a DeepSpeed universal checkpoint (:func:`universal_checkpoint`).
    """
    state = validate_checkpoint_dir(directory)
    verify_checkpoint_files(directory)
    ds_dir = os.path.join(directory, "ds")
    if state.world_size == world_size:
        _engine_load(engine, ds_dir, universal=False, where=directory)
        return state
    if not elastic:
        # ZeRO optimizer shards are per rank; only an elastic run converts them (docs/resilience.md).
        raise CheckpointError(
            f"{directory}: written by {state.world_size} workers, resuming with {world_size}; "
            "resume with scaling.num_workers matching the checkpoint, or set scaling.min_workers (elastic)"
        )
    partitions = sorted(Path(ds_dir, DS_TAG).glob("zero_pp_rank_*optim_states.pt"))
    if any(Path(ds_dir, DS_TAG).glob("zero_pp_rank_*model_states.pt")):
        # DeepSpeed 0.19's universal conversion of ZeRO-3 loses the Adam moments' layout (measured: 1.6e-3 off
        # after one step where ZeRO-1/2 agree to 1.5e-8), so a ZeRO-3 run keeps its worker count.
        raise CheckpointError(
            f"{directory}: a ZeRO-3 checkpoint of {state.world_size} workers cannot resume with {world_size}; "
            "elastic runs need deepspeed.zero_stage <= 2"
        )
    if partitions:
        with tempfile.TemporaryDirectory(prefix="neurolm-universal-") as tmp:
            universal_checkpoint(ds_dir, tmp)
            _engine_load(engine, tmp, universal=True, where=directory)
    else:  # ZeRO-0: the optimizer state is whole in the model-states file
        _engine_load(engine, ds_dir, universal=False, where=directory)
    return rescale_counters(state, world_size)


def _engine_load(engine, ds_dir: str, universal: bool, where: str) -> None:
    saved = engine._config.load_universal_checkpoint
    engine._config.load_universal_checkpoint = universal
    try:
        with weights_only_loads():
            load_path, _ = engine.load_checkpoint(
                ds_dir, tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
    finally:
        engine._config.load_universal_checkpoint = saved
    if load_path is None:
        raise CheckpointError(f"{where}: DeepSpeed could not load the checkpoint")


def universal_checkpoint(ds_dir: str, out_dir: str) -> None:
    """Convert the ZeRO-1/2 checkpoint ``ds_dir/<tag>`` into a DeepSpeed universal checkpoint ``out_dir/<tag>``
    (per-parameter fp32 weights and Adam moments) that an engine of any data-parallel size loads.

    Deterministic, so every rank converts its own copy without talking to the others. DeepSpeed's converter
    unpickles with ``weights_only=False``; it runs inside :func:`weights_only_loads` like every other load."""
    import argparse
    import io

    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=os.path.join(ds_dir, DS_TAG), output_folder=os.path.join(out_dir, DS_TAG),
        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
        inject_missing_state=True,  # our engines do not write universal_checkpoint_info; it holds a version only
    )
    with weights_only_loads(), contextlib.redirect_stdout(io.StringIO()):
        ds_to_universal.main(args)


def rescale_counters(state: TrainState, world_size: int) -> TrainState:
    """The counters of a checkpoint of ``state.world_size`` workers as ``world_size`` workers continue them.

    An elastic run keeps the global batch, so the global micro-batches consumed (``micro_in_epoch`` and
    ``text_batches`` are per rank) are what carries over; checkpoints fall on optimizer steps and every worker
    count divides the global batch (checked by the config), so the division is exact."""
    old, new = state.world_size, world_size
    for name in ("micro_in_epoch", "text_batches"):
        total = getattr(state, name) * old
        if total % new:
            raise CheckpointError(
                f"{name}={getattr(state, name)} on {old} workers is not a whole number per rank on {new} workers"
            )
        setattr(state, name, total // new)
    state.world_size = new
    return state


def consolidated_state_dict(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a checkpoint directory, without DeepSpeed engines or Ray (any ZeRO stage).

    ZeRO-partitioned or bf16 checkpoints are merged with DeepSpeed's ``zero_to_fp32``; plain fp32 ZeRO-0
    checkpoints hold the whole module already.
    """
    ds_dir = os.path.join(checkpoint_dir, "ds")
    tag_dir = os.path.join(ds_dir, DS_TAG)
    verify_checkpoint_files(checkpoint_dir)
    shards = [f for f in os.listdir(tag_dir) if "zero_pp_rank" in f]
    with weights_only_loads():
        if shards:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(ds_dir, tag=DS_TAG)
        else:
            blob = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                              weights_only=True)
            state = blob["module"]
    return {k: v.float().contiguous() for k, v in state.items()}
