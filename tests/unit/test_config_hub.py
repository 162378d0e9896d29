"""Every preset in configs/ parses and builds; the GPU presets fit the hardware they name (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from neurolm.config import (
    EvaluateJobConfig,
    InstructJobConfig,
    PreprocessConfig,
    PretrainJobConfig,
    TokenizerJobConfig,
    TuneJobConfig,
    load_config,
)
from neurolm.pipeline import PipelineConfig
from neurolm.task_spec import TaskSpec, load_task_file
from neurolm.train.engine import deepspeed_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KINDS = {
    "tokenizer": TokenizerJobConfig,
    "pretrain": PretrainJobConfig,
    "instruct": InstructJobConfig,
    "preprocess": PreprocessConfig,
    "pipeline": PipelineConfig,
    "evaluate": EvaluateJobConfig,
    "tune": TuneJobConfig,
    "tasks": TaskSpec,
}
# What the command line or the pipeline supplies where a preset leaves a required value empty (as a user would).
FILL = {
    "data.train": ["data.train=[/shards/train]"],
    "tokenizer": ["tokenizer=/runs/tokenizer/export"],
    "init": ["init=/runs/pretrain/export"],
    "tasks": ["tasks=[{name: TUAB, test: /shards/tuab/test}]"],
    "checkpoint": ["checkpoint=/runs/instruct/export"],
    "output": ["output=/out"],
    "input": ["input=/in"],
}


def _has_key(cls, dotted: str) -> bool:
    """Whether the config class ``cls`` has the (nested) key ``dotted``."""
    for part in dotted.split("."):
        field = cls.model_fields.get(part)
        if field is None:
            return False
        cls = field.annotation
    return True


def load_preset(path: Path):
    """Load a preset with the values a user must give on the command line filled in."""
    cls = KINDS[path.parent.name]
    if cls is TaskSpec:  # a task file, not a job config (neurolm.task_spec)
        return load_task_file(path)
    tree = yaml.safe_load(path.read_text()) or {}
    overrides = []
    for key, fill in FILL.items():
        node = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, [], "") and _has_key(cls, key):
            overrides += fill
    if cls is InstructJobConfig and "tasks" not in tree:
        overrides += ["tasks=[{name: TUAB, train: /shards/tuab/train}]"]
    return load_config(cls, path, overrides)


PRESETS = sorted(CONFIGS.glob("*/*.yaml"))


def test_every_config_folder_is_known() -> None:
    assert {p.parent.name for p in PRESETS} <= set(KINDS), "a configs/ folder has no test mapping"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_parses(path: Path) -> None:
    assert isinstance(load_preset(path), KINDS[path.parent.name])


STAGE_PRESETS = [p for p in PRESETS if p.parent.name in ("tokenizer", "pretrain", "instruct")]


@pytest.mark.parametrize("path", [p for p in STAGE_PRESETS if p.parent.name != "instruct"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stage_preset_builds_its_model_on_the_meta_device(path: Path) -> None:
    from neurolm.models.neurolm import NeuroLM
    from neurolm.models.tokenizer import NeuralTokenizer

    cls = KINDS[path.parent.name]
    cfg = load_preset(path)
    with torch.device("meta"):
        if cls is TokenizerJobConfig:
            model = NeuralTokenizer(cfg.model.build())
        else:  # instruction presets load their model from the pre-trained export
            model = NeuroLM(cfg.model.build())
    assert sum(p.numel() for p in model.parameters()) > 0


# Official hardware: 8 x A100-80G, one worker per GPU, bf16 (docs/reference.md §2.6, §3.5, §4.5; cluster/README.md).
GLOBAL_BATCH = {"tokenizer": 512, "pretrain": 480, "instruct": 512}
GPU_PRESETS = [p for p in STAGE_PRESETS if "use_gpu: true" in p.read_text()]


@pytest.mark.parametrize("path", GPU_PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_gpu_presets_match_the_hardware_they_name(path: Path) -> None:
    from neurolm.models.neurolm import NeuroLM

    stage = path.parent.name
    cfg = load_preset(path)
    ds = deepspeed_config(cfg.deepspeed, cfg.optim, cfg.train, use_gpu=cfg.scaling.use_gpu)
    workers = cfg.scaling.num_workers
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert cfg.scaling.gpus_per_worker == 1
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * workers == GLOBAL_BATCH[stage]
    assert not ds["optimizer"]["params"]["torch_adam"]  # fused Adam on GPU
    if stage == "pretrain":
        with torch.device("meta"):
            model = NeuroLM(cfg.model.build())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # ZeRO-2, bf16: bf16 weights (2P) on every rank, grads + fp32 master + Adam moments sharded (14P / W).
        state_gb = (2 + 14 / workers) * trainable / 1e9
        assert ds["zero_optimization"]["stage"] == 2
        assert state_gb < 80 * 0.5, f"{path.name}: {state_gb:.1f} GB of training state per 80 GB GPU"
        if cfg.model.preset == "xl":
            assert cfg.train.activation_checkpointing  # activations of 30 x 1024 tokens x 48 layers
