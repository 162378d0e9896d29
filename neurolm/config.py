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
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ConfigError",
    "Section",
    "PreprocessConfig",
    "CORPORA",
    "load_config",
    "apply_overrides",
    "config_hash",
]

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A config file, override or value is invalid; the message names the key, the value and what is allowed."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


CORPORA = ("edf", "tueg", "tuab", "tuev", "seed", "hmc", "workload", "tusl", "ts")


class PreprocessConfig(Section):
    """``neurolm preprocess``: raw recordings → Parquet sample shards (spec §1)."""

    corpus: Literal["edf", "tueg", "tuab", "tuev", "seed", "hmc", "workload", "tusl", "ts"] = Field(
        description="Which corpus reader to use (one module per corpus under neurolm/data/readers)."
    )
    input: str = Field(description="Root of the raw corpus: a local directory (or a single file for `edf`).")
    output: str = Field(description="Where shards go: a local directory or s3://bucket/prefix.")
    dataset: str | None = Field(
        default=None, description="Dataset name written into shards and paths; defaults to the corpus name."
    )
    l_freq: float = Field(default=0.1, gt=0, description="Band-pass lower edge in Hz (spec §1.1).")
    h_freq: float = Field(default=75.0, gt=0, description="Band-pass upper edge in Hz (spec §1.1).")
    notch: float | None = Field(
        default=None, description="Notch frequency in Hz; None = the corpus default (50 or 60, spec §1.1)."
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


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
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
        tree = _deep_merge(tree, loaded)
        source = str(p)
    apply_overrides(tree, list(overrides))
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        raise _explain(err, source + (f" + {len(overrides)} override(s)" if overrides else "")) from None


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_hash(cfg: BaseModel) -> str:
    """A short stable hash of a config's content (recorded in checkpoints and manifests)."""
    payload = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
