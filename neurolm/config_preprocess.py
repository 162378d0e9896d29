"""Sections of :class:`neurolm.config.PreprocessConfig` for labelled recordings of any layout (``events`` corpus),
for aeon ``.ts`` problems (``ts`` corpus) and for the pre-training leakage guard.

They live at the config layer (no import from :mod:`neurolm.data`) so that ``PreprocessConfig`` can nest them and
validate them with everything else before any resource is requested::

    neurolm preprocess --corpus events --input rec/ --output shards/ events.mapping='{T1: 0, T2: 1}' \\
        events.trial_start_offset_s=0.5 window_s=3
    neurolm preprocess --corpus ts --input SelfRegulationSCP2/ --output shards/ \\
        ts.channels=[A1,A2,CFC3,CCP3,null,CFC4,CCP4]
    neurolm preprocess --corpus tueg --input /data/tueg --output shards/ leakage.enabled=false
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from neurolm.corpora import CORPORA, pretraining_corpora

__all__ = ["EventsOptions", "LeakageOptions", "TsOptions", "MNE_DEFAULT_EVENT_REGEX"]

# MNE's ``events_from_annotations`` default: every description except BAD_* and EDGE* (acquisition marks).
MNE_DEFAULT_EVENT_REGEX = r"(?![Bb][Aa][Dd]|[Ee][Dd][Gg][Ee]).*"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EventsOptions(_Options):
    """How the ``events`` corpus finds labelled trials and cuts them into samples (docs/data-events.md)."""

    source: Literal["auto", "annotations", "csv", "bids"] = Field(
        default="auto",
        description="Where labels come from: the recordings' own annotations/events, a CSV of "
        "file,start,stop,label, or a BIDS dataset's *_events.tsv. auto = csv if `csv` is set, bids if the input "
        "holds dataset_description.json, else annotations.",
    )
    csv: str | None = Field(
        default=None, description="CSV with header file,start,stop,label (seconds; file relative to input)."
    )
    mapping: dict[str, int] | None = Field(
        default=None,
        description="Event description / label name -> class index; names not in it are ignored. None = every "
        "kept name, sorted (numbers numerically), indexed 0..K-1; the mapping is written into the manifest.",
    )
    regex: str | None = Field(
        default=None,
        description="Keep only descriptions that fully match this regular expression; None = all but BAD*/EDGE* "
        "(MNE's default).",
    )
    bids_column: str = Field(
        default="trial_type", description="Column of *_events.tsv holding the label name."
    )
    trial_start_offset_s: float = Field(
        default=0.0, description="Trial start = event onset + this (braindecode's trial_start_offset_s)."
    )
    trial_stop_offset_s: float = Field(
        default=0.0,
        description="Trial stop = event onset + duration + this (braindecode's trial_stop_offset_s).",
    )
    window_stride_s: float | None = Field(
        default=None, gt=0, description="Hop between windows inside one trial; None = the window length."
    )
    short_windows: Literal["refuse", "pad", "extend"] = Field(
        default="refuse",
        description="A trial shorter than the window (at least one 1-s patch): refuse the run with the list, "
        "pad with zeros after the trial, or extend to real EEG centred on the trial (docs/data-events.md).",
    )
    nyquist: Literal["lower", "refuse"] = Field(
        default="lower",
        description="A recording whose Nyquist frequency is at or below h_freq: lower h_freq to "
        "nyquist_fraction x Nyquist (and drop a notch at or above Nyquist), recorded in the manifest; or refuse.",
    )
    nyquist_fraction: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Lowered band-pass upper edge as a fraction of the source Nyquist.",
    )

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"not a regular expression ({err})") from None
        return v

    @field_validator("mapping")
    @classmethod
    def _mapping_indices(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            if not v:
                raise ValueError("must name at least one event, e.g. {T1: 0, T2: 1}")
            bad = {k: i for k, i in v.items() if i < 0}
            if bad:
                raise ValueError(f"class indices must be >= 0, got {bad}")
        return v

    @field_validator("csv")
    @classmethod
    def _csv_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError("no such file")
        return v

    @model_validator(mode="after")
    def _source_needs_csv(self) -> EventsOptions:
        if self.source == "csv" and self.csv is None:
            raise ValueError("source = 'csv' needs events.csv = path/to/labels.csv")
        return self


class TsOptions(_Options):
    """What an aeon ``.ts`` problem does not say about itself (``ts`` corpus, docs/data.md): its channel names and
    sampling rate, for a problem without them in ``auxiliary/<Name>.json``."""

    channels: tuple[str | None, ...] | None = Field(
        default=None,
        description="Channel names in the file's channel order, one per channel, e.g. [C3, CZ, C4]; null for a "
        "channel to drop (an EOG channel). None = the 'channels' of auxiliary/<Name>.json, else the reader's "
        "defaults for the problems neurolm ships tasks for.",
    )
    sfreq: float | None = Field(
        default=None, gt=0, description="Sampling rate in Hz; None = the 'sfreq' of auxiliary/<Name>.json."
    )

    @field_validator("channels")
    @classmethod
    def _channel_list(cls, v: tuple[str | None, ...] | None) -> tuple[str | None, ...] | None:
        if v is not None:
            named = [name for name in v if name is not None]
            if not named or any(not name.strip() for name in named):
                raise ValueError("must list one channel name (or null to drop it) per channel, e.g. [C3, CZ, C4]")
            repeated = sorted({name for name in named if named.count(name) > 1})
            if repeated:
                raise ValueError(f"channel names {repeated} are given more than once")
        return v


class LeakageOptions(_Options):
    """Leakage guard: keep downstream val/test subjects and recordings out of pre-training corpora."""

    enabled: bool = Field(
        default=True,
        description="Exclude from a pre-training corpus every subject and recording in a downstream dataset's "
        "held-out splits; the exclusions are written to <dataset>/_leakage.json and the manifest.",
    )
    corpora: tuple[str, ...] = Field(
        default_factory=pretraining_corpora,
        description="Corpora treated as pre-training corpora (the guard applies to them); default: those "
        "declared with pretraining=True in neurolm/corpora.py (tueg).",
    )
    downstream: list[str] | None = Field(
        default=None,
        description="Downstream dataset directories (local or s3://) whose _manifest.json lists the held-out "
        "recordings; None = every dataset beside this one under `output` whose corpus is not in `corpora`.",
    )
    splits: tuple[str, ...] = Field(default=("val", "test"), min_length=1, description="Held-out splits.")
    match: tuple[Literal["subject", "recording"], ...] = Field(
        default=("subject", "recording"),
        min_length=1,
        description="subject: drop every recording of a held-out subject; recording: drop a recording whose file "
        "name (without folder and suffix) is a held-out recording's.",
    )

    @field_validator("corpora")
    @classmethod
    def _known_corpora(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in v if name not in CORPORA]
        if unknown:
            raise ValueError(f"unknown corpus {unknown}; known: {', '.join(CORPORA)}")
        return v
