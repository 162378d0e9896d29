"""Evaluation reports: metrics JSON, a Markdown table, confusion matrices and bar plots, Tune trial plots.

Everything here is a pure function of its inputs that writes into a local directory; uploading the
directory to object storage is the caller's job. Figures use matplotlib's Agg canvas on private
``Figure`` objects (no ``pyplot`` state), so reports can be drawn from threads and Ray workers::

    results = [
        TaskResult("tuab", "binary", labels, preds=parsed, class_names=("No", "Yes")),
        TaskResult("tuev", "multiclass", labels, preds=parsed, probs=probs, class_names=TUEV_NAMES),
    ]
    paths = write_report(results, "out/eval", title="NeuroLM-B, test split")
    # out/eval/metrics.json, report.md, confusion_tuab.png, metrics_tuab.png, ..., summary.png

The metrics are those of :func:`neurolm.eval.metrics.task_metrics`: ours and the official hard-label ones
(docs/reference.md §4.3) side by side, so the table shows both the numbers a reader expects and the numbers comparable
with the paper (docs/reference.md §5).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from neurolm import storage
from neurolm.eval.metrics import PARSE_FAILURE, TaskKind, confusion_matrix, task_metrics

__all__ = [
    "TaskResult",
    "REPORT_METRICS",
    "build_report",
    "markdown_table",
    "plot_confusion_matrix",
    "plot_task_metrics",
    "plot_summary",
    "plot_trials",
    "write_report",
]

# (metric key, column title) in table and plot order: the paper's metrics first (docs/reference.md §1.7, §5).
REPORT_METRICS: tuple[tuple[str, str], ...] = (
    ("balanced_accuracy", "BAcc"),
    ("cohen_kappa", "κ"),
    ("f1_weighted", "W-F1"),
    ("roc_auc", "AUROC"),
    ("pr_auc", "AUC-PR"),
    ("accuracy", "Acc"),
)
_OFFICIAL = "official/"


@dataclass(frozen=True)
class TaskResult:
    """One task's evaluation outputs.

    Parameters
    ----------
    name : str
        Task name, e.g. ``"tuab"`` (used in file names after slugging).
    kind : {"binary", "multiclass"}
    labels : array_like of int, shape (N,)
    preds : array_like of int, shape (N,), optional
        Parsed answers, ``-1`` for a parse failure; ``argmax(probs)`` when omitted.
    probs : array_like of float, shape (N, K), optional
        Class probabilities, for our AUROC / AUC-PR.
    class_names : sequence of str, optional
        One name per class (e.g. ``("No", "Yes")`` for TUAB, docs/reference.md §1.7); ``"0"``, ``"1"``, … by default.
    num_classes : int, optional
        ``K`` when neither ``probs`` nor ``class_names`` give it (multi-class tasks).
    """

    name: str
    kind: TaskKind
    labels: ArrayLike
    preds: ArrayLike | None = None
    probs: ArrayLike | None = None
    class_names: Sequence[str] = field(default_factory=tuple)
    num_classes: int | None = None

    def resolved_num_classes(self) -> int:
        """``K`` from ``probs``, ``class_names``, ``num_classes`` or the task kind, checked for agreement."""
        candidates = {
            "probs": None if self.probs is None else int(np.shape(self.probs)[-1]),
            "class_names": len(self.class_names) or None,
            "num_classes": self.num_classes,
            "kind": 2 if self.kind == "binary" else None,
        }
        given = {k: v for k, v in candidates.items() if v is not None}
        if not given:
            raise ValueError(f"task {self.name!r}: give class_names, num_classes or probs for a multi-class task")
        if len(set(given.values())) > 1:
            raise ValueError(f"task {self.name!r}: inconsistent number of classes {given}")
        return next(iter(given.values()))

    def resolved_class_names(self) -> tuple[str, ...]:
        k = self.resolved_num_classes()
        return tuple(self.class_names) if self.class_names else tuple(str(i) for i in range(k))

    def resolved_preds(self) -> np.ndarray:
        if self.preds is not None:
            return np.asarray(self.preds)
        if self.probs is None:
            raise ValueError(f"task {self.name!r}: give preds, probs or both")
        return np.argmax(np.asarray(self.probs), axis=1)


def _json_value(value: Any) -> Any:
    """NaN and inf become ``null`` (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def build_report(results: Sequence[TaskResult]) -> dict[str, Any]:
    """The JSON-ready report of several tasks.

    Returns
    -------
    dict
        ``{"tasks": {name: {"kind", "class_names", "metrics", "confusion_matrix"}}}``. ``metrics`` are the keys
        of :func:`~neurolm.eval.metrics.task_metrics` (non-finite values as ``None``); ``confusion_matrix`` is
        ``K × (K + 1)`` with parse failures in the last column.
    """
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    tasks: dict[str, Any] = {}
    for r in results:
        k = r.resolved_num_classes()
        preds = r.resolved_preds()
        metrics = task_metrics(r.kind, r.probs, preds, r.labels, num_classes=k)
        tasks[r.name] = {
            "kind": r.kind,
            "class_names": list(r.resolved_class_names()),
            "metrics": {key: _json_value(v) for key, v in metrics.items()},
            "confusion_matrix": confusion_matrix(r.labels, preds, k).tolist(),
        }
    return {"tasks": tasks}


def _cell(metrics: Mapping[str, Any], key: str) -> str:
    if key not in metrics:
        return "–"
    value = metrics[key]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """Tasks × metrics, ours and official side by side (from :func:`build_report`'s output).

    ``–`` marks a metric that does not exist for the task (e.g. official κ on a binary task, our AUROC without
    probabilities); ``n/a`` a metric that is undefined on this split.
    """
    header = ["Task", "n", "parse failures"]
    for _, title in REPORT_METRICS:
        header += [title, f"{title} (official)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, task in report["tasks"].items():
        m = task["metrics"]
        row = [name, str(m["n"]), str(m["parse_failures"])]
        for key, _ in REPORT_METRICS:
            row += [_cell(m, key), _cell(m, _OFFICIAL + key)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _save(fig: Figure, out_png: str | Path) -> Path:
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_confusion_matrix(
    labels: ArrayLike,
    preds: ArrayLike,
    class_names: Sequence[str],
    out_png: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Row-normalised confusion matrix (recall per true class) with counts, as a PNG.

    A "parse failure" column is added when any prediction is ``-1`` (docs/reference.md §4.3), so failures are visible
    instead of being folded into a class.
    """
    k = len(class_names)
    cm = confusion_matrix(labels, preds, k)
    show_failures = bool(np.any(np.asarray(preds) == PARSE_FAILURE))
    if not show_failures:
        cm = cm[:, :k]
    support = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    columns = list(class_names) + (["parse failure"] if show_failures else [])

    size = 1.6 + 0.55 * len(columns)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return _save(fig, out_png)


def _grouped_bars(
    groups: Sequence[str], series: Mapping[str, Sequence[float]], out_png: str | Path, title: str, ylabel: str
) -> Path:
    fig = Figure(figsize=(1.2 + 1.1 * len(groups), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for s, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        bars = ax.bar(x + (s - (len(series) - 1) / 2) * width, np.nan_to_num(heights), width, label=label)
        for bar, h in zip(bars, heights, strict=True):
            text = "–" if not math.isfinite(h) else f"{h:.3f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, max(0.0, bar.get_height())),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.set_xticks(x, groups)
    finite = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    ax.set_ylim(min([0.0, *finite]), 1.08)  # κ can be negative
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_png)


def plot_task_metrics(metrics: Mapping[str, Any], out_png: str | Path, *, title: str = "") -> Path:
    """Bar plot of one task's metrics, ours next to official (metrics that exist in neither are left out)."""
    keys = [(k, t) for k, t in REPORT_METRICS if k in metrics or _OFFICIAL + k in metrics]
    if not keys:
        raise ValueError("no known metric to plot")
    series = {
        "ours": [metrics.get(k) for k, _ in keys],
        "official (hard labels)": [metrics.get(_OFFICIAL + k) for k, _ in keys],
    }
    return _grouped_bars([t for _, t in keys], series, out_png, title, "score")


def plot_summary(report: Mapping[str, Any], out_png: str | Path, *, metric: str = "balanced_accuracy") -> Path:
    """One metric across tasks, ours next to official."""
    tasks = list(report["tasks"])
    if not tasks:
        raise ValueError("the report has no task")
    series = {
        "ours": [report["tasks"][t]["metrics"].get(metric) for t in tasks],
        "official (hard labels)": [report["tasks"][t]["metrics"].get(_OFFICIAL + metric) for t in tasks],
    }
    title = dict(REPORT_METRICS).get(metric, metric)
    return _grouped_bars(tasks, series, out_png, f"{title} per task", title)


def write_report(
    results: Sequence[TaskResult],
    out_dir: str | Path,
    *,
    title: str = "NeuroLM evaluation",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``confusion_<task>.png``, ``metrics_<task>.png`` and
    ``summary.png`` into ``out_dir`` (created if missing).

    Parameters
    ----------
    results : sequence of TaskResult
    out_dir : str or Path
        A local directory.
    title : str
        Heading of the Markdown report.
    metadata : mapping, optional
        JSON-serialisable context stored under ``"metadata"`` (checkpoint, split, decoding mode, …).

    Returns
    -------
    dict of str to Path
        ``"json"``, ``"markdown"``, ``"summary"``, ``"confusion/<task>"`` and ``"metrics/<task>"``.
    """
    if not results:
        raise ValueError("no task results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(results)
    report["metadata"] = dict(metadata or {})
    paths: dict[str, Path] = {}

    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    paths["json"] = json_path

    sections = [f"# {title}\n\n", markdown_table(report)]
    sections.append(
        "\nOurs: hard-label metrics count a parse failure (-1) as wrong; AUROC / AUC-PR from class "
        "probabilities (one-vs-rest macro for multi-class). Official: the official code's scoring of hard "
        "labels (binary AUROC / AUC-PR from 0/1 predictions with -1 as a lowest score and as class 0 in "
        "accuracy; multi-class -1 → last class), comparable with the paper.\n"
    )
    for r in results:
        slug = storage.slug(r.name)
        cm_path = plot_confusion_matrix(
            r.labels, r.resolved_preds(), r.resolved_class_names(), out / f"confusion_{slug}.png",
            title=f"{r.name}: confusion matrix",
        )  # fmt: skip
        bar_path = plot_task_metrics(report["tasks"][r.name]["metrics"], out / f"metrics_{slug}.png", title=r.name)
        paths[f"confusion/{r.name}"] = cm_path
        paths[f"metrics/{r.name}"] = bar_path
        sections.append(f"\n## {r.name}\n\n![confusion]({cm_path.name}) ![metrics]({bar_path.name})\n")
    paths["summary"] = plot_summary(report, out / "summary.png")
    sections.insert(2, f"\n![summary]({paths['summary'].name})\n")

    md_path = out / "report.md"
    md_path.write_text("".join(sections))
    paths["markdown"] = md_path
    return paths


# A shared wall clock first: only then is "best so far" across trials meaningful.
_X_KEYS = ("timestamp", "time_total_s", "training_iteration")


def plot_trials(
    records: Sequence[Mapping[str, Any]],
    objective: str,
    out_png: str | Path,
    *,
    mode: Literal["max", "min"] = "max",
    x_key: str | None = None,
    trial_key: str = "trial_id",
) -> dict[str, Any]:
    """Scatter of a Tune objective per trial over time or iteration, best-so-far line, best result marked.

    Parameters
    ----------
    records : sequence of mapping
        Tune results, one per reported result or per trial (e.g. ``ResultGrid.get_dataframe().to_dict(
        "records")``). Records without a finite ``objective`` are skipped.
    objective : str
        The metric key, e.g. ``"val/mean/balanced_accuracy"``.
    out_png : str or Path
    mode : {"max", "min"}
        Whether larger or smaller is better.
    x_key : str, optional
        The x axis. By default the first of ``timestamp`` (Tune's wall clock, shown as seconds since the first
        result), ``time_total_s``, ``training_iteration`` that every record has, else the record's position.
    trial_key : str
        Key that groups records into trials (one colour and line per trial) when present.

    Returns
    -------
    dict
        The best record.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    usable = []
    for i, rec in enumerate(records):
        value = rec.get(objective)
        if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value):
            usable.append((i, rec))
    if not usable:
        raise ValueError(f"no record has a finite value for {objective!r}")
    if x_key is None:
        x_key = next((k for k in _X_KEYS if all(k in rec for _, rec in usable)), None)
    elif not all(x_key in rec for _, rec in usable):
        raise ValueError(f"x_key {x_key!r} is missing from some records")
    xs = np.array([float(rec[x_key]) if x_key else float(i) for i, rec in usable])
    x_label = x_key or "result #"
    if x_key == "timestamp":
        xs -= xs.min()
        x_label = "seconds since the first result"
    ys = np.array([float(rec[objective]) for _, rec in usable])
    trials = [str(rec.get(trial_key, "")) for _, rec in usable]

    best = int(np.argmax(ys) if mode == "max" else np.argmin(ys))
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    for trial in dict.fromkeys(trials):  # first-seen order
        idx = [j for j, t in enumerate(trials) if t == trial]
        idx.sort(key=lambda j: xs[j])
        ax.plot(xs[idx], ys[idx], marker="o", markersize=4, linewidth=0.8, alpha=0.8, label=trial or None)
    order = np.argsort(xs, kind="stable")
    running = np.maximum.accumulate(ys[order]) if mode == "max" else np.minimum.accumulate(ys[order])
    ax.step(xs[order], running, where="post", color="black", linewidth=1.2, label=f"best so far ({mode})")
    ax.scatter([xs[best]], [ys[best]], marker="*", s=220, color="gold", edgecolor="black", zorder=5)
    label = f"best {ys[best]:.4g}" + (f" ({trials[best]})" if trials[best] else "")
    ax.annotate(label, (xs[best], ys[best]), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial")
    ax.grid(alpha=0.3)
    if len(set(trials)) <= 12:
        ax.legend(fontsize=7, loc="best")
    _save(fig, out_png)
    return dict(usable[best][1])


# -- baselines and collapse (issues 14.5 and 16) ------------------------------------------------------------------


def baseline_markdown(report: Mapping[str, Any], metric: str = "balanced_accuracy") -> str:
    """Markdown table of ``metric`` per task: the model beside each linear baseline (``tasks[key]["baselines"]``)
    and the margin to the best one; empty when no task has baselines."""
    keyed = {k: t for k, t in report["tasks"].items() if t.get("baselines")}
    if not keyed:
        return ""
    names = sorted({b for t in keyed.values() for b in t["baselines"]})
    title = dict(REPORT_METRICS).get(metric, metric)
    lines = [
        f"\n### {title}: model vs linear baselines (same train/test split)\n\n",
        "| task | model | " + " | ".join(names) + " | model − best baseline | 95 % interval |\n",
        "|---|---|" + "---|" * len(names) + "---|---|\n",
    ]
    for key, t in keyed.items():
        model = t["metrics"].get(metric)
        values = [t["baselines"][n].get(metric) for n in names]
        finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
        margin = "–" if not finite or model is None else f"{model - max(finite):+.3f}"
        cells = ["–" if v is None else f"{v:.3f}" for v in values]
        model_cell = "–" if model is None else f"{model:.3f}"
        vs = t.get("vs_best_baseline") if metric == "balanced_accuracy" else None
        interval = f"[{vs['low']:+.3f}, {vs['high']:+.3f}]" if vs else "–"
        lines.append(f"| {key} | {model_cell} | " + " | ".join(cells) + f" | {margin} | {interval} |\n")
    if any(t.get("vs_best_baseline") for t in keyed.values()) and metric == "balanced_accuracy":
        lines.append(
            "\nThe interval: model − best baseline on the same test rows, from a paired, class-stratified bootstrap "
            f"({next(t['vs_best_baseline']['resamples'] for t in keyed.values() if t.get('vs_best_baseline'))} "
            "resamples of the rows; an interval that holds 0 is a difference this test split cannot tell from "
            "noise).\n"
        )
    return "".join(lines)


def collapse_warnings(report: Mapping[str, Any]) -> str:
    """A loud Markdown block naming every collapsed task (one answer for ≥ 95 % of rows or non-finite scores)."""
    lines = [
        f"> **WARNING — collapsed model on {key}**: one answer for {100 * t['metrics'].get('majority_share', 1):.0f} % "
        "of the rows (or non-finite scores); its metrics measure a constant, not the EEG.\n"
        for key, t in report["tasks"].items()
        if t.get("collapsed")
    ]
    return ("\n" + ">\n".join(lines)) if lines else ""


def ensemble_markdown(report: Mapping[str, Any]) -> str:
    """Markdown table per task of an ensemble evaluation: each member's own metrics beside the ensemble's
    (``tasks[key]["members"]``); empty when no task has members."""
    keyed = {k: t for k, t in report["tasks"].items() if t.get("members")}
    if not keyed:
        return ""
    cols = [("balanced_accuracy", "BAcc"), ("calibrated/balanced_accuracy", "BAcc calibrated"), ("roc_auc", "AUROC")]
    lines = [
        "\n### Ensemble: each member beside the mean of their answer probabilities\n\n",
        "| task | model | " + " | ".join(t for _, t in cols) + " | collapsed |\n",
        "|---|---|" + "---:|" * len(cols) + "---|\n",
    ]
    for key, t in keyed.items():
        rows = [(f"member {j} (`{m['checkpoint']}`)", m["metrics"]) for j, m in enumerate(t["members"])]
        rows.append((f"**ensemble of {len(t['members'])}**", {**t["metrics"], "collapsed": t.get("collapsed")}))
        for name, metrics in rows:
            cells = [_cell(metrics, c) for c, _ in cols]
            lines.append(f"| {key} | {name} | " + " | ".join(cells) + f" | {'yes' if metrics.get('collapsed') else 'no'} |\n")
    return "".join(lines)


def plot_baselines(report: Mapping[str, Any], out_png: str | Path, *, metric: str = "balanced_accuracy") -> Path:
    """One bar group per task: the model and each linear baseline."""
    keyed = {k: t for k, t in report["tasks"].items() if t.get("baselines")}
    if not keyed:
        raise ValueError("no task has baselines")
    names = sorted({b for t in keyed.values() for b in t["baselines"]})
    series: dict[str, list[float | None]] = {"NeuroLM": [t["metrics"].get(metric) for t in keyed.values()]}
    for n in names:
        series[n] = [t["baselines"].get(n, {}).get(metric) for t in keyed.values()]
    title = dict(REPORT_METRICS).get(metric, metric)
    return _grouped_bars(list(keyed), series, out_png, f"{title}: model vs linear baselines", title)
