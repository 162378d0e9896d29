"""``neurolm eval``: score an instruction-tuned NeuroLM on test shards with Ray Data batch inference (docs/reference.md §4.3).

Per task, Ray Data reads the split's Parquet shards and lays every row out as ``[EEG][SEP] prompt`` (the training
map step :func:`neurolm.data.layout.instruction_layout`); the tasks' streams are unioned and handed in
batches to one pool of :class:`TaskScorer` actors that each load the model once. An actor returns small per-row
outputs:

- ``probs`` (K,): class probabilities from constrained scoring, the softmax over the answer options'
  log-likelihoods (:func:`~neurolm.models.generate.score_options`);
- ``gen_pred`` and ``generated``: the official hard label, greedy generation of ≤5 tokens over the text vocabulary
  parsed by word position (:func:`~neurolm.models.generate.parse_answer`), ``-1`` when the answer cannot be parsed;
- ``label``, ``sample_id`` and ``truncated`` (the sample had more EEG tokens than ``eeg_max_len``).

The driver collects them and computes the metrics (:mod:`neurolm.eval.metrics`) side by side:

- ours: balanced accuracy, Cohen's κ, weighted F1 and accuracy from ``argmax(probs)``; AUROC and AUC-PR from
  ``probs``;
- ``official/*``: the official code's scoring of the parsed generations (hard labels, its quirks included), so the
  numbers compare with the paper (docs/reference.md §5);
- ``generation/*``: our hard-label metrics of the parsed generations, with every parse failure wrong;
- ``parse_failures``: how many generations could not be parsed; they are never mapped to a class except where
  ``official/*`` reproduces the official code doing exactly that.

Outputs (local directory or ``s3://`` prefix): ``metrics.json``, ``report.md``, ``summary.png``, per task
``confusion_<task>.png`` (scored), ``confusion_<task>_generated.png`` (parse failures in their own column),
``metrics_<task>.png`` (ours vs official) and ``predictions_<task>.csv`` (one row per sample)::

    neurolm eval --config configs/evaluate/debug.yaml checkpoint=runs/instruct/export \\
        'tasks=[{name: SelfRegulationSCP1, test: s3://neurolm/shards/SelfRegulationSCP1/test}]' output=s3://neurolm/eval

    summary = evaluate_checkpoint(evaluation_config(checkpoint=..., tasks=[...], output=...))  # the pipeline's API
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurolm import storage
from neurolm.config import ConfigError, EvaluateJobConfig, load_config
from neurolm.data.layout import instruction_layout, prompt_batch
from neurolm.data.tasks import Task, TaskTokens, get_task, tokenize_task
from neurolm.eval.baselines import baselines_from_shards, best_baseline
from neurolm.eval.compare import align_by_id, paired_difference
from neurolm.eval.metrics import (
    OURS_HARD_METRICS,
    PARSE_FAILURE,
    balanced_accuracy,
    confusion_matrix,
    task_metrics,
)
from neurolm.models.collapse import is_collapsed, majority_share
from neurolm.models.generate import decode_answers, generate, option_probabilities, prefill, score_options
from neurolm.models.neurolm import NeuroLM
from neurolm.models.precision import precision_dtype
from neurolm.runtime.memory import keep_freed_memory
from neurolm.task_spec import parse_task

__all__ = [
    "OFFICIAL_EEG_MAX_LEN",
    "TaskScorer",
    "cli",
    "evaluate_checkpoint",
    "ensemble_rows",
    "evaluation_config",
    "eval_layout",
    "load_scoring_model",
    "member_metrics",
    "resolve_eeg_max_len",
    "score_batch",
    "task_kind",
    "task_metrics_entry",
    "write_evaluation_report",
]

log = logging.getLogger("neurolm.eval")

OFFICIAL_EEG_MAX_LEN = 276
"""EEG tokens per sample in the official instruction tuning (docs/reference.md §4.1)."""
_LAYOUT_KEYS = ("x", "input_chans", "input_time", "input_mask", "prompt")


# --------------------------------------------------------------------------------------------- model side


def task_kind(task: Task) -> str:
    """``"binary"`` for two-class tasks (official binary scoring), else ``"multiclass"`` (docs/reference.md §1.7)."""
    return "binary" if task.num_classes == 2 else "multiclass"


def _device_and_dtype(use_gpu: bool, precision: str) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    return device, precision_dtype(precision, device.type == "cuda")


def load_scoring_model(
    checkpoint: str,
    model_overrides: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> NeuroLM:
    """An export dir (local or ``s3://``) or official ``.pt`` as a NeuroLM in eval mode on ``device``."""
    from neurolm.models.io import load_neurolm

    model = load_neurolm(checkpoint, **dict(model_overrides or {}))
    model.requires_grad_(False)
    return model.eval().to(device=device, dtype=dtype)


def resolve_eeg_max_len(checkpoint: str, configured: int | None) -> int:
    """``configured``, else the ``eeg_max_len`` an export recorded in its ``config.json`` extras, else 276.

    The official model's features depend on the padded length (docs/reference.md §6.3: GroupNorm statistics over padding), so
    evaluation lays samples out at the length the model was tuned with.
    """
    if configured is not None:
        return configured
    if not checkpoint.endswith(".pt"):
        try:
            meta = json.loads(storage.read_text(storage.join(checkpoint, "config.json")))
        except (OSError, ValueError):
            meta = {}
        recorded = (meta.get("extra") or {}).get("eeg_max_len")
        if isinstance(recorded, int) and recorded > 0:
            return recorded
    return OFFICIAL_EEG_MAX_LEN


def _to_tensors(
    batch: Mapping[str, Any], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    # Ray Data hands out read-only views; torch wants writable memory (copied only when needed).
    out = {k: torch.from_numpy(np.require(batch[k], requirements="W")).to(device) for k in _LAYOUT_KEYS}
    out["x"] = out["x"].to(dtype)
    out["input_mask"] = out["input_mask"].bool()
    return out


@torch.inference_mode()
def score_batch(
    model: NeuroLM,
    task: Task,
    tokens: TaskTokens,
    batch: Mapping[str, Any],
    *,
    decode: Callable[[list[int]], str] | None = None,
    generation: bool = True,
    max_new_tokens: int = 5,
    use_cache: bool = True,
    length_normalize: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, np.ndarray]:
    """Answer one laid-out batch of one task (:func:`eval_layout` columns) both ways; pure apart from the model.

    Without a ``prompt`` column every row gets the task's evaluation prompt.

    Returns
    -------
    dict of numpy.ndarray
        ``loglik`` and ``probs`` (N, K) float64 (rows of ``probs`` sum to 1), ``pred`` (N,) ``argmax(probs)``;
        with ``generation`` also ``gen_pred`` (N,) int64 (``-1`` = parse failure) and ``generated`` (N,) the
        decoded new tokens. ``label`` and ``sample_id`` are passed through when present.
    """
    if generation and decode is None:
        raise ValueError("generation needs a decode function (load_gpt2_tokenizer().decode)")
    device = torch.device(device)
    if "prompt" not in batch:  # multi-task batches carry no prompt column (prompt lengths differ per task)
        batch = {**batch, "prompt": prompt_batch(len(batch["x"]), tokens.prompt)["prompt"]}
    b = _to_tensors(batch, device, dtype)
    inputs = (b["x"], b["input_chans"], b["input_time"], b["input_mask"], b["prompt"])
    # one encoder pass and prompt prefill serve both ways of answering (they were ~90 % of each)
    state = prefill(model, *inputs, room=max_new_tokens if generation and use_cache else 0)
    loglik = score_options(
        model, *inputs, tokens.options, length_normalize=length_normalize, prefilled=state
    ).double()  # (N, K)
    probs = option_probabilities(loglik)  # (N, K), softmax over the options
    out: dict[str, np.ndarray] = {
        "loglik": loglik.cpu().numpy(),
        "probs": probs.cpu().numpy(),
        "pred": probs.argmax(dim=-1).cpu().numpy().astype(np.int64),
    }
    if generation:
        result = generate(
            model, *inputs, max_new_tokens=max_new_tokens, use_cache=use_cache, prefilled=state if use_cache else None
        )
        _, parsed = decode_answers(result.tokens.cpu(), decode, task)
        P = b["prompt"].shape[1]
        out["gen_pred"] = np.asarray(parsed, dtype=np.int64)
        out["generated"] = np.asarray([decode(row[P:].tolist()) for row in result.tokens.cpu()], dtype=object)  # type: ignore[misc]
    for key in ("label", "sample_id"):
        if key in batch:
            out[key] = np.asarray(batch[key])
    return out


class TaskScorer:
    """Ray Data callable class: loads the model once per actor and scores batches of any of ``tasks``.

    ``tasks`` are task definitions (the config's ``definition``s: an actor reads no task file) or built-in names.

    Rows carry ``entry``, the index of their (task, split) in ``tasks``; a batch may mix entries, and each group is
    scored with its task's options. ``probs`` is padded with NaN to the largest class count of ``tasks``.
    Used as ``ds.map_batches(TaskScorer, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(size=N))``.
    """

    def __init__(
        self,
        checkpoint: str,
        tasks: Sequence[Task | Mapping[str, Any] | str],
        generation: bool = True,
        max_new_tokens: int = 5,
        use_cache: bool = True,
        length_normalize: bool = False,
        model_overrides: Mapping[str, Any] | None = None,
        torch_threads: int = 1,
        precision: str = "auto",
        use_gpu: bool = False,
    ) -> None:
        from neurolm.data.bpe import load_gpt2_tokenizer

        if not use_gpu:
            torch.set_num_threads(torch_threads)
        keep_freed_memory()  # batches reuse the pages of the last batch's tensors (docs/platform.md, "Page faults")
        self.device, self.dtype = _device_and_dtype(use_gpu, precision)
        self.model = load_scoring_model(checkpoint, model_overrides, self.device, self.dtype)
        bpe = load_gpt2_tokenizer()
        self.tasks = [get_task(t) if isinstance(t, str) else parse_task(t) for t in tasks]
        self.tokens = {t.name: tokenize_task(t, bpe.encode) for t in self.tasks}
        self.max_classes = max(t.num_classes for t in self.tasks)
        self.decode = bpe.decode
        self.generation = generation
        self.options = dict(
            max_new_tokens=max_new_tokens, use_cache=use_cache, length_normalize=length_normalize
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entries = np.asarray(batch["entry"]).astype(np.int64)
        n = len(entries)
        out: dict[str, np.ndarray] = {
            "entry": entries,
            "label": np.asarray(batch["label"]).astype(np.int64),
            "sample_id": np.asarray(batch["sample_id"]).astype(object),
            "truncated": np.asarray(batch["truncated"]).astype(bool),
            "probs": np.full((n, self.max_classes), np.nan),
            "pred": np.zeros(n, dtype=np.int64),
        }
        if self.generation:
            out["gen_pred"] = np.zeros(n, dtype=np.int64)
            out["generated"] = np.empty(n, dtype=object)
        for entry in np.unique(entries):
            rows = np.flatnonzero(entries == entry)
            task = self.tasks[int(entry)]
            group = {k: np.asarray(batch[k])[rows] for k in _LAYOUT_KEYS if k in batch}
            scored = score_batch(
                self.model,
                task,
                self.tokens[task.name],
                group,
                decode=self.decode,
                generation=self.generation,
                device=self.device,
                dtype=self.dtype,
                **self.options,
            )  # type: ignore[arg-type]
            out["probs"][rows, : task.num_classes] = scored["probs"]
            out["pred"][rows] = scored["pred"]
            if self.generation:
                out["gen_pred"][rows] = scored["gen_pred"]
                out["generated"][rows] = scored["generated"]
        return out


def eval_layout(
    batch: dict[str, Any], tokens: TaskTokens, eeg_max_len: int, text_max_len: int, entry: int | None = None
) -> dict[str, np.ndarray]:
    """Ray Data step: shard rows → the training layout (:func:`~neurolm.data.layout.instruction_layout`)
    with evaluation prompts, plus ``sample_id`` and ``truncated`` (the sample had more than ``eeg_max_len``
    tokens; its trailing seconds were dropped).

    With ``entry`` (the row's task index in a multi-task evaluation) the ``prompt`` column is replaced by an
    ``entry`` column, so that the rows of every task share one schema and can flow through one actor pool.
    """
    out = instruction_layout(batch, tokens, eeg_max_len, text_max_len, evaluation=True)
    n = len(out["label"])
    out["sample_id"] = np.asarray(batch["sample_id"]) if "sample_id" in batch else np.arange(n).astype(str)
    tokens_needed = np.asarray(batch["n_channels"]).astype(np.int64) * np.asarray(batch["n_seconds"]).astype(
        np.int64
    )
    out["truncated"] = tokens_needed > eeg_max_len
    if entry is not None:
        out.pop("prompt")
        out["entry"] = np.full(n, entry, dtype=np.int64)
    return out


# ------------------------------------------------------------------------------------------- driver side


def _uris(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _collect(ds: Any) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(np.asarray(v))
    if not parts:
        return {}
    return {k: np.concatenate(v) for k, v in parts.items()}


def _scorer_kwargs(cfg: EvaluateJobConfig) -> dict[str, Any]:
    return dict(
        checkpoint=cfg.checkpoint,
        tasks=[t.definition for t in cfg.tasks],
        generation=cfg.official_generation,
        max_new_tokens=cfg.max_new_tokens,
        use_cache=cfg.use_cache,
        length_normalize=cfg.length_normalize,
        model_overrides=dict(cfg.model_overrides),
        torch_threads=cfg.torch_threads,
        precision=cfg.precision,
        use_gpu=cfg.num_gpus_per_actor > 0,
    )


def _task_tokens(cfg: EvaluateJobConfig) -> list[TaskTokens]:
    from neurolm.data.bpe import load_gpt2_tokenizer

    bpe = load_gpt2_tokenizer()
    out = []
    for t in cfg.tasks:
        tokens = tokenize_task(t.definition, bpe.encode)
        longest = max(len(text) for text in tokens.texts)
        if longest > cfg.text_max_len:  # instruction tuning would have refused this task at that length
            log.warning(
                "%s: prompt + answer take %d text tokens > text_max_len %d: was the model tuned on it?",
                t.name,
                longest,
                cfg.text_max_len,
            )
        out.append(tokens)
    return out


def _score_in_process(cfg: EvaluateJobConfig, eeg_max_len: int) -> dict[str, np.ndarray]:
    """The rows of every (task, split) scored in this process: the same layout and :class:`TaskScorer` as the
    actor pool, read with pyarrow instead of Ray Data (``concurrency: 0``)."""
    from neurolm.data.shards import SIGNAL_COLUMN
    from neurolm.data.shards import read_shards as read_table

    threads = torch.get_num_threads()
    scorer = TaskScorer(**_scorer_kwargs(cfg))
    try:
        parts = []
        for i, (t, tokens) in enumerate(zip(cfg.tasks, _task_tokens(cfg), strict=True)):
            for uri in _uris(t.test):
                table = read_table(uri)
                for start in range(0, table.num_rows, cfg.batch_size):
                    chunk = table.slice(start, cfg.batch_size)
                    # Columns as Ray Data's numpy batches hold them; the signal stays Arrow for batch_to_signals.
                    batch: dict[str, Any] = {
                        c: chunk.column(c).to_numpy(zero_copy_only=False)
                        for c in chunk.column_names
                        if c != SIGNAL_COLUMN
                    }
                    batch[SIGNAL_COLUMN] = chunk.column(SIGNAL_COLUMN)
                    parts.append(scorer(eval_layout(batch, tokens, eeg_max_len, cfg.text_max_len, entry=i)))
    finally:
        torch.set_num_threads(threads)  # TaskScorer set the scoring threads for this process
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _score_with_actors(cfg: EvaluateJobConfig, eeg_max_len: int) -> dict[str, np.ndarray]:
    """The rows of every (task, split) from one Ray Data pipeline: each task's shards read and laid out on their
    own (``entry`` = the task's index in ``cfg.tasks``), the streams unioned, and one pool of
    :class:`TaskScorer` actors, each holding the model once, answering them all."""
    import ray.data

    from neurolm.runtime import read_shards

    streams = []
    for i, (t, tokens) in enumerate(zip(cfg.tasks, _task_tokens(cfg), strict=True)):
        # Blocks of one batch each, so every actor gets work even when a split is a single Parquet file.
        streams.append(
            read_shards(_uris(t.test))
            .repartition(target_num_rows_per_block=cfg.batch_size)
            .map_batches(
                functools.partial(
                    eval_layout,
                    tokens=tokens,
                    eeg_max_len=eeg_max_len,
                    text_max_len=cfg.text_max_len,
                    entry=i,
                ),
                batch_format="numpy",
                num_cpus=cfg.layout_num_cpus,
            )
        )
    ds = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
    ds = ds.map_batches(
        TaskScorer,
        fn_constructor_kwargs=_scorer_kwargs(cfg),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus_per_actor,
        num_gpus=cfg.num_gpus_per_actor or None,
        udf_modifying_row_count=False,
    )
    return _collect(ds)


def score_all(cfg: EvaluateJobConfig, eeg_max_len: int) -> list[dict[str, np.ndarray]]:
    """Score every (task, split) of ``cfg`` on ``cfg.concurrency`` Ray Data actors (0: in this process) and
    collect the rows. Returns per entry its rows sorted by ``sample_id`` (``probs`` cut to the task's classes).
    """
    if cfg.concurrency == 0:
        rows = _score_in_process(cfg, eeg_max_len)
    else:
        rows = _score_with_actors(cfg, eeg_max_len)
    out = []
    for i, t in enumerate(cfg.tasks):
        mine = np.flatnonzero(rows["entry"] == i) if rows else np.zeros(0, dtype=np.int64)
        if mine.size == 0:
            raise ValueError(f"tasks.{i} ({t.name}): the shards {_uris(t.test)} hold no rows")
        mine = mine[np.argsort(rows["sample_id"][mine], kind="stable")]  # deterministic predictions file
        entry = {k: v[mine] for k, v in rows.items() if k != "entry"}
        entry["probs"] = entry["probs"][:, : t.definition.num_classes]
        out.append(entry)
    return out


def calibrated_metrics(
    task: Task, val: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray]
) -> tuple[dict[str, Any], np.ndarray]:
    """``calibrated/*`` metrics of ``rows`` with the per-class bias fitted on the validation rows ``val``
    (:mod:`neurolm.eval.calibration`), the bias itself and the validation balanced accuracy before/after; and the
    calibrated prediction of every row."""
    from neurolm.eval.calibration import apply_class_bias, fit_class_bias

    kind = task_kind(task)
    k = task.num_classes
    val_labels = np.asarray(val["label"]).astype(np.int64)
    val_probs = np.asarray(val["probs"], dtype=np.float64)
    bias = fit_class_bias(val_probs, val_labels)
    probs = apply_class_bias(np.asarray(rows["probs"], dtype=np.float64), bias)
    labels = np.asarray(rows["label"]).astype(np.int64)
    scored = task_metrics(kind, probs, probs.argmax(axis=1), labels, num_classes=k)  # type: ignore[arg-type]
    val_after = apply_class_bias(val_probs, bias).argmax(axis=1)
    out: dict[str, Any] = {f"calibrated/{m}": scored[m] for m in OURS_HARD_METRICS if m in scored}
    out["calibrated/bias"] = [round(float(b), 4) for b in bias]
    out["calibrated/val_rows"] = int(val_labels.size)
    out["calibrated/val_balanced_accuracy_before"] = balanced_accuracy(val_labels, val_probs.argmax(axis=1), k)
    out["calibrated/val_balanced_accuracy_after"] = balanced_accuracy(val_labels, val_after, k)
    return out, probs.argmax(axis=1).astype(np.int64)


def task_metrics_entry(task: Task, rows: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Metrics of one task from its collected rows: ours from probabilities, official and ``generation/*`` from
    the parsed generations when present (``parse_failures`` is ``None`` without generation)."""
    kind = task_kind(task)
    k = task.num_classes
    labels = np.asarray(rows["label"]).astype(np.int64)
    probs = np.asarray(rows["probs"], dtype=np.float64)
    scored = task_metrics(kind, probs, probs.argmax(axis=1), labels, num_classes=k)  # type: ignore[arg-type]
    metrics: dict[str, Any] = {"n": int(labels.size), "parse_failures": None}
    metrics.update(
        {
            key: v
            for key, v in scored.items()
            if key not in ("n", "parse_failures") and not key.startswith("official/")
        }
    )
    if "gen_pred" in rows:
        gen = task_metrics(kind, None, rows["gen_pred"], labels, num_classes=k)  # type: ignore[arg-type]
        metrics["parse_failures"] = int(gen["parse_failures"])
        metrics.update({key: v for key, v in gen.items() if key.startswith("official/")})
        metrics.update({f"generation/{key}": gen[key] for key in OURS_HARD_METRICS})
    # issue 16: one answer for >= 95 % of the rows, or non-finite class probabilities, is a collapsed model.
    counts = np.bincount(probs.argmax(axis=1), minlength=k) if len(probs) else np.zeros(k)
    finite = bool(np.isfinite(probs).all())
    metrics["majority_share"] = majority_share(counts)
    metrics["collapsed"] = is_collapsed(counts, 0.0 if finite else float("nan"))
    return metrics


MEMBER_METRICS = (
    "balanced_accuracy", "roc_auc", "cohen_kappa", "calibrated/balanced_accuracy", "official/balanced_accuracy",
    "parse_failures", "majority_share", "collapsed",
)  # fmt: skip
"""What the report keeps of each ensemble member's own metrics (``<split>/<task>/member<i>/<metric>``)."""


def ensemble_rows(
    members: Sequence[Sequence[Mapping[str, np.ndarray]]], names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Per (task, split) entry, the rows of an ensemble: the mean of the members' answer probabilities.

    ``members[m][i]`` are member ``m``'s rows of entry ``i`` as :func:`score_all` returns them (sorted by
    ``sample_id``). Every member must have scored the same rows with the same labels. The ensemble answers by
    ``argmax`` of the mean; it has no generation of its own (``gen_pred``/``generated`` stay with each member).
    """
    out = []
    for i, name in enumerate(names):
        first = members[0][i]
        for m, member in enumerate(members[1:], start=1):
            rows = member[i]
            same = len(rows["sample_id"]) == len(first["sample_id"]) and bool(
                np.all(rows["sample_id"] == first["sample_id"]) and np.all(rows["label"] == first["label"])
            )
            if not same:
                raise ValueError(f"{name}: ensemble member {m} scored other rows or labels than member 0")
        probs = np.mean([np.asarray(rows["probs"], dtype=np.float64) for rows in (mem[i] for mem in members)], axis=0)
        entry = {k: v for k, v in first.items() if k not in ("probs", "pred", "gen_pred", "generated", "loglik")}
        entry["probs"] = probs
        entry["pred"] = probs.argmax(axis=1).astype(np.int64)
        out.append(entry)
    return out


def member_metrics(
    task: Task, rows: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray] | None
) -> dict[str, Any]:
    """One ensemble member's own metrics (:data:`MEMBER_METRICS`), calibrated on its own validation rows."""
    metrics = task_metrics_entry(task, rows)
    if val is not None:
        metrics.update(calibrated_metrics(task, val, rows)[0])
    return {k: metrics[k] for k in MEMBER_METRICS if k in metrics}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _strict_json(value: Any) -> Any:
    """Nested values with NaN/inf as ``None`` and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return _json_value(value)


def _predictions_csv(task: Task, rows: Mapping[str, np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["sample_id", "label", "pred", *(f"p_{storage.slug(a)}" for a in task.answers)]
    generated = "gen_pred" in rows
    if generated:
        header += ["gen_pred", "generated"]
    calibrated = "calibrated_pred" in rows
    if calibrated:
        header += ["calibrated_pred"]
    members = rows["member_preds"].shape[1] if "member_preds" in rows else 0
    header += [f"pred_member{j}" for j in range(members)]
    writer.writerow(header)
    for i in range(len(rows["label"])):
        line = [
            rows["sample_id"][i],
            int(rows["label"][i]),
            int(rows["pred"][i]),
            *(f"{p:.6g}" for p in rows["probs"][i]),
        ]
        if generated:
            line += [int(rows["gen_pred"][i]), rows["generated"][i]]
        if calibrated:
            line += [int(rows["calibrated_pred"][i])]
        line += [int(p) for p in rows["member_preds"][i]] if members else []
        writer.writerow(line)
    return buf.getvalue()


def write_evaluation_report(
    entries: Sequence[dict[str, Any]], out_dir: str | Path, *, title: str, metadata: Mapping[str, Any]
) -> list[Path]:
    """Write ``metrics.json``, ``report.md``, PNGs and ``predictions_<task>.csv`` into a local directory.

    ``entries``: per task and split, ``{"key", "task": Task, "split", "rows", "metrics"}``.
    """
    from neurolm.eval.report import (
        baseline_markdown,
        collapse_warnings,
        ensemble_markdown,
        markdown_table,
        plot_baselines,
        plot_confusion_matrix,
        plot_summary,
        plot_task_metrics,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"tasks": {}, "metadata": dict(metadata)}
    written: list[Path] = []
    sections: list[str] = []
    for e in entries:
        task: Task = e["task"]
        rows = e["rows"]
        k = task.num_classes
        labels = rows["label"].astype(np.int64)
        slug = storage.slug(e["key"])
        names = list(task.answers)
        failures = rows["gen_pred"] == PARSE_FAILURE if "gen_pred" in rows else np.zeros(len(labels), bool)

        entry: dict[str, Any] = {
            "task": task.name,
            "split": e["split"],
            "kind": task_kind(task),
            "class_names": names,
            "metrics": {m: _json_value(v) for m, v in e["metrics"].items()},
            "confusion_matrix": confusion_matrix(labels, rows["pred"], k)[:, :k].tolist(),
            "truncated_samples": int(np.sum(rows["truncated"])) if "truncated" in rows else 0,
        }
        # issue 16: collapse flag and linear baselines on the same split (added by evaluate_checkpoint).
        entry["collapsed"] = bool(e["metrics"].get("collapsed", False))
        if e.get("baselines"):
            entry["baselines"] = {n: {m: _json_value(v) for m, v in b.items()} for n, b in e["baselines"].items()}
        if e.get("vs_best_baseline"):
            entry["vs_best_baseline"] = {m: _json_value(v) for m, v in e["vs_best_baseline"].items()}
        if e.get("members"):
            entry["members"] = [
                {"checkpoint": mem["checkpoint"], "metrics": {m: _json_value(v) for m, v in mem["metrics"].items()}}
                for mem in e["members"]
            ]
        images = [
            plot_confusion_matrix(
                labels,
                rows["pred"],
                names,
                out / f"confusion_{slug}.png",
                title=f"{e['key']}: scored (argmax of option probabilities)",
            )
        ]
        if "gen_pred" in rows:
            entry["confusion_matrix_generated"] = confusion_matrix(labels, rows["gen_pred"], k).tolist()
            entry["parse_failure_examples"] = [str(t) for t in rows["generated"][failures][:5]]
            images.append(
                plot_confusion_matrix(
                    labels,
                    rows["gen_pred"],
                    names,
                    out / f"confusion_{slug}_generated.png",
                    title=f"{e['key']}: generated (official parse)",
                )
            )
        images.append(plot_task_metrics(e["metrics"], out / f"metrics_{slug}.png", title=e["key"]))
        report["tasks"][e["key"]] = entry
        csv_path = out / f"predictions_{slug}.csv"
        csv_path.write_text(_predictions_csv(task, rows))
        written += [*images, csv_path]
        sections.append(f"\n## {e['key']}\n\n" + " ".join(f"![{p.stem}]({p.name})" for p in images) + "\n")
        if entry.get("parse_failure_examples"):
            shown = "; ".join(repr(t) for t in entry["parse_failure_examples"])
            sections.append(f"\nUnparsable generations ({int(failures.sum())}), e.g. {shown}\n")

    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    summary = plot_summary(report, out / "summary.png")
    extra_md = collapse_warnings(report) + baseline_markdown(report) + ensemble_markdown(report)
    if any(t.get("baselines") for t in report["tasks"].values()):
        baseline_png = plot_baselines(report, out / "baselines.png")
        written.append(baseline_png)
        extra_md += f"\n![baselines]({baseline_png.name})\n"
    table_view = {
        "tasks": {
            key: {
                **t,
                "metrics": {
                    **t["metrics"],
                    "parse_failures": (
                        "–" if t["metrics"]["parse_failures"] is None else t["metrics"]["parse_failures"]
                    ),
                },
            }
            for key, t in report["tasks"].items()
        }
    }
    header = [
        f"# {title}\n\n",
        f"Checkpoint `{metadata.get('checkpoint')}`"
        + (f" and {len(metadata['ensemble'])} more (an ensemble: the mean of their answer probabilities)"
           if metadata.get("ensemble") else "")
        + f"; EEG tokens per sample {metadata.get('eeg_max_len')}; "
        f"official generation {'on' if metadata.get('official_generation') else 'off'}; "
        f"{metadata.get('rows')} rows scored in {metadata.get('scoring_seconds')} s "
        f"({metadata.get('rows_per_s')} rows/s "
        + (f"on {metadata.get('concurrency')} actor(s)" if metadata.get("concurrency") else "in one process")
        + ").\n\n",
        markdown_table(table_view),
        extra_md,
        "\nOurs: BAcc, κ, W-F1 and Acc from the most probable answer option; AUROC and AUC-PR from the option "
        "probabilities (softmax of the answers' log-likelihoods; one-vs-rest macro for multi-class). Official: "
        "the official code's scoring of greedy generations (≤ "
        f"{metadata.get('max_new_tokens')} tokens over the text vocabulary, the answer word parsed by position; "
        "binary AUROC / AUC-PR from hard labels with −1 as the lowest score, multi-class −1 → last class), "
        "comparable with the paper. Parse failures are the generations that named no answer; `generation/*` "
        "keys in metrics.json score them as wrong.\n",
        f"\n![summary]({summary.name})\n",
    ]
    md_path = out / "report.md"
    md_path.write_text("".join(header + sections))
    return [json_path, md_path, summary, *written]


def _publish(files: Sequence[Path], local_dir: Path, output: str) -> list[str]:
    """Upload the report files to an ``s3://`` output (a local output was written in place)."""
    if not storage.is_s3(output):
        return [str(f) for f in files]
    uris = []
    for f in files:
        uri = storage.join(output, f.relative_to(local_dir).as_posix())
        storage.write_bytes(uri, f.read_bytes())
        uris.append(uri)
    return uris


def _check_config(cfg: EvaluateJobConfig) -> None:
    problems = []
    members = [cfg.checkpoint, *cfg.ensemble]
    twice = sorted({m for i, m in enumerate(members) if m in members[:i]})
    if twice:
        problems.append(f"ensemble: {twice} listed more than once (checkpoint included)")
    seen = set()
    for i, t in enumerate(cfg.tasks):
        if (t.name, t.split) in seen:
            problems.append(f"tasks.{i}: {t.name} / {t.split} is listed twice")
        seen.add((t.name, t.split))
        if not _uris(t.test):
            problems.append(f"tasks.{i}.test: no shard URI given")
    try:
        storage.resolve(cfg.output)
    except storage.StorageError as err:
        problems.append(f"output = {cfg.output!r}: {err}")
    if problems:
        raise ConfigError("invalid evaluate config:\n  " + "\n  ".join(problems))


def versus_baseline(entry: dict[str, Any], baseline: str, predictions: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The model's balanced accuracy minus ``baseline``'s on the same test rows, with its 95 % paired bootstrap
    interval (:func:`neurolm.eval.compare.paired_difference`): the model's raw answers (``pred``) against the
    baseline's predictions of the same trials, matched by ``sample_id``. ``None`` (and a warning) when the rows
    cannot be matched."""
    rows = entry["rows"]
    try:
        theirs = align_by_id(predictions["sample_id"], predictions[baseline], rows["sample_id"])
        result = paired_difference(rows["label"], rows["pred"], theirs, entry["task"].num_classes)
    except (KeyError, ValueError) as err:
        log.warning("%s: model vs %s not compared: %s", entry["key"], baseline, err)
        return None
    log.info("%s: model - %s = %+.3f, 95%% interval [%+.3f, %+.3f] (paired bootstrap of %d rows)",
             entry["key"], baseline, result["diff"], result["low"], result["high"], result["n"])  # fmt: skip
    return {"baseline": baseline, **result}


def evaluate_checkpoint(cfg: EvaluateJobConfig) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` on every task's shards with Ray Data actors and write the report.

    Returns
    -------
    dict
        ``output`` (the report URI), ``files`` (written URIs), ``metrics`` (flat ``<split>/<task>/<metric>``, e.g.
        ``test/TUAB/balanced_accuracy`` and ``test/TUAB/official/roc_auc``; NaN where undefined), ``tasks``
        (per ``<split>/<task>``: ``n``, ``parse_failures``), ``rows``, ``scoring_seconds`` and ``rows_per_s`` (the
        Ray Data pipeline, actor start-up included), ``wall_s``.
    """
    from neurolm.runtime import ensure_ray

    t0 = time.perf_counter()
    _check_config(cfg)
    for uri in [cfg.output, *(u for t in cfg.tasks for u in _uris(t.test))]:
        storage.check_reachable(uri)
    if storage.is_s3(cfg.output):
        storage.ensure_bucket(storage.bucket_of(cfg.output))
    eeg_max_len = resolve_eeg_max_len(cfg.checkpoint, cfg.eeg_max_len)
    for m, checkpoint in enumerate(cfg.ensemble):  # before any scoring: members must see the same layout
        if (member_len := resolve_eeg_max_len(checkpoint, cfg.eeg_max_len)) != eeg_max_len:
            raise ConfigError(f"ensemble.{m} ({checkpoint}): tuned with {member_len} EEG tokens per sample, "
                              f"the checkpoint with {eeg_max_len}; set eeg_max_len to score them alike")
    if cfg.concurrency > 0:
        ensure_ray(cfg.ray_address)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False

    start = time.perf_counter()
    # Validation splits to calibrate on are scored in the same pipeline, as extra entries after the tasks.
    calib = [i for i, t in enumerate(cfg.tasks) if t.calibrate_on]
    extra = [cfg.tasks[i].model_copy(update={"test": cfg.tasks[i].calibrate_on, "split": "val",
                                              "baseline_train": None, "calibrate_on": None}) for i in calib]
    members = [cfg.checkpoint, *cfg.ensemble]
    all_tasks = [*cfg.tasks, *extra]
    member_scored = []
    for m, checkpoint in enumerate(members):  # one member at a time: an actor holds one model, whatever its size
        member_scored.append(score_all(cfg.model_copy(update={"checkpoint": checkpoint, "tasks": all_tasks}), eeg_max_len))
        if len(members) > 1:
            log.info("ensemble member %d/%d (%s) scored", m + 1, len(members), checkpoint)
    scored = member_scored[0] if len(members) == 1 else ensemble_rows(member_scored, [t.name for t in all_tasks])
    val_rows = dict(zip(calib, scored[len(cfg.tasks):], strict=True))
    scored = scored[: len(cfg.tasks)]
    seconds = time.perf_counter() - start
    n_rows = sum(len(rows["label"]) for rows in scored)
    n_val = sum(len(rows["label"]) for rows in val_rows.values())
    log.info("%d rows of %d task(s) (+%d val rows to calibrate on) in %.1f s (%.1f rows/s)", n_rows, len(scored),
             n_val, seconds, (n_rows + n_val) / seconds)
    entries = [
        {
            "key": f"{t.split}/{t.name}",
            "task": t.definition,
            "split": t.split,
            "rows": rows,
            "metrics": task_metrics_entry(t.definition, rows),
        }
        for t, rows in zip(cfg.tasks, scored, strict=True)
    ]
    for i, e in enumerate(entries):
        if i in val_rows:
            calibrated, e["rows"]["calibrated_pred"] = calibrated_metrics(e["task"], val_rows[i], e["rows"])
            e["metrics"].update(calibrated)
    if len(members) > 1:
        for i, e in enumerate(entries):
            e["members"] = [
                {"checkpoint": checkpoint,
                 "metrics": member_metrics(e["task"], rows[i], rows[len(cfg.tasks) + calib.index(i)] if i in calib else None)}
                for checkpoint, rows in zip(members, member_scored, strict=True)
            ]  # fmt: skip
            e["rows"]["member_preds"] = np.stack([rows[i]["pred"] for rows in member_scored], axis=1)
    for t, e in zip(cfg.tasks, entries, strict=True):
        if e["metrics"]["collapsed"]:
            log.warning(
                "COLLAPSED: %s answers one class for %.0f%% of %d rows",
                e["key"], 100 * e["metrics"]["majority_share"], e["metrics"]["n"],
            )
        if t.baseline_train:
            b0 = time.perf_counter()
            predictions: dict[str, np.ndarray] = {}
            e["baselines"] = baselines_from_shards(t.baseline_train, t.test, e["task"].num_classes, predictions)
            best = best_baseline(e["baselines"])
            log.info("%s: linear baselines in %.1f s, best %s", e["key"], time.perf_counter() - b0, best)
            if best is not None and best[0] in predictions:
                e["vs_best_baseline"] = versus_baseline(e, best[0], predictions)
    metadata = {
        "checkpoint": cfg.checkpoint,
        "ensemble": list(cfg.ensemble),
        "eeg_max_len": eeg_max_len,
        "official_generation": cfg.official_generation,
        "max_new_tokens": cfg.max_new_tokens,
        "use_cache": cfg.use_cache,
        "length_normalize": cfg.length_normalize,
        "concurrency": cfg.concurrency,
        "batch_size": cfg.batch_size,
        "model_overrides": dict(cfg.model_overrides),
        "shards": {f"{t.split}/{t.name}": _uris(t.test) for t in cfg.tasks},
        "rows": n_rows,
        "scoring_seconds": round(seconds, 2),
        "rows_per_s": round(n_rows / seconds, 2),
    }
    with tempfile.TemporaryDirectory(prefix="neurolm-eval-") as tmp:
        local = Path(tmp) if storage.is_s3(cfg.output) else Path(storage.resolve(cfg.output)[1])
        files = write_evaluation_report(entries, local, title=cfg.title, metadata=metadata)
        uris = _publish(files, local, cfg.output)
    metrics = {f"{e['key']}/{m}": v for e in entries for m, v in e["metrics"].items()}
    metrics.update({
        f"{e['key']}/member{j}/{m}": v
        for e in entries for j, member in enumerate(e.get("members") or []) for m, v in member["metrics"].items()
    })  # fmt: skip
    metrics.update({
        f"{e['key']}/vs_best_baseline/{m}": e["vs_best_baseline"][m]
        for e in entries if e.get("vs_best_baseline") for m in ("diff", "low", "high")
    })  # fmt: skip
    metrics.update({
        f"{e['key']}/baseline/{name}/{m}": v
        for e in entries for name, b in (e.get("baselines") or {}).items() for m, v in b.items()
        if m in ("balanced_accuracy", "accuracy", "roc_auc")
    })  # fmt: skip
    tasks = {
        e["key"]: {"n": e["metrics"]["n"], "parse_failures": e["metrics"]["parse_failures"]} for e in entries
    }
    return {
        "output": cfg.output,
        "files": uris,
        "metrics": metrics,
        "tasks": tasks,
        "rows": n_rows,
        "scoring_seconds": round(seconds, 2),
        "rows_per_s": round(n_rows / seconds, 2),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def evaluation_config(**fields: Any) -> EvaluateJobConfig:
    """An :class:`~neurolm.config.EvaluateJobConfig` from keyword fields (the pipeline's entry), validated with
    the same key-naming errors as a YAML preset."""
    return load_config(EvaluateJobConfig, base=fields)


def cli(argv: list[str] | None = None) -> int:
    """``neurolm eval [--config YAML] [key=value ...]``; prints the summary JSON (errors: see
    :func:`neurolm.cli.run_command`)."""
    parser = argparse.ArgumentParser(
        prog="neurolm eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML preset, e.g. configs/evaluate/debug.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. checkpoint=DIR output=s3://b/eval"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = evaluate_checkpoint(load_config(EvaluateJobConfig, args.config, args.overrides))
    print(json.dumps(_strict_json(result), indent=1, default=str))
    return 0
