"""Typed, nested job configs: YAML presets plus dotted command-line overrides.

Every job (preprocess, tokenizer, pretrain, instruct, tune, evaluate) has one pydantic model. A config is
built from a preset file and ``key.sub=value`` overrides, validated on the driver before any Ray resources
are requested, and any bad key or value fails with a :class:`ConfigError` that names the key, the value and
what is allowed::

    cfg = load_config(PreprocessConfig, "configs/preprocess/edf.yaml", ["output=s3://bucket/shards"])

Values in overrides are parsed as YAML scalars (``lr=3e-4`` is a float, ``tasks=[tuab,hmc]`` a list).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurolm import corpora
from neurolm.config_preprocess import EventsOptions, LeakageOptions, TsOptions
from neurolm.model_config import (
    NeuroLMConfig,
    NeuroLMConfigOverrides,
    TokenizerConfig,
    TokenizerConfigOverrides,
    deep_merge,
)
from neurolm.task_spec import TaskSpec, TaskSpecError, parse_task, resolve_task

__all__ = [
    "ConfigError",
    "Section",
    "PreprocessConfig",
    "CORPORA",
    "StageConfig",
    "load_config",
    "resolve_task_entry",
    "apply_overrides",
    "config_hash",
]

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A config file, override or value is invalid; the message names the key, the value and what is allowed."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


CORPORA: tuple[str, ...] = tuple(corpora.CORPORA)
"""Names of the registered corpora (:mod:`neurolm.corpora`, the one place a corpus is declared)."""
CorpusName = Literal[CORPORA]  # type: ignore[valid-type]  # built from the registry; errors list the names


class PreprocessConfig(Section):
    """``neurolm preprocess``: raw recordings → Parquet sample shards (docs/reference.md §1)."""

    corpus: CorpusName = Field(
        description="Which corpus to read: a name declared in neurolm/corpora.py (its reader, window, notch)."
    )
    input: str = Field(description="Root of the raw corpus: a local directory (or a single file for `edf`).")
    output: str = Field(description="Where shards go: a local directory or s3://bucket/prefix.")
    dataset: str | None = Field(
        default=None, description="Dataset name written into shards and paths; defaults to the corpus name."
    )
    l_freq: float = Field(default=0.1, gt=0, description="Band-pass lower edge in Hz (docs/reference.md §1.1).")
    h_freq: float = Field(default=75.0, gt=0, description="Band-pass upper edge in Hz (docs/reference.md §1.1).")
    notch: float | None = Field(
        default=None, description="Notch frequency in Hz; None = the corpus default (50 or 60, docs/reference.md §1.1)."
    )
    sfreq: float = Field(default=200.0, gt=0, description="Target sampling rate (200 Hz: one patch = 1 s).")
    window_s: float | None = Field(
        default=None, gt=0, description="Window length in seconds for the generic `edf` reader; None = corpus rule."
    )
    split_seed: int = Field(default=0, description="Seed of the subject-wise train/val/test split.")
    split_fractions: tuple[float, float, float] = Field(
        default=(0.8, 0.1, 0.1), description="Subject-wise train/val/test fractions where the corpus has no split."
    )
    official_split: bool = Field(
        default=False, description="Use the official split where it differs from ours (TUAB unseeded, TUSL by file)."
    )
    samples_per_shard: int = Field(default=2048, gt=0, description="Rows per Parquet shard.")
    signal_dtype: Literal["float32", "float16"] = Field(default="float32", description="Stored signal dtype.")
    num_cpus_per_task: float = Field(default=1.0, gt=0, description="CPUs reserved per recording task.")
    max_files: int | None = Field(default=None, gt=0, description="Process at most this many recordings (debug).")
    ray_address: str | None = Field(
        default=None, description="Ray cluster to use; None = connect to RAY_ADDRESS or start a local one."
    )
    pretrain_windows: bool = Field(
        default=False,
        description="Generic `edf` reader: windows of min(1024 // C, 64) s (pre-training rule, docs/reference.md §1.5) "
        "instead of window_s.",
    )
    subject_regex: str | None = Field(
        default=None,
        description="Generic `edf` reader: regex whose first group, searched in a file's path relative to input, "
        "is its subject; None = the parent folder (the file name for files directly in input).",
    )
    # --- small real tasks (issue 16; used by the `ts` reader, see neurolm/data/recipe.py) ---
    below_nyquist: Literal["lower", "refuse"] = Field(
        default="lower",
        description="Source rate below twice h_freq: lower h_freq to 0.9 x the source Nyquist frequency (and drop "
        "a notch at or above it), recorded in the manifest; or refuse the recording.",
    )
    short_trials: Literal["pad", "refuse"] = Field(
        default="pad",
        description="`ts` trials shorter than one 1-s patch: pad each channel with its own trial mean to 1 s "
        "(recorded in the manifest), or refuse.",
    )
    normalize: Literal["none", "dataset", "session", "recording"] = Field(
        default="none",
        description="`ts` reader: none = the 100 uV convention only; dataset = subtract each channel's mean and "
        "divide by one dataset-wide within-trial scale, both measured on the train split, to normalize_std; "
        "session = the dataset's scale, but each recording (.ts file, a session) has its own channel means "
        "subtracted, label-free (the DC a high-pass over the continuous session would have removed): the TRAIN "
        "file's from its train split, any other file's (TEST) from its own trials; recording = both statistics "
        "measured on each recording itself, the same way (docs/recipe.md).",
    )
    normalize_std: float = Field(
        default=0.1, gt=0, description="Within-trial std after normalize=dataset|session|recording, in model units "
        "(100 uV).",
    )
    trial_scale: Literal["none", "rms"] = Field(
        default="none",
        description="`ts` reader, after normalize: rms = each channel of each trial divided by its own RMS over the "
        "trial and set to normalize_std, so that amplitude differences between trials and recording sessions "
        "(electrode contact, headset fit) do not reach the model; a trial's offset keeps its sign and its size "
        "relative to the trial's variation (docs/recipe.md §10). none = off.",
    )

    events: EventsOptions = Field(default_factory=EventsOptions, description="`events` corpus: labels, trials.")
    ts: TsOptions = Field(default_factory=TsOptions, description="`ts` corpus: channel names, sampling rate.")
    leakage: LeakageOptions = Field(default_factory=LeakageOptions, description="Pre-training leakage guard.")

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"must be three non-negative fractions summing to 1, got {list(v)}")
        return v


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` and ``1e6`` as floats (YAML 1.1 wants ``3.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place, and return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = _yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value {raw!r} is not valid YAML ({err})") from err
        _set_dotted(tree, key, value)
    return tree


def _allowed_keys(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the section at ``loc`` (below ``cls``) accepts, or None where the path is not a section."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        candidates = (field.annotation, *get_args(field.annotation)) if field is not None else ()
        sections = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        if not sections:
            return None
        cls = sections[0]
    return sorted(cls.model_fields)


def _explain(err: ValidationError, source: str, cls: type[BaseModel] | None = None) -> ConfigError:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        msg = e["msg"]
        task_error = (e.get("ctx") or {}).get("error")
        if isinstance(task_error, TaskSpecError):  # names its file, key and value already
            where = [str(p) for p in e["loc"]] + [getattr(task_error, "key", "")]
            lines.append(f"  {'.'.join(p for p in where if p) or '<root>'}: {task_error}")
            continue
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(cls, e["loc"][:-1]) if cls is not None else None
            msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  {key} = {shown}: {msg}")
    return ConfigError("\n".join(lines))


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> C:
    """Build and validate a config from an optional YAML preset, an optional base dict and dotted overrides.

    Raises :class:`ConfigError` naming every bad key and value; nothing else is started before this returns.
    """
    tree: dict[str, Any] = dict(base or {})
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = _yaml(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, got {type(loaded).__name__}")
        tree = deep_merge(tree, loaded)
        source = str(p)
    apply_overrides(tree, list(overrides))
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        raise _explain(err, source + (f" + {len(overrides)} override(s)" if overrides else ""), cls) from None


def config_hash(cfg: BaseModel) -> str:
    """A short stable hash of a config's content (recorded in checkpoints and manifests)."""
    payload = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Training jobs (stages 1-3). Each stage config = model + data + train + optim + deepspeed + scaling + run.
