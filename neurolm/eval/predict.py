"""``neurolm predict``: answer a task on your own recordings, window by window, in-process (no Ray).

::

    neurolm predict --checkpoint runs/instruct/export --task TUAB recording.edf --output answers.csv
    neurolm predict --checkpoint DIR --task HMC night.edf --channels task --notch 50 --output night.json

Each recording goes through the preprocessing of the training shards (docs/reference.md §1.1; the generic reader path of
:mod:`neurolm.data.readers.edf`): MNE read → channel names normalised to the 10-20 vocabulary → 0.1–75 Hz band-pass
→ notch → resample to 200 Hz → units of 100 µV, then non-overlapping windows of the task's sample length
(the task's corpus in the registry, :mod:`neurolm.corpora`, where its YAML file's ``predict`` section does not set
them; :data:`TASK_RULES` for the built-ins: TUAB 10 s, TUEV 5 s, SEED 4 s, HMC 30 s, Workload 4 s, TUSL 10 s,
SelfRegulationSCP1 3 s; ``--window-s`` and ``--hop-s`` override). ``--task`` is a
built-in task name or the path of a task YAML file (configs/tasks/). Every window is answered by constrained scoring of the task's answer
options (:func:`neurolm.eval.evaluate.score_batch`): the answer is the most probable option and the output has
one probability column per class. ``--generate`` adds the official path: the greedy generation and the answer
parsed from it (empty when it names no answer).

Output (CSV on stdout, or ``--output`` ``.csv`` / ``.json``, local or ``s3://``): one row per window with
``recording, window, start_s, answer, p_<class>...``. A file that cannot be read or processed fails with a message
naming the file and the reason, and the exit code is 1 (the other recordings are still answered).

The band-pass and notch default to the ones the task's training data went through, which an instruction-tuned
export records (``extra.preprocessing``, from the shards' manifest; e.g. the small-task presets' 40-Hz edge), else
to the official 0.1–75 Hz. Training data normalised with their own dataset's statistics or trial by trial
(``normalize``, ``trial_scale``) cannot be matched on a raw recording: that is refused with exit code 2, unless
``--allow-preprocessing-mismatch`` (docs/recipe.md §17).

A recording with channels the task was never trained on (the channels of the task's training shards,
:data:`TASK_RULES`) is refused with both channel sets named and exit code 2, unless ``--allow-channel-mismatch``:
the model's answers on unseen channels are out of distribution. ``--channels task`` keeps only the task's channels.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from neurolm import storage
from neurolm.config import ConfigError, PredictConfig, apply_overrides, load_config
from neurolm.corpora import GENERIC_CORPUS
from neurolm.data.readers.base import fixed_window_starts
from neurolm.data.signal import RecordingError, SignalParams, load_recording
from neurolm.data.tasks import TASKS, Task, TaskTokens, get_task, tokenize_task

__all__ = [
    "TaskRules",
    "match_training_preprocessing",
    "trained_preprocessing",
    "TASK_RULES",
    "GENERIC_RULES",
    "RecordingWindows",
    "task_rules",
    "window_recording",
    "check_channels",
    "predict_windows",
    "predict",
    "format_predictions",
    "cli",
]

SFREQ = 200.0  # one patch = one second at 200 Hz (docs/reference.md §1.2)
DEFAULT_L_FREQ, DEFAULT_H_FREQ = 0.1, 75.0  # the official band-pass (docs/reference.md §1.1)


@dataclass(frozen=True)
class TaskRules:
    """How a task's samples are cut from a recording (docs/reference.md §1.1, §1.7).

    Attributes
    ----------
    window_s : float
        Sample length in seconds.
    notch_hz : float
        Default notch (the official maker's, docs/reference.md §1.1).
    channels : tuple of str or None
        The task's training channels, in storage order (``--channels task``); None = every vocabulary channel.
    exclude : tuple of str
        Vocabulary channels the task never uses (SEED's M1/M2).
    """

    window_s: float
    notch_hz: float
    channels: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


    @classmethod
    def of(cls, task: Task) -> TaskRules:
        """A task's rules: its file's ``predict`` section where set, else its corpus's (:mod:`neurolm.corpora`)."""
        rules = task.predict_rules()
        return cls(float(rules.window_s or GENERIC_RULES.window_s), float(rules.notch_hz or 0.0), rules.channels,
                   rules.exclude or ())  # fmt: skip


GENERIC_RULES = TaskRules(float(GENERIC_CORPUS.window_s), GENERIC_CORPUS.notch_hz)  # type: ignore[arg-type]
"""For a task without a corpus or ``predict`` section: the generic ``edf`` corpus's (10-s windows, 50 Hz notch)."""

TASK_RULES: Mapping[str, TaskRules] = MappingProxyType({name: TaskRules.of(t) for name, t in TASKS.items()})
"""Per built-in task: sample length, notch and channels of the training shards (its corpus, or its YAML file)."""


def task_rules(task: str | Task) -> TaskRules:
    """The preprocessing rules of a task: its definition, or a built-in task's name (KeyError when unknown)."""
    return TaskRules.of(get_task(task) if isinstance(task, str) else task)


@dataclass(frozen=True)
class RecordingWindows:
    """A recording cut into windows: ``signals`` (n, C, T·200) in units of 100 µV at 200 Hz."""

    source: str
    signals: np.ndarray
    start_s: np.ndarray
    channel_indices: np.ndarray
    channel_names: tuple[str, ...]
    window_s: float

    def __len__(self) -> int:
        return int(self.signals.shape[0])


def _required_channels(mode: str, rules: TaskRules) -> Sequence[str] | None:
    if mode == "all":
        return None
    if mode == "task":
        if rules.channels is None:
            return None  # the task uses every channel its recordings have (e.g. SEED)
        return rules.channels
    names = [c.strip() for c in mode.split(",") if c.strip()]
    if not names:
        raise ConfigError(f"channels = {mode!r}: give all, task or a comma-separated list of channel names")
    return names


def window_recording(path: str | Path, cfg: PredictConfig) -> RecordingWindows:
    """Preprocess one recording with the task's rules and cut it into windows.

    Raises
    ------
    RecordingError
        The file cannot be read, lacks required channels, has bad values, or is shorter than one window.
    """
    rules = task_rules(cfg.definition)
    notch = rules.notch_hz if cfg.notch is None else (cfg.notch or None)
    l_freq = DEFAULT_L_FREQ if cfg.l_freq is None else cfg.l_freq
    h_freq = DEFAULT_H_FREQ if cfg.h_freq is None else cfg.h_freq
    try:
        params = SignalParams(l_freq=l_freq, h_freq=h_freq, notch=notch, sfreq=SFREQ)
    except ValueError as err:
        raise ConfigError(f"invalid filter settings: {err}") from None
    required = _required_channels(cfg.channels, rules)
    rec = load_recording(path, params, required=required, exclude=rules.exclude, drop_flat=required is None)
    window_s = cfg.window_s or rules.window_s
    hop_s = cfg.hop_s or window_s
    window, hop = int(round(window_s * rec.sfreq)), int(round(hop_s * rec.sfreq))
    starts = fixed_window_starts(rec.data.shape[1], window, hop)
    if len(starts) == 0:
        raise RecordingError(
            path, f"recording is {rec.duration_s:.1f} s long, shorter than one {window_s:g} s window"
        )
    index = starts[:, None] + np.arange(window)[None, :]  # (n, window)
    signals = np.ascontiguousarray(np.transpose(rec.data[:, index], (1, 0, 2)))  # (n, C, window)
    return RecordingWindows(
        source=str(path),
        signals=signals,
        start_s=starts / rec.sfreq,
        channel_indices=np.asarray(rec.channels.indices),
        channel_names=tuple(rec.channels.names),
        window_s=window_s,
    )


def check_channels(windows: RecordingWindows, task: str | Task, allow_mismatch: bool = False) -> str | None:
    """Compare the recording's channels with the ones ``task`` (a definition or a built-in name) was trained on.

    Returns None when they fit, or a one-line note when the recording lacks some of the task's channels (the
    model sees fewer channels than in training, which it supports). Channels the task never saw raise
    :class:`ConfigError` naming both sets, unless ``allow_mismatch`` (then the message is returned as a warning).
    Tasks whose rules name no channel set (they train on every vocabulary channel) always fit.
    """
    trained = task_rules(task).channels
    task = task if isinstance(task, str) else task.name
    if trained is None:
        return None
    used = list(windows.channel_names)
    unseen = [c for c in used if c not in trained]
    missing = [c for c in trained if c not in used]
    if unseen:
        message = (
            f"{windows.source}: channels {','.join(unseen)} were never seen by task {task}, which was trained on "
            f"{','.join(trained)}; the recording gives {','.join(used)}"
        )
        if not allow_mismatch:
            raise ConfigError(
                f"{message}. Use --channels task to keep only the task's channels, or --allow-channel-mismatch "
                "to answer anyway"
            )
        return f"{message} (answering anyway: --allow-channel-mismatch)"
    if missing:
        return f"{windows.source}: task {task} was trained on {','.join(trained)}; missing here: {','.join(missing)}"
    return None



def probability_columns(task: Task) -> list[str]:
    """``p_<answer>`` per class, e.g. ``p_No, p_Yes`` or ``p_spike_and_slow_wave, ...``."""
    return [f"p_{storage.slug(a)}" for a in task.answers]


@torch.no_grad()
def predict_windows(
    model: Any,
    task: Task,
    tokens: TaskTokens,
    windows: RecordingWindows,
    *,
    eeg_max_len: int,
    batch_size: int = 16,
    generation: bool = False,
    decode: Callable[[list[int]], str] | None = None,
) -> list[dict[str, Any]]:
    """One row per window: ``window``, ``start_s``, ``answer`` (the most probable option), ``p_<class>``;
    with ``generation`` also ``generated`` (the decoded new tokens) and ``generated_answer`` (parsed, or "")."""
    from neurolm.data.layout import layout_instruction_batch
    from neurolm.eval.evaluate import score_batch
    from neurolm.eval.metrics import PARSE_FAILURE

    columns = probability_columns(task)
    rows: list[dict[str, Any]] = []
    for lo in range(0, len(windows), batch_size):
        signals = list(windows.signals[lo : lo + batch_size])
        batch = layout_instruction_batch(
            signals,
            [windows.channel_indices] * len(signals),
            np.zeros(len(signals), dtype=np.int64),
            tokens,
            eeg_max_len=eeg_max_len,
            evaluation=True,
            max_seconds=model.config.encoder.time_rows,
        )
        out = score_batch(model, task, tokens, batch, decode=decode, generation=generation)
        for i in range(len(signals)):
            row: dict[str, Any] = {
                "window": lo + i,
                "start_s": round(float(windows.start_s[lo + i]), 6),
                "answer": task.answers[int(out["pred"][i])],
            }
            row.update({c: float(p) for c, p in zip(columns, out["probs"][i], strict=True)})
            if generation:
                g = int(out["gen_pred"][i])
                row["generated"] = str(out["generated"][i])
                row["generated_answer"] = "" if g == PARSE_FAILURE else task.answers[g]
            rows.append(row)
    return rows


def calibration_bias(metrics_uri: str, task: Task) -> np.ndarray:
    """The class bias fitted on ``task``'s validation split by ``neurolm eval`` (``calibrated/bias`` of a
    ``<split>/<task>`` entry of its ``metrics.json``, local or s3://).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, holds no bias for ``task``, or a bias of the wrong length.
    """
    try:
        report = json.loads(storage.read_text(metrics_uri))
    except (OSError, ValueError) as err:  # storage.StorageError is an OSError
        raise ConfigError(f"calibration = {metrics_uri!r}: cannot read a metrics.json ({err})") from None
    found = [
        (key, entry["metrics"]["calibrated/bias"])
        for key, entry in (report.get("tasks") or {}).items()
        if entry.get("task") == task.name and "calibrated/bias" in (entry.get("metrics") or {})
    ]
    if not found:
        raise ConfigError(
            f"calibration = {metrics_uri!r}: no calibrated/bias for task {task.name} (evaluate with the task's "
            "val split as calibrate_on)"
        )
    key, bias = found[0]
    if len(bias) != task.num_classes:
        raise ConfigError(
            f"calibration = {metrics_uri!r}: {key} has a bias of {len(bias)} classes, task {task.name} has "
            f"{task.num_classes}"
        )
    return np.asarray(bias, dtype=np.float64)


def trained_preprocessing(checkpoint: str, task: str) -> dict[str, Any] | None:
    """What ``task``'s training data went through, as the export recorded it (``extra.preprocessing``; exports
    of stage 3 since 2026-12-04), or None (an official checkpoint, an older export, or a task without it)."""
    if checkpoint.endswith(".pt"):
        return None
    try:
        meta = json.loads(storage.read_text(storage.join(checkpoint, "config.json")))
    except (OSError, ValueError):
        return None
    return ((meta.get("extra") or {}).get("preprocessing") or {}).get(task)


def match_training_preprocessing(cfg: PredictConfig, trained: Mapping[str, Any] | None) -> PredictConfig:
    """``cfg`` with the band-pass and notch it leaves unset taken from the training data's preprocessing
    (``trained``, see :func:`trained_preprocessing`); the rest of the filters from the defaults.

    Raises
    ------
    ConfigError
        The training data were normalised with statistics of their own dataset or trial by trial
        (``normalize``, ``trial_scale``), which a raw recording here does not get, and
        ``allow_preprocessing_mismatch`` is off: the answers would be out of distribution.
    """
    if not trained:
        return cfg
    update: dict[str, Any] = {}
    for key in ("l_freq", "h_freq"):
        if getattr(cfg, key) is None and isinstance(trained.get(key), int | float):
            update[key] = float(trained[key])
    if cfg.notch is None and isinstance(trained.get("notch"), int | float):
        update["notch"] = float(trained["notch"])
    unmatched = [f"{k}={trained[k]}" for k in ("normalize", "trial_scale") if trained.get(k) not in (None, "none")]
    if unmatched and not cfg.allow_preprocessing_mismatch:
        raise ConfigError(
            f"checkpoint {cfg.checkpoint}: task {cfg.definition.name} was trained on {trained.get('dataset')} "
            f"preprocessed with {', '.join(unmatched)}, which a raw recording here does not get (its statistics "
            "belong to that dataset); the answers would be out of distribution. Preprocess the recordings with "
            "the same settings and evaluate the shards with `neurolm eval`, or pass --allow-preprocessing-mismatch"
        )
    return cfg.model_copy(update=update)


def predict(cfg: PredictConfig, errors: list[RecordingError] | None = None) -> list[dict[str, Any]]:
    """Answer ``cfg.task`` on every recording of ``cfg``; one row per window with a ``recording`` column.

    A recording that fails preprocessing raises :class:`RecordingError`, unless ``errors`` is given: then the
    error is appended there and the next recording is answered.
    """
    from neurolm.data.bpe import load_gpt2_tokenizer
    from neurolm.eval.evaluate import load_scoring_model, resolve_eeg_max_len

    task = cfg.definition
    cfg = match_training_preprocessing(cfg, trained_preprocessing(cfg.checkpoint, task.name))
    bias = calibration_bias(cfg.calibration, task) if cfg.calibration else None  # before the model is loaded
    bpe = load_gpt2_tokenizer()
    tokens = tokenize_task(task, bpe.encode)
    model = load_scoring_model(cfg.checkpoint, cfg.model_overrides)
    eeg_max_len = resolve_eeg_max_len(cfg.checkpoint, cfg.eeg_max_len)
    rows: list[dict[str, Any]] = []
    for path in cfg.recordings:
        try:
            windows = window_recording(path, cfg)
        except RecordingError as err:
            if errors is None:
                raise
            errors.append(err)
            continue
        note = check_channels(windows, task, cfg.allow_channel_mismatch)
        if note:
            print(f"neurolm predict: warning: {note}", file=sys.stderr)
        needed = windows.signals.shape[1] * int(round(windows.window_s))
        if needed > eeg_max_len:
            print(
                f"neurolm predict: {path}: {windows.signals.shape[1]} channels x {windows.window_s:g} s = {needed} "
                f"tokens > eeg_max_len {eeg_max_len}; windows are laid out unpadded at {needed} tokens",
                file=sys.stderr,
            )
        for row in predict_windows(
            model,
            task,
            tokens,
            windows,
            eeg_max_len=max(eeg_max_len, needed),
            batch_size=cfg.batch_size,
            generation=cfg.generate,
            decode=bpe.decode,
        ):
            rows.append({"recording": Path(path).name, **row})
    if bias is not None and rows:
        from neurolm.eval.calibration import apply_class_bias

        probs = np.array([[row[c] for c in probability_columns(task)] for row in rows])
        for row, k in zip(rows, apply_class_bias(probs, bias).argmax(axis=1), strict=True):
            row["calibrated_answer"] = task.answers[int(k)]
    return rows


def format_predictions(rows: Sequence[Mapping[str, Any]], fmt: str, metadata: Mapping[str, Any]) -> str:
    """``csv`` (header = the row keys) or ``json`` (``metadata`` plus ``rows``)."""
    if fmt == "json":
        return json.dumps({**metadata, "rows": list(rows)}, indent=1) + "\n"
    if fmt != "csv":
        raise ValueError(f"unknown output format {fmt!r}; use csv or json")
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _output_format(output: str | None) -> str:
    if output is None:
        return "csv"
    suffix = Path(output).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"output = {output!r}: must end in .csv or .json")
    return suffix[1:]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neurolm predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("recordings", nargs="+", help="raw recording(s): EDF, BDF, BrainVision, EEGLAB, FIF, ...")
    p.add_argument("--checkpoint", required=True, help="instruction-tuned export dir (local or s3://)")
    p.add_argument(
        "--task", required=True, help="built-in task name (TUAB, HMC, SelfRegulationSCP1, ...) or a task YAML file"
    )
    p.add_argument("--output", "-o", help="out.csv or out.json (local or s3://); default: CSV on stdout")
    p.add_argument("--window-s", type=float, help="window length in s (default: the task's sample length)")
    p.add_argument("--hop-s", type=float, help="window hop in s (default: the window length)")
    p.add_argument(
        "--channels",
        default="all",
        help="all (every 10-20 channel of the file), task (the task's training channels, all required) "
        "or a comma-separated list",
    )
    p.add_argument(
        "--l-freq", type=float, help="band-pass lower edge in Hz (default: the training data's, else 0.1)"
    )
    p.add_argument(
        "--h-freq", type=float, help="band-pass upper edge in Hz (default: the training data's, else 75)"
    )
    p.add_argument(
        "--notch", type=float, help="notch in Hz, 0 = off (default: the training data's, else the task's, 50 or 60)"
    )
    p.add_argument(
        "--allow-preprocessing-mismatch",
        action="store_true",
        help="answer even when the training data were normalised in a way raw recordings cannot be (refused by "
        "default)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument(
        "--eeg-max-len", type=int, help="EEG tokens per window after padding (default: as evaluation)"
    )
    p.add_argument(
        "--generate", action="store_true", help="also greedy-generate and parse the answer (official)"
    )
    p.add_argument(
        "--allow-channel-mismatch",
        action="store_true",
        help="answer even when the recording has channels the task was never trained on (refused by default)",
    )
    p.add_argument(
        "--calibration",
        metavar="METRICS_JSON",
        help="metrics.json of `neurolm eval` (local or s3://): add calibrated_answer from its val-fitted class bias",
    )
    p.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="NeuroLM config field to override at load, e.g. per_sample_text_positions=true",
    )
    return p


