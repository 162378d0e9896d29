"""Every input of a training stage checked on the driver before Ray is started or asked for anything.

:func:`check_stage_inputs` is the first thing :func:`neurolm.train.launch.fit_stage` does: sample shards exist
and follow the shard schema, text shards have their ``tokens`` column, the ``tokenizer`` / ``init`` exports
exist and hold the right kind of model, Hugging Face GPT-2 directories exist, and the run's storage is
reachable. Each failure is one :class:`~neurolm.config.ConfigError` line naming the key and the value.
"""

from __future__ import annotations

from neurolm import storage
from neurolm.config import ConfigError, StageConfig
from neurolm.data.validate import check_shard_inputs, check_text_inputs
from neurolm.models.io import check_export

__all__ = ["check_stage_inputs"]


def _check_hf_dir(key: str, path: str | None) -> None:
    if path is None:
        return
    try:
        if not storage.exists(storage.join(path, "config.json")):
            raise ConfigError(f"{key} = {path!r}: not a Hugging Face model directory (no config.json)")
    except storage.StorageError as err:
        raise ConfigError(f"{key} = {path!r}: {err}") from None


def check_stage_inputs(cfg: StageConfig) -> None:
    """Raise :class:`ConfigError` for the first input of ``cfg`` that is missing or malformed."""
    tasks = getattr(cfg, "tasks", None)
    if tasks is None:  # stages 1-2 read data.train; stage 3 reads its tasks' shards instead
        check_shard_inputs("data.train", cfg.data.train)
    else:  # stage 3's data section has no train/val: its tasks name their own shards
        for i, task in enumerate(tasks):
            check_shard_inputs(f"tasks[{i}].train ({task.name})", task.train)
            check_shard_inputs(f"tasks[{i}].val ({task.name})", task.val, required=False)
    check_shard_inputs("data.val", getattr(cfg.data, "val", None), required=False)
    if cfg.data.text_batch_size > 0:
        check_text_inputs("data.text", cfg.data.text)
    if hasattr(cfg, "tokenizer"):
        check_export("tokenizer", cfg.tokenizer, "tokenizer")
    if hasattr(cfg, "init"):
        check_export("init", cfg.init, "neurolm")
    _check_hf_dir("gpt2", getattr(cfg, "gpt2", None))
    _check_hf_dir("text_embeddings", getattr(cfg, "text_embeddings", None))
    try:
        storage.check_reachable(cfg.run.storage_path)
    except storage.StorageError as err:
        raise ConfigError(f"run.storage_path = {cfg.run.storage_path!r}: {err}") from None