# ----------------------------------------------------------------------------------------------------------


def _renamed(old: str, new: str) -> Any:
    """A before-validator rejecting a key renamed in this release, naming its new place."""

    def check(cls: type[Section], data: Any) -> Any:
        if isinstance(data, dict) and old.rsplit(".", 1)[-1] in data:
            raise ValueError(f"{old} was renamed {new}; set {new} instead")
        return data

    return model_validator(mode="before")(classmethod(check))


class TokenizerModelSection(Section):
    """Stage 1's model: a preset of :class:`~neurolm.model_config.TokenizerConfig` plus typed field overrides."""

    preset: Literal[tuple(TokenizerConfig.PRESETS)] = Field(  # type: ignore[valid-type]
        default="tiny", description=f"Tokenizer preset ({' | '.join(TokenizerConfig.PRESETS)})."
    )
    overrides: TokenizerConfigOverrides = Field(  # type: ignore[valid-type]
        default_factory=TokenizerConfigOverrides, description="TokenizerConfig fields that differ from the preset."
    )

    def build(self) -> TokenizerConfig:
        """The model config: the preset with the overrides applied."""
        return TokenizerConfig.preset(self.preset, **self.overrides.model_dump())


class NeuroLMModelSection(Section):
    """Stage 2's model: a preset of :class:`~neurolm.model_config.NeuroLMConfig` plus typed field overrides."""

    preset: Literal[tuple(NeuroLMConfig.PRESETS)] = Field(  # type: ignore[valid-type]
        default="tiny", description=f"NeuroLM preset ({' | '.join(NeuroLMConfig.PRESETS)})."
    )
    overrides: NeuroLMConfigOverrides = Field(  # type: ignore[valid-type]
        default_factory=NeuroLMConfigOverrides, description="NeuroLMConfig fields that differ from the preset."
    )

    def build(self) -> NeuroLMConfig:
        """The model config: the preset with the overrides applied (``gpt``/``encoder`` merged key by key)."""
        return NeuroLMConfig.preset(self.preset, **self.overrides.model_dump())