def build_config(argv: Sequence[str]) -> PredictConfig:
    """A validated :class:`~neurolm.config.PredictConfig` from command-line arguments."""
    args = _parser().parse_args(list(argv))
    fields = {
        "checkpoint": args.checkpoint,
        "task": args.task,
        "recordings": args.recordings,
        "output": args.output,
        "window_s": args.window_s,
        "hop_s": args.hop_s,
        "channels": args.channels,
        "l_freq": args.l_freq,
        "h_freq": args.h_freq,
        "notch": args.notch,
        "batch_size": args.batch_size,
        "eeg_max_len": args.eeg_max_len,
        "generate": args.generate,
        "allow_channel_mismatch": args.allow_channel_mismatch,
        "allow_preprocessing_mismatch": args.allow_preprocessing_mismatch,
        "calibration": args.calibration,
        "model_overrides": apply_overrides({}, args.model_override),
    }
    cfg = load_config(PredictConfig, base=fields)
    window_s = cfg.window_s or task_rules(cfg.definition).window_s
    if window_s != int(window_s):
        raise ConfigError(f"window_s = {window_s:g}: must be a whole number of seconds (one patch = 1 s)")
    _output_format(cfg.output)
    return cfg


def cli(argv: list[str] | None = None) -> int:
    """``neurolm predict``; exit 0 on success, 1 when a recording or the checkpoint fails, 2 on bad arguments."""
    try:
        cfg = build_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"neurolm predict: {err}", file=sys.stderr)
        return 2
    errors: list[RecordingError] = []
    try:
        rows = predict(cfg, errors)
    except ConfigError as err:
        print(f"neurolm predict: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # unreadable checkpoint, layout limits
        print(f"neurolm predict: {err}", file=sys.stderr)
        return 1
    for err in errors:
        print(f"neurolm predict: {err.source}: {err.reason}", file=sys.stderr)
    if rows:
        fmt = _output_format(cfg.output)
        meta = {
            "task": cfg.task,
            "checkpoint": cfg.checkpoint,
            "classes": list(cfg.definition.answers),
            "window_s": cfg.window_s or task_rules(cfg.definition).window_s,
        }
        text = format_predictions(rows, fmt, meta)
        if cfg.output is None:
            sys.stdout.write(text)
        else:
            if not storage.is_s3(cfg.output):
                Path(cfg.output).expanduser().parent.mkdir(parents=True, exist_ok=True)
            storage.write_text(cfg.output, text)
            print(f"neurolm predict: {len(rows)} windows -> {cfg.output}", file=sys.stderr)
    return 1 if errors else 0
