"""Elastic resume without Ray: the config's worker-count rules, the global order of an epoch's micro-batches, and
real DeepSpeed checkpoints of 2 gloo ranks resumed by 1 rank (ZeRO-0/1/2 resharded, ZeRO-3 refused)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from neurolm.config import ConfigError, TokenizerJobConfig, load_config
from neurolm.train.checkpoint import CheckpointError, TrainState, rescale_counters
from neurolm.train.loop import ResumableTextStream, global_order_batches

PRESET = "configs/tokenizer/debug.yaml"


def _cfg(*overrides: str) -> TokenizerJobConfig:
    return load_config(TokenizerJobConfig, PRESET, ["data.train=/tmp/none", *overrides])


def test_elastic_worker_counts_must_share_the_global_batch() -> None:
    with pytest.raises(ConfigError) as err:  # a group of 3 cannot share 4 micro-batches
        _cfg("scaling.num_workers=4", "scaling.min_workers=2")
    assert "scaling.min_workers=2" in str(err.value) and "3 workers" in str(err.value)
    assert "scaling.min_workers=2: 3 workers cannot share" in str(err.value).splitlines()[1]
    four = _cfg("scaling.num_workers=4", "scaling.min_workers=2", "train.grad_accum_steps=3")
    assert list(four.scaling.worker_counts()) == [2, 3, 4] and four.elastic_accum_steps(3) == 4
    with pytest.raises(ConfigError, match="above scaling.num_workers"):
        _cfg("scaling.num_workers=2", "scaling.min_workers=3")
    ok = _cfg("scaling.num_workers=2", "scaling.min_workers=1", "train.grad_accum_steps=3")
    assert [ok.elastic_accum_steps(m) for m in (1, 2)] == [6, 3]
    fixed = _cfg("scaling.num_workers=2", "train.grad_accum_steps=3")
    assert list(fixed.scaling.worker_counts()) == [2] and fixed.elastic_accum_steps(2) == 3


def test_an_epoch_in_global_order_is_consumed_once_across_worker_counts() -> None:
    """2 workers take 3 steps of 2 micro-batches each, then 1 worker (accumulating 2) continues from the
    global position; then 1 -> 2 again. Every micro-batch of the epoch is taken exactly once, in order per step."""
    epoch = [{"g": g} for g in range(20)]
    taken: list[int] = []
    position = 0  # global micro-batches consumed
    for world, steps in ((2, 3), (1, 4), (2, 3)):
        per_rank = steps * (2 // world)  # the global batch is 2 micro-batches
        streams = [global_order_batches(iter(epoch), r, world, position) for r in range(world)]
        for _ in range(per_rank):
            taken.extend(next(s)["g"] for s in streams)
        position += per_rank * world
    assert sorted(taken) == list(range(20)) and len(set(taken)) == 20
    with pytest.raises(StopIteration):  # the epoch is used up
        next(global_order_batches(iter(epoch), 0, 1, position))


class TextRows:
    """Text windows ``0..n-1`` as Ray's ``DataIterator`` hands them out (``iter_torch_batches``), in order."""

    def __init__(self, n: int) -> None:
        self.n = n

    def iter_torch_batches(self, batch_size: int, drop_last: bool):
        for start in range(0, self.n - batch_size + 1 if drop_last else self.n, batch_size):
            yield {"tokens": torch.arange(start, min(start + batch_size, self.n))[:, None]}


def test_the_text_stream_resumes_twice_on_other_worker_counts_where_it_stopped() -> None:
    """Windows 0..9 in batches of 2 (5 per pass, cycling). 2 ranks take 3 batches each, then 1 rank 4, then 2 ranks
    2 each: together the endless sequence in order, and each stream's ``consumed`` is what the checkpoint stores
    (it counted 0 after a resume once, so a second resume restarted too early)."""
    rows = TextRows(10)
    taken: list[int] = []
    consumed, world_before = 0, 1
    for world, n in ((2, 3), (1, 4), (2, 2)):
        per_rank = consumed * world_before // world  # rescale_counters
        streams = [ResumableTextStream(rows, 2, per_rank, stride=world, offset=r) for r in range(world)]
        assert all(s.consumed == per_rank for s in streams)
        for _ in range(n):
            taken.extend(int(s.next()[0, 0]) for s in streams)
        consumed, world_before = streams[0].consumed, world
        assert all(s.consumed == per_rank + n for s in streams)
    assert taken == [(2 * i) % 10 for i in range(len(taken))]


def test_counters_rescale_to_the_new_worker_count() -> None:
    state = TrainState(step=6, micro_in_epoch=6, text_batches=6, world_size=2)
    one = rescale_counters(TrainState(**{**state.__dict__}), 1)
    assert (one.micro_in_epoch, one.text_batches, one.world_size, one.step) == (12, 12, 1, 6)
    with pytest.raises(CheckpointError, match="not a whole number"):
        rescale_counters(TrainState(micro_in_epoch=3, world_size=1), 2)