class InstructModelSection(Section):
    """Stage 3's model is the stage-2 export (``init``); only options of its config may be overridden."""

    overrides: NeuroLMConfigOverrides = Field(  # type: ignore[valid-type]
        default_factory=NeuroLMConfigOverrides,
        description="NeuroLMConfig fields to override on the loaded model (e.g. fix options).",
    )

    def override_dict(self) -> dict[str, Any]:
        """The overrides as given (unset keys left out), for ``load_neurolm(path, **overrides)``."""
        return self.overrides.model_dump()


def _neurolm_overrides(value: dict[str, Any]) -> dict[str, Any]:
    """Validate a dict of NeuroLMConfig overrides (unknown keys and bad values fail naming the key)."""
    return NeuroLMConfigOverrides.model_validate(value).model_dump()


class ScalingSection(Section):
    """Ray Train workers (one DeepSpeed rank each)."""

    num_workers: int = Field(default=2, ge=1, description="Number of training workers (ranks).")
    use_gpu: bool = Field(default=False, description="One GPU per worker (NCCL); False = CPU workers (gloo).")
    cpus_per_worker: float = Field(
        default=0.5, gt=0, description="CPUs reserved per worker; leave some for Ray Data (docs/platform.md §4)."
    )
    gpus_per_worker: float = Field(default=1.0, ge=0, description="GPUs per worker when use_gpu.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    min_workers: int | None = Field(
        default=None, ge=1,
        description="Elastic training (docs/resilience.md): Ray Train runs between min_workers and num_workers "
        "workers, whatever fits, and a checkpoint resumes with any worker count in that range. Every rank reads the "
        "epoch in one global order and takes its slice (the global batch of num_workers x micro_batch_size x "
        "grad_accum_steps samples is kept: fewer workers accumulate more). None = a fixed num_workers, each "
        "worker streaming its own split.",
    )
    resize_check_s: float = Field(
        default=60.0, gt=0,
        description="Elastic runs: how often Ray Train checks whether more workers fit (then it restarts the group "
        "larger, from the last checkpoint).",
    )

    @model_validator(mode="after")
    def _check_min_workers(self) -> ScalingSection:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(
                f"scaling.min_workers={self.min_workers} is above scaling.num_workers={self.num_workers}"
            )
        return self

    def worker_counts(self) -> range:
        """Every worker count a run of this config may train with."""
        return range(self.min_workers or self.num_workers, self.num_workers + 1)


class DeepSpeedSection(Section):
    """DeepSpeed engine settings; the rest of the DeepSpeed config is derived (neurolm.train.engine)."""

    zero_stage: Literal[0, 1, 2, 3] = Field(default=2, description="ZeRO stage.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto = bf16 on GPU, fp32 on CPU (fp16 is not supported)."
    )
    offload_optimizer: bool = Field(default=False, description="ZeRO-Offload of optimizer states to CPU.")
    collective_timeout_s: int = Field(
        default=600, gt=0, description="Timeout of collectives: a hung rank fails the run this fast."
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Merged last into the DeepSpeed config.")

    _activation_checkpointing_moved = _renamed("deepspeed.activation_checkpointing", "train.activation_checkpointing")


class OptimSection(Section):
    """AdamW with linear warm-up and cosine decay (docs/reference.md §2.6, §3.5, §4.5)."""

    lr: float = Field(
        default=6e-4,
        ge=0,
        description="Peak learning rate. 0: the weights keep their initial values (what still trains is not a "
        "gradient step: the tokenizer's k-means/EMA codebook; docs/recipe.md §8).",
    )
    min_lr: float = Field(default=6e-5, ge=0, description="End of the cosine decay; at most lr.")
    weight_decay: float = Field(default=0.1, ge=0, description="Applied to parameters with >= 2 dims only.")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0, description="Warm-up in optimizer steps.")
    warmup_epochs: float | None = Field(default=None, ge=0, description="Warm-up in epochs (tokenizer: 5).")
    warmup_ratio: float | None = Field(default=None, ge=0, le=1, description="Warm-up as a share of all steps.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Global gradient-norm clip; None = off.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must be in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _min_lr_at_most_lr(self) -> OptimSection:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr = {self.min_lr:g} is above lr = {self.lr:g}")
        return self


