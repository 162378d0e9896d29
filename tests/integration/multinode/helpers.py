"""Shared pieces of the multi-node tests: stage configs, run histories, weights, placement, listening sockets."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from neurolm import storage
from neurolm.config import TokenizerJobConfig, load_config
from neurolm.train.checkpoint import TrainState

PRESET = "configs/tokenizer/debug.yaml"


def tokenizer_cfg(eeg_shards: dict[str, str], text_shards: str, s3_uri: str, name: str, *overrides: str):
    """The debug tokenizer stage on both sample corpora, its 2 workers spread over the worker nodes."""
    return load_config(TokenizerJobConfig, PRESET, [
        f"data.train=[{eeg_shards['mmidb_train']},{eeg_shards['scp1_train']}]",
        f"data.text={text_shards}", "data.text_seq_len=64",
        f"run.storage_path={storage.join(s3_uri, 'multinode-runs')}", f"run.name={name}", "run.wandb=false",
        "scaling.placement_strategy=SPREAD", *overrides,
    ])  # fmt: skip


def history(cfg) -> list[dict]:
    text = storage.read_text(storage.join(cfg.run.storage_path, cfg.run.name, "metrics.jsonl"))
    return [json.loads(line) for line in text.splitlines()]


def state(checkpoint_uri: str) -> TrainState:
    return TrainState.from_json(storage.read_text(storage.join(checkpoint_uri, "state.json")))


def weights(export_dir: str) -> dict[str, torch.Tensor]:
    from neurolm.models.io import load_pretrained

    return load_pretrained(export_dir).state_dict()


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a daemon thread; the dict receives ``result`` or ``error``."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def wait_for_checkpoint(cfg, step: int, thread: threading.Thread, timeout_s: float = 900) -> float:
    """Wait until the checkpoint of ``step`` is complete on storage; returns the time it appeared.

    A checkpoint is registered once every rank has reported it, and ranks report synchronously: when the files
    of ``step + checkpoint_every`` begin to appear, ``step`` is registered. Callers pass the step they want to
    be sure about and get the moment its ``state.json`` exists."""
    uri = storage.join(cfg.run.storage_path, cfg.run.name, f"step_{step:07d}", "state.json")
    deadline = time.monotonic() + timeout_s
    while not storage.exists(uri):
        assert thread.is_alive(), "the run ended before the checkpoint appeared"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} after {timeout_s} s"
        time.sleep(0.5)
    return time.time()


def train_worker_actors() -> dict[str, str]:
    """Actor id → node name of every Train worker the cluster has had (alive or dead)."""
    import ray
    from ray.util.state import list_actors

    name_of = {n["NodeID"]: n["NodeName"] for n in ray.nodes()}
    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=10_000)
    return {a.actor_id: name_of.get(a.node_id, "?") for a in actors}


def listening_addresses(pids: list[int]) -> dict[str, list[int]]:
    """``address:port`` → pids for every TCP socket the given processes listen on (``ss -ltnpH``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    wanted = set(pids)
    found: dict[str, list[int]] = {}
    for line in out.splitlines():
        fields = line.split()
        for part in fields[-1].split("pid=")[1:]:
            pid = int(part.split(",", 1)[0])
            if pid in wanted:
                found.setdefault(fields[3], []).append(pid)
    return found