# -- real DeepSpeed checkpoints: 2 ranks save, 1 rank resumes ----------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.LayerNorm(13), torch.nn.Linear(13, 3))


def _step(engine, world: int, rank: int, seed: int) -> None:
    """One optimizer step on a global batch of 4 rows, split over ``world`` ranks (same rows whatever the world)."""
    rows = torch.randn(4, 7, generator=torch.Generator().manual_seed(seed))
    per = 4 // world
    loss = engine(rows[rank * per : (rank + 1) * per]).pow(2).mean()
    engine.backward(loss)
    engine.step()


def _rank_main(rank: int, world: int, port: int, zero: int, work: str, mode: str) -> None:
    """One gloo rank. It ends with ``os._exit(0)`` once its work is done: a normal interpreter exit runs the C++
    destructors of whatever DeepSpeed still holds (its process groups, gloo's worker threads), and once in the
    fresh-clone CI (2026-12-04) rank 0 aborted with "terminate called without an active exception" (a joinable
    C++ thread destroyed), most likely there; it did not recur in 8 runs here. faulthandler prints every thread's
    Python stack should a rank die anywhere else."""
    import faulthandler
    import gc

    import torch.distributed as dist

    faulthandler.enable(all_threads=True)

    from neurolm.config import DeepSpeedSection, OptimSection, TrainSection
    from neurolm.train.checkpoint import load_checkpoint, save_checkpoint
    from neurolm.train.engine import build_engine

    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu"}  # fmt: skip
    os.environ.update(env)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # grad_accum_steps = 2 / world keeps DeepSpeed's global batch (micro x accum x world) the same.
        engine = build_engine(_model(), DeepSpeedSection(zero_stage=zero), OptimSection(lr=1e-2, min_lr=1e-3),
                              TrainSection(micro_batch_size=4 // world), False, total_steps=10, steps_per_epoch=10)  # fmt: skip
        ckpt = os.path.join(work, "ckpt")
        if mode == "save":
            for s in range(2):
                _step(engine, world, rank, s)
            state = TrainState(step=2, micro_in_epoch=2, text_batches=2, world_size=world)
            os.makedirs(ckpt, exist_ok=True)
            save_checkpoint(engine, ckpt, state, rank)
        else:
            try:
                state = load_checkpoint(engine, ckpt, world, elastic=(mode == "elastic"))
            except CheckpointError as err:
                Path(work, "error.txt").write_text(str(err))
                state = None
            if state is not None:
                Path(work, f"state_{world}.json").write_text(state.to_json())
        if state is not None:
            _step(engine, world, rank, 99)
            if rank == 0:
                torch.save({k: v.detach().clone() for k, v in engine.module.state_dict().items()},
                           os.path.join(work, f"{mode}_{world}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()
    del engine
    gc.collect()
    os._exit(0)  # see the docstring: the work is on disk, skip the teardown


def _spawn(world: int, zero: int, work: Path, mode: str) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(world, port, zero, str(work), mode), nprocs=world)


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 2])
def test_a_checkpoint_of_two_ranks_resumes_on_one_with_the_same_next_step(tmp_path: Path, zero: int) -> None:
    """After resharding (ZeRO-2: a DeepSpeed universal checkpoint; ZeRO-0: as saved) one rank's next step on the
    same global batch gives the weights two ranks give, to fp32 rounding; the counters are rescaled."""
    _spawn(2, zero, tmp_path, "save")
    _spawn(2, zero, tmp_path, "same")  # the 2-rank continuation: the reference
    _spawn(1, zero, tmp_path, "elastic")
    ref, got = torch.load(tmp_path / "same_2.pt"), torch.load(tmp_path / "elastic_1.pt")
    worst = max(float((ref[k] - got[k]).abs().max()) for k in ref)
    assert worst < 1e-6, f"1-rank resume differs from the 2-rank continuation by {worst}"
    state = TrainState.from_json((tmp_path / "state_1.json").read_text())
    assert (state.world_size, state.micro_in_epoch, state.text_batches, state.step) == (1, 4, 4, 2)


@pytest.mark.slow
def test_another_worker_count_is_refused_unless_elastic_and_zero3_always(tmp_path: Path) -> None:
    _spawn(2, 2, tmp_path, "save")
    _spawn(1, 2, tmp_path, "fixed")
    assert "written by 2 workers, resuming with 1" in (tmp_path / "error.txt").read_text()
    zero3 = tmp_path / "z3"
    _spawn(2, 3, zero3, "save")
    _spawn(1, 3, zero3, "elastic")
    assert "ZeRO-3 checkpoint of 2 workers cannot resume with 1" in (zero3 / "error.txt").read_text()