class TrainSection(Section):
    """Loop settings shared by every stage. Steps are optimizer steps (after gradient accumulation)."""

    micro_batch_size: int = Field(default=4, ge=1, description="EEG samples per worker per micro-step.")
    grad_accum_steps: int = Field(default=1, ge=1)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps (debug).")
    log_every: int = Field(default=10, ge=1, description="Report metrics every N steps.")
    eval_every: int | None = Field(default=None, ge=1, description="Validate every N steps (None: per epoch).")
    eval_batches: int | None = Field(default=None, ge=1, description="Cap on validation batches per worker.")
    checkpoint_every: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps (None: at the end of each epoch)."
    )
    seed: int = Field(default=1234, description="The one seed; every other seed derives from it and the rank.")
    activation_checkpointing: bool = Field(
        default=False,
        description="Recompute the GPT blocks' activations in the backward pass (torch.utils.checkpoint; "
        "memory for compute). Not DeepSpeed's activation checkpointing.",
    )
    stop_after_steps: int | None = Field(
        default=None, ge=1, description="End this invocation after N steps with a checkpoint, keeping the "
        "full run's schedule (time-boxed jobs); rerun with the same run name to continue."
    )
    record_samples: bool = Field(
        default=False,
        description="Debug: each rank writes the ids of the samples of every optimizer step to "
        "<run>/samples/ (what the resume tests check: every sample of an epoch once; in stage 3, which "
        "samples each step drew from the task mixture).",
    )


class IngestSection(Section):
    """How a stage streams its data (every stage); stage 3 takes its EEG shards from ``tasks``."""

    text: str | None = Field(default=None, description="GPT-2 token shards (neurolm text prepare) for the LM loss.")
    text_batch_size: int = Field(default=2, ge=0, description="Text windows per worker per micro-step.")
    text_seq_len: int = Field(default=256, ge=8, description="Tokens per text window (official: 1024).")
    local_shuffle_buffer: int = Field(default=64, ge=0, description="Rows in each worker's shuffle buffer.")
    cache_task_mb: int = Field(
        default=256, ge=0,
        description="Stage 3: a task whose laid-out rows on a worker fit in this many MB are kept in the worker's "
        "memory after the first pass and reshuffled in full each later pass, instead of re-reading the shard "
        "through Ray Data every epoch (0 = always stream).",
    )
    prefetch_batches: int = Field(default=2, ge=0)
    object_store_memory_mb: int | None = Field(
        default=None, ge=64, description="Cap on Ray Data's object-store use for this stage's ingest."
    )


class DataSection(IngestSection):
    """Where stage 1's and stage 2's samples come from (Parquet shards written by `neurolm preprocess`)."""

    train: str | list[str] = Field(description="Training shards: URI(s) of directories of part-*.parquet.")
    val: str | list[str] | None = Field(default=None, description="Validation shards.")
    max_tokens: int = Field(default=1024, ge=1, description="EEG tokens per sample after padding (official 1024).")
    block_mb: int = Field(
        default=64, ge=1,
        description="Consecutive shard files are read into blocks of about this many MB (at least one "
        "file each). Fewer, larger blocks cost less per sample (issue 11); each Train worker holds up to ~3 blocks "
        "in its node's object store beside Ray Data's own half of it.",
    )


class RunSection(Section):
    """Run identity and storage: rerunning with the same name and storage_path resumes."""

    name: str = Field(description="Stable run name; a rerun with the same name resumes from its checkpoint.")
    storage_path: str = Field(description="Where checkpoints/metrics go: local dir or s3://bucket/prefix.")
    num_to_keep: int = Field(default=2, ge=1)
    score_attribute: str | None = Field(default=None, description="Metric ranking checkpoints (e.g. val/loss).")
    score_order: Literal["min", "max"] = "min"
    max_failures: int = Field(default=1, ge=-1, description="Worker-group restarts from checkpoint (-1: inf).")
    wandb: bool = Field(default=True, description="Log to Weights & Biases (offline without API key).")
    wandb_project: str = "neurolm"
    ray_address: str | None = Field(default=None, description="None: RAY_ADDRESS or a new local instance.")
    export: bool = Field(default=True, description="Write consolidated safetensors weights at the end.")


class StageConfig(Section):
    """What every training stage's config holds; each stage adds its ``model`` and ``data`` sections."""

    train: TrainSection = Field(default_factory=TrainSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    run: RunSection

    @model_validator(mode="after")
    def _check_elastic_batch(self) -> StageConfig:
        """Elastic runs keep the global batch: every allowed worker count must divide it in micro-batches."""
        micro = self.scaling.num_workers * self.train.grad_accum_steps
        bad = [m for m in self.scaling.worker_counts() if micro % m]
        if bad:
            raise ValueError(
                f"scaling.min_workers={self.scaling.min_workers}: {bad[0]} workers cannot share the global batch of "
                f"{micro} micro-batches (scaling.num_workers x train.grad_accum_steps); choose min_workers so that "
                "every worker count from it to num_workers divides it"
            )
        return self

    def elastic_accum_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each of ``world_size`` workers (the configured
        ``grad_accum_steps`` at ``num_workers``; more on fewer workers in an elastic run)."""
        if self.scaling.min_workers is None:
            return self.train.grad_accum_steps
        return self.scaling.num_workers * self.train.grad_accum_steps // world_size

    def shard_uris(self) -> list[str]:
        """Every EEG shard directory the stage reads (checked for reachability before Ray starts)."""
        data = getattr(self, "data", None)
        if not isinstance(data, DataSection):
            return []
        return [u for v in (data.train, data.val) for u in ([v] if isinstance(v, str) else v or [])]


class TokenizerJobConfig(StageConfig):
    """Stage 1: the text-aligned VQ tokenizer (docs/reference.md §2)."""

    stage: Literal["tokenizer"] = "tokenizer"
    model: TokenizerModelSection = Field(default_factory=TokenizerModelSection)
    data: DataSection
    text_embeddings: str | None = Field(
        default=None,
        description="HF GPT-2 checkpoint dir (local or s3://) whose token embeddings the domain classifier "
        "aligns to; None = a GPT-2 of the model's width built from config (no weights offline).",
    )
    freeze_encoder: bool = Field(
        default=False,
        description="Keep the encoder (whose features stages 2 and 3 read) at its initial weights; the code "
        "projection, EMA codebook, decoders and domain classifier still train. False = official. The small-task "
        "recipe sets it: a few hundred trials of one session let tokenizer training fit that session "
        "(docs/recipe.md §8).",
    )


class PretrainJobConfig(StageConfig):
    """Stage 2: multi-channel autoregressive pre-training of GPT-2 on EEG tokens (docs/reference.md §3)."""

    stage: Literal["pretrain"] = "pretrain"
    model: NeuroLMModelSection = Field(default_factory=NeuroLMModelSection)
    data: DataSection
    tokenizer: str = Field(description="Exported tokenizer dir (stage 1 export) or an official VQ.pt.")
    gpt2: str | None = Field(default=None, description="HF GPT-2 checkpoint dir (local or s3://); None = scratch.")
    text_loss_weight: float = Field(default=1.0, ge=0, description="Weight of the text LM loss (official 1).")


class MixtureSection(Section):
    """How instruction tuning samples tasks (docs/reference.md §4.4)."""

    kind: Literal["proportional", "explicit", "temperature"] = Field(
        default="proportional", description="proportional = official (dataset size); explicit; temperature."
    )
    weights: dict[str, float] = Field(default_factory=dict, description="Task -> weight (explicit).")
    temperature: float = Field(default=1.0, gt=0, description="p ~ size^(1/T) (temperature).")
    block_micro_batches: int = Field(
        default=256, ge=1,
        description="Micro-batches per deterministic mixture block: each block holds every task in proportion "
        "to its weight, in a seeded order, one task per micro-batch.",
    )

    _block_size_renamed = _renamed("mixture.block_size", "mixture.block_micro_batches")


def resolve_task_entry(data: Any, ref_key: str = "name") -> Any:
    """Before-validator of a config entry naming a task: ``data[ref_key]`` is a built-in task name or the path of a
    task YAML file (:func:`neurolm.task_spec.resolve_task`); it is resolved here, on the driver, into
    ``definition`` (the full task) and replaced by the task's name. An entry that already carries ``definition``
    (a dumped config on a Ray worker) reads no file."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    ref, definition = data.get(ref_key), data.get("definition")
    try:
        if definition is None:
            if isinstance(ref, str):
                task = resolve_task(ref)
                data["definition"], data[ref_key] = task, task.name
            return data
        task = parse_task(definition, "inline task")
    except TaskSpecError as err:
        err.key = ref_key if definition is None else "definition"  # type: ignore[attr-defined]  # for _explain
        raise
    if ref is None:
        data[ref_key] = task.name
    elif ref != task.name:
        raise TaskSpecError(f"{ref_key} = {ref!r} but definition.name = {task.name!r}: they must agree")
    data["definition"] = task
    return data


_DEFINITION_HELP = (
    "The task's full definition, filled in from the task reference when the config is loaded (never read from a "
    "file again: workers on other nodes get it with the config)."
)


def _unique_task_names(names: list[str], what: str = "tasks") -> None:
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise ValueError(f"{what}: task name(s) {sorted(set(seen))} appear more than once")


class TaskData(Section):
    """One instruction task and its shards."""

    name: str = Field(description="A built-in task (e.g. TUAB) or the path of a task YAML file (configs/tasks/).")
    definition: TaskSpec = Field(description=_DEFINITION_HELP)
    train: str | None = None
    val: str | None = None
    test: str | None = None

    _resolve = model_validator(mode="before")(classmethod(lambda cls, data: resolve_task_entry(data)))


class InstructJobConfig(StageConfig):
    """Stage 3: multi-task instruction tuning (docs/reference.md §4)."""

    stage: Literal["instruct"] = "instruct"
    model: InstructModelSection = Field(default_factory=InstructModelSection)
    data: IngestSection = Field(default_factory=IngestSection)
    init: str = Field(description="Pre-trained NeuroLM export dir (stage 2) or an official NeuroLM-*.pt.")
    tasks: list[TaskData] = Field(min_length=1, description="Tasks and their shards.")
    mixture: MixtureSection = Field(default_factory=MixtureSection)
    eeg_max_len: int = Field(default=276, ge=1, description="EEG tokens per sample (official 276).")
    text_max_len: int = Field(default=80, ge=8, description="Text tokens per sample (official 80).")

    def shard_uris(self) -> list[str]:
        """The tasks' train and val shard directories (stage 3 reads no ``data.train``)."""
        return [u for t in self.tasks for u in (t.train, t.val) if u]

    @field_validator("tasks")
    @classmethod
    def _distinct_tasks(cls, v: list[TaskData]) -> list[TaskData]:
        _unique_task_names([t.name for t in v])
        return v

    text_loss_weight: float = Field(
        default=1.0, ge=0,
        description="Weight of the text LM loss on data.text windows (official: always added, weight 1); "
        "0 = answers only.",
    )
    augment_channel_dropout: float = Field(
        default=0.0, ge=0, lt=1,
        description="Training only: each real channel of each sample is silenced (its patches set to 0) with this "
        "probability, independently, keeping at least one channel per sample, so that answers do not hang on one "
        "electrode whose contact changes between sessions. 0 = off (official).",
    )


# ----------------------------------------------------------------------------------------------------------
# Evaluation and prediction (neurolm.eval.evaluate, neurolm.eval.predict).
# ----------------------------------------------------------------------------------------------------------


class EvalTaskData(Section):
    """One task to evaluate: a built-in name or task YAML file (carried as its definition) and one split's shards."""

    name: str = Field(
        description="A built-in task (e.g. TUAB, SelfRegulationSCP1) or the path of a task YAML file (configs/tasks/)."
    )
    definition: TaskSpec = Field(description=_DEFINITION_HELP)
    test: str | list[str] = Field(description="Shard directory URI(s) (part-*.parquet) of the evaluated split.")
    split: str = Field(default="test", description="Name of the split in the report and metric keys.")
    baseline_train: str | list[str] | None = Field(
        default=None,
        description="Train-split shard URI(s) of the task: when given, linear baselines (neurolm.eval.baselines) "
        "are fitted on them and scored on the evaluated split beside the model.",
    )
    calibrate_on: str | list[str] | None = Field(
        default=None,
        description="Validation-split shard URI(s) of the task: when given, a per-class bias on the answer "
        "log-probabilities is fitted there (neurolm.eval.calibration) and the evaluated split is also scored "
        "with it (calibrated/* metrics, beside the raw ones).",
    )

    _resolve = model_validator(mode="before")(classmethod(lambda cls, data: resolve_task_entry(data)))


class EvaluateJobConfig(Section):
    """``neurolm eval`` / ``ray_jobs/evaluate.py``: score an instruction-tuned export on test shards (docs/reference.md §4.3).

    Ray Data reads the shards, lays them out and scores them on ``concurrency`` actors that each load the model
    once; the driver collects per-row outputs (class probabilities, parsed generation, label) and writes the report.
    ``concurrency: 0`` scores in the calling process without Ray, for evaluations small enough that starting
    actors would cost more than scoring (a few thousand rows of a small model).
    """

    checkpoint: str = Field(description="Instruction-tuned export dir (local or s3://) or an official NeuroLM-*.pt.")
    ensemble: list[str] = Field(
        default_factory=list,
        description="Further instruction-tuned exports: with them, each row's answer probabilities are the mean of "
        "the checkpoint's and theirs (a seed ensemble, docs/recipe.md §13), and each member's own metrics are "
        "reported beside the ensemble's.",
    )
    tasks: list[EvalTaskData] = Field(min_length=1, description="Tasks and the shards of the evaluated split.")
    output: str = Field(description="Report directory: local path or s3://bucket/prefix.")
    batch_size: int = Field(default=32, ge=1, description="Rows per scoring call on an actor.")
    concurrency: int = Field(
        default=1, ge=0, description="Scoring actors (each holds one copy of the model); 0 = in this process, no Ray."
    )
    num_cpus_per_actor: float = Field(
        default=0.5, gt=0, description="CPUs reserved per actor; leave some for reading and layout (docs/platform.md §4)."
    )
    num_gpus_per_actor: float = Field(default=0.0, ge=0, description="GPUs per actor (0 = CPU scoring).")
    layout_num_cpus: float = Field(default=0.25, gt=0, description="CPUs reserved per read/layout task.")
    torch_threads: int = Field(default=1, ge=1, description="torch intra-op threads per CPU actor.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto = bf16 on GPU actors, fp32 on CPU actors; bf16 on a CPU with AMX scores ~3-4x faster, "
        "with slightly different numbers (docs/platform.md §11).",
    )
    eeg_max_len: int | None = Field(
        default=None, ge=1,
        description="EEG tokens per sample; None = the checkpoint's training value if recorded, else 276.",
    )
    text_max_len: int = Field(default=80, ge=8, description="Text tokens the model was tuned with (official 80).")
    official_generation: bool = Field(
        default=True, description="Also run greedy generation + positional parsing for the official hard labels."
    )
    max_new_tokens: int = Field(default=5, ge=1, description="Generated tokens (official 5).")
    use_cache: bool = Field(default=True, description="KV cache in generation (same tokens as recomputation).")
    length_normalize: bool = Field(default=False, description="Divide option log-likelihoods by their length.")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="NeuroLM config fields to override at load (e.g. fix options)."
    )

    _check_model_overrides = field_validator("model_overrides")(classmethod(lambda cls, v: _neurolm_overrides(v)))
    title: str = Field(default="NeuroLM evaluation", description="Heading of report.md.")
    ray_address: str | None = Field(default=None, description="None: RAY_ADDRESS or a new local instance.")


class PredictConfig(Section):
    """``neurolm predict``: answer a task on raw recordings, window by window, in-process (no Ray)."""

    checkpoint: str = Field(description="Instruction-tuned export dir (local or s3://).")
    task: str = Field(description="A built-in task (e.g. TUAB) or the path of a task YAML file (configs/tasks/).")
    definition: TaskSpec = Field(description=_DEFINITION_HELP)
    recordings: list[str] = Field(min_length=1, description="Raw recordings (any MNE-readable file).")
    output: str | None = Field(default=None, description="out.csv or out.json (local or s3://); None = CSV on stdout.")
    window_s: float | None = Field(default=None, gt=0, description="Window length in s; None = the task's default.")
    hop_s: float | None = Field(default=None, gt=0, description="Window hop in s; None = window_s (no overlap).")
    channels: str = Field(
        default="all",
        description="all = every 10-20 vocabulary channel of the file; task = the task's training channels "
        "(all required); or a comma-separated list of channel names.",
    )
    l_freq: float | None = Field(
        default=None, gt=0, description="Band-pass lower edge in Hz; None = the training data's (recorded in the "
        "export), else 0.1.",
    )
    h_freq: float | None = Field(
        default=None, gt=0, description="Band-pass upper edge in Hz; None = the training data's (recorded in the "
        "export), else 75.",
    )
    notch: float | None = Field(
        default=None, ge=0, description="Notch in Hz; None = the training data's where it set one, else the task's "
        "default; 0 = off.",
    )
    allow_preprocessing_mismatch: bool = Field(
        default=False,
        description="Answer even when the model's training data were normalised in a way a raw recording cannot be "
        "(normalize=dataset|session|recording, trial_scale; refused by default: the answers would be out of "
        "distribution).",
    )
    batch_size: int = Field(default=16, ge=1, description="Windows per forward pass.")
    eeg_max_len: int | None = Field(
        default=None, ge=1, description="EEG tokens per window after padding; None = as evaluation (276)."
    )
    generate: bool = Field(default=False, description="Also greedy-generate and parse the answer (official path).")
    allow_channel_mismatch: bool = Field(
        default=False,
        description="Answer even when the recording has channels the task was never trained on (refused by default).",
    )
    calibration: str | None = Field(
        default=None,
        description="metrics.json of `neurolm eval` with a val-fitted class bias for this task (calibrated/bias): "
        "each row also gets the calibrated answer (docs/recipe.md §6).",
    )
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="NeuroLM config fields to override.")

    _check_model_overrides = field_validator("model_overrides")(classmethod(lambda cls, v: _neurolm_overrides(v)))
    _resolve = model_validator(mode="before")(classmethod(lambda cls, data: resolve_task_entry(data, "task")))


# ----------------------------------------------------------------------------------------------------------
# Ray Tune search over the instruction-tuning task mixture (neurolm.tune.mixing).
# ----------------------------------------------------------------------------------------------------------


class InstructSource(Section):
    """The stage-3 config every trial starts from: a preset, inline keys deep-merged over it, then overrides."""

    preset: str | None = Field(default=None, description="Stage-3 YAML preset, e.g. configs/instruct/debug.yaml.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Inline stage-3 keys deep-merged over the preset (e.g. init, tasks)."
    )
    overrides: list[str] = Field(default_factory=list, description="Dotted stage-3 overrides, applied last.")


class MixingSearchSection(Section):
    """The search space over task mixtures."""

    space: Literal["logits", "temperature"] = Field(
        default="logits",
        description="logits: one logit per task (the first task's is fixed at 0), weights = softmax; "
        "temperature: p ~ size^(1/T) with T searched (one dimension).",
    )
    logit_bounds: tuple[float, float] = Field(default=(-3.0, 3.0), description="Uniform range of each logit.")
    temperature_bounds: tuple[float, float] = Field(
        default=(0.5, 20.0), description="Log-uniform range of the temperature T."
    )
    include_proportional: bool = Field(
        default=True, description="Evaluate the official size-proportional mixture (docs/reference.md §4.4) as the first trial."
    )

    @field_validator("logit_bounds", "temperature_bounds")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"must be [low, high] with low < high, got {list(v)}")
        return v

    @field_validator("temperature_bounds")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"temperatures must be > 0, got {list(v)}")
        return v


class TuneJobConfig(Section):
    """``neurolm tune``: Optuna + ASHA search over the stage-3 task mixing weights (issue 6, item 4)."""

    stage: Literal["tune"] = "tune"
    name: str = Field(description="Tune experiment name; results go to storage_path/name.")
    storage_path: str = Field(description="Where the experiment goes: local dir or s3://bucket/prefix.")
    output: str | None = Field(
        default=None, description="Where the best mixture config and the plot go; None = storage_path/name."
    )
    instruct: InstructSource = Field(description="The stage-3 config of every trial.")
    search: MixingSearchSection = Field(default_factory=MixingSearchSection)
    num_samples: int = Field(default=8, ge=1, description="Number of trials.")
    tie_break_loss: float = Field(
        default=1e-3, ge=0, description="Search score = objective - this x val/loss: orders trials whose balanced "
        "accuracies tie (small val splits) by the NLL of the true answers; 0 = the objective alone."
    )
    objective: Literal["mean", "worst", "weighted"] = Field(
        default="mean", description="Reduction of val/<task>/balanced_accuracy over tasks."
    )
    importance: dict[str, float] = Field(
        default_factory=dict, description="Task -> importance for objective=weighted (missing tasks: 1)."
    )
    time_attr: Literal["step", "training_iteration"] = Field(
        default="step",
        description="ASHA's clock: optimizer steps (trials then train exactly max_t steps) or validation reports.",
    )
    max_t: int = Field(default=8, ge=1, description="ASHA: a trial runs at most this long (time_attr units).")
    grace_period: int = Field(default=1, ge=1, description="ASHA: no trial is stopped before this.")
    reduction_factor: float = Field(default=2.0, gt=1, description="ASHA: keep the top 1/reduction_factor.")
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, description="None = as many as the cluster's CPUs/GPUs fit (see data_cpus)."
    )
    data_cpus: float = Field(
        default=1.0, ge=0, description="CPUs left free for Ray Data when deriving max_concurrent_trials."
    )
    driver_cpus: float = Field(
        default=0.0, ge=0, description="CPUs of each trial's driver; 0 = none (it only waits on its Train run)."
    )
    trial_max_failures: int = Field(
        default=2,
        ge=-1,
        description="Tune restarts of a failed trial (its driver or node died, or its Train run ran out of "
        "restarts); the trial resumes from its checkpoint. -1: inf.",
    )
    export_best: bool = Field(default=True, description="Export the best trial's last checkpoint (safetensors).")
    final_overrides: list[str] = Field(
        default_factory=list, description="Dotted stage-3 overrides applied to the written best config only."
    )
    tensorboard: bool = Field(default=True, description="TensorBoard event files per trial (TBXLoggerCallback).")
    wandb: bool = Field(default=False, description="One W&B run per trial (offline without an API key).")
    wandb_project: str = "neurolm-tune"
    seed: int = Field(default=0, description="Seed of the Optuna sampler.")
    ray_address: str | None = Field(default=None, description="None: RAY_ADDRESS or a new local instance.")

    @field_validator("importance")
    @classmethod
    def _importance_positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"importances must be >= 0, got {bad}")
        return v

    def instruct_config(self) -> InstructJobConfig:
        """The stage-3 config of the trials: preset, deep-merged inline keys, then the dotted overrides."""
        tree: dict[str, Any] = {}
        source = "tune instruct section"
        if self.instruct.preset is not None:
            p = Path(self.instruct.preset)
            if not p.is_file():
                raise ConfigError(f"instruct.preset: config file {str(p)!r} does not exist")
            loaded = _yaml(p.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"instruct.preset: {str(p)!r} must hold a mapping of keys")
            tree = loaded
            source = str(p)
        tree = deep_merge(tree, self.instruct.config)
        apply_overrides(tree, self.instruct.overrides)
        try:
            return InstructJobConfig.model_validate(tree)
        except ValidationError as err:
            raise _explain(err, f"instruct ({source} + inline keys + overrides)", InstructJobConfig) from None
