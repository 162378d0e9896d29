"""What the pipeline prints: a short progress story on the terminal, the full logs in a file.

Every component of the stack logs a lot (Ray Data operator tables, Ray Train controller lines, DeepSpeed banners,
W&B summaries, all forwarded from the workers to the driver). :class:`Console` keeps all of it, but in one log
file: in quiet mode it points the process's stdout and stderr file descriptors (inherited by the Ray processes
this driver starts, and used by Ray's log forwarding) at ``<log_dir>/<time>.log`` and writes its own lines to
the terminal it took over. ``verbose=True`` leaves stdout and stderr alone (everything on the terminal, as
before) and still prints the story.

Training progress is read from the run's ``metrics.jsonl`` on storage (rank 0 rewrites it at every report):
it works the same for any run storage (local or s3://) and needs nothing from the Ray Train workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from neurolm import storage


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def read_progress(metrics_uri: str) -> dict[str, Any] | None:
    """The last report of a run (``step`` and its metrics), or None before the first one."""
    try:
        text = storage.read_text(metrics_uri)
    except (storage.StorageError, OSError):
        return None
    last: dict[str, Any] = {}
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            last.update(json.loads(line))
    return last or None


def _loss_summary(metrics: dict[str, Any]) -> str:
    keys = [
        k
        for k in ("train/loss", "val/loss", "val/mean_balanced_accuracy")
        if isinstance(metrics.get(k), float)
    ]
    return "  ".join(f"{k.split('/', 1)[0]} {k.split('/', 1)[1]} {metrics[k]:.3f}" for k in keys)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table (readable in a terminal and in a log file)."""
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# Test metrics shown at the end, when the evaluation reports them.
_TEST_METRICS = ("balanced_accuracy", "calibrated/balanced_accuracy", "cohen_kappa", "weighted_f1", "roc_auc",
                 "accuracy")


def metrics_table(metrics: dict[str, Any]) -> str:
    """``<split>/<task>/<metric>`` evaluation metrics as rows (task, metric, model, baseline when reported).

    A baseline is any key of the same task whose path names one (e.g. ``test/T/baseline/balanced_accuracy``).
    """
    rows = []
    tasks = sorted({k.rsplit("/", 1)[0] for k in metrics if k.count("/") == 2})
    for task in tasks:
        for m in _TEST_METRICS:
            value = metrics.get(f"{task}/{m}")
            if not isinstance(value, (int, float)):
                continue
            baselines = [
                f"{_fmt(v)} ({k[len(task) + 1 :].rsplit('/', 1)[0]})"
                for k, v in sorted(metrics.items())
                if k.startswith(task + "/")
                and "baseline" in k
                and k.endswith("/" + m)
                and isinstance(v, (int, float))
            ]
            rows.append([task, m, float(value), ", ".join(baselines) or "-"])
        diff, low, high = (metrics.get(f"{task}/vs_best_baseline/{k}") for k in ("diff", "low", "high"))
        if all(isinstance(v, (int, float)) for v in (diff, low, high)):
            rows.append([task, "model - best baseline", float(diff), f"95% interval [{low:+.3f}, {high:+.3f}] "
                         "(paired bootstrap of the test rows)"])  # fmt: skip
    if not rows:
        return ""
    return format_table(["test set", "metric", "model", "baseline"], rows)


@dataclass
class StageRecord:
    """One line of the final table."""

    name: str
    wall_s: float = 0.0
    steps: int | None = None
    total_steps: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""


class Console:
    """The pipeline's terminal: one line per stage (rate and ETA while training), full logs in a file."""

    def __init__(
        self,
        verbose: bool = False,
        log_dir: str | Path = ".cache/demo/logs",
        poll_s: float = 3.0,
        plain_every_s: float = 30.0,
    ) -> None:
        self.verbose = verbose
        self.log_dir = Path(log_dir)
        self.log_path: Path | None = None
        self.poll_s = poll_s
        self.plain_every_s = plain_every_s
        self.records: list[StageRecord] = []
        self._out: IO[str] = sys.stdout
        self._err: IO[str] = sys.stderr
        self._saved_fds: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._live = False  # a progress line is being redrawn on a TTY

    # -- set-up -------------------------------------------------------------------------------------------------
    def __enter__(self) -> Console:
        if self.verbose:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = (self.log_dir / time.strftime("%Y%m%d-%H%M%S.log")).absolute()
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        self._saved_fds = saved
        self._out = io.TextIOWrapper(os.fdopen(os.dup(saved[0]), "wb", buffering=0), line_buffering=True)
        self._err = io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb", buffering=0), line_buffering=True)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self._quiet_sources()
        self.say(f"full logs: {self.log_path}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._saved_fds is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.say(f"FAILED: {type(exc).__name__}: {exc}".splitlines()[0][:300])
            # The traceback goes to the log (fd 2), the last lines of the log to the terminal.
            import traceback

            traceback.print_exception(exc_type, exc, tb)
            sys.stderr.flush()
            self._show_log_tail(25)
        self.say(f"full logs: {self.log_path}")
        os.dup2(self._saved_fds[0], 1)
        os.dup2(self._saved_fds[1], 2)
        for fd in self._saved_fds:
            os.close(fd)
        self._saved_fds = None

    def _quiet_sources(self) -> None:
        """Noise that is useless even in a log file: progress bars redrawn many times a second."""
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("TQDM_DISABLE", "1")
        with contextlib.suppress(ImportError):
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.enable_operator_progress_bars = False

    def _show_log_tail(self, n: int) -> None:
        if self.log_path is None:
            return
        lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        self._write(self._out, "  | " + "\n  | ".join(lines) + "\n")

    # -- output -------------------------------------------------------------------------------------------------
    def _write(self, stream: IO[str], text: str) -> None:
        with self._lock:
            if self._live:
                self._err.write("\r\033[K")
                self._live = False
            stream.write(text)
            stream.flush()

    def say(self, message: str) -> None:
        """A line of the story: on the terminal, and in the log file so the log reads in order."""
        self._write(self._out, message + "\n")
        if self._saved_fds is not None:
            sys.stderr.write(f"[neurolm] {message}\n")
            sys.stderr.flush()

    def _live_line(self, message: str) -> None:
        with self._lock:
            self._err.write("\r\033[K" + message[: _term_width(self._err) - 1])
            self._err.flush()
            self._live = True

    @property
    def tty(self) -> bool:
        try:
            return self._err.isatty()
        except (ValueError, OSError):
            return False

    def summary(self) -> str:
        """The final table: each stage's steps, wall time and last losses; then the test metrics."""
        return _summary(self.records)

    # -- stages -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(
        self, name: str, metrics_uri: str | None = None, total_steps: int | None = None
    ) -> Iterator[StageRecord]:
        """Time a stage; while it runs, follow ``metrics_uri`` and show step, rate and ETA."""
        record = StageRecord(name, total_steps=total_steps)
        self.records.append(record)
        t0 = time.perf_counter()
        stop = threading.Event()
        watcher = None
        if metrics_uri is not None:
            watcher = threading.Thread(target=self._follow, args=(record, metrics_uri, t0, stop), daemon=True)
            watcher.start()
        try:
            yield record
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=10)
            record.wall_s = time.perf_counter() - t0
            if metrics_uri is not None:
                last = read_progress(metrics_uri) or {}
                if "step" in last:
                    record.steps = int(last["step"])
                record.metrics = {**last, **record.metrics}
            done = f"{record.steps}/{total_steps} steps  " if record.steps is not None and total_steps else ""
            rate = ""
            if record.steps:
                rate = f"{record.steps / max(record.wall_s, 1e-9):.2f} steps/s  "
            losses = _loss_summary(record.metrics)
            note = f"  {record.note}" if record.note else ""
            self.say(
                f"  {name:<20} done in {_duration(record.wall_s):>6}  {done}{rate}{losses}{note}".rstrip()
            )

    def _follow(self, record: StageRecord, metrics_uri: str, t0: float, stop: threading.Event) -> None:
        first: tuple[float, int] | None = (
            None  # (time, step) of the first report: excludes start-up from the rate
        )
        last_plain = time.perf_counter()
        last_step: int | None = None
        while not stop.wait(self.poll_s):
            now = time.perf_counter()
            info = read_progress(metrics_uri)
            step = int(info["step"]) if info and "step" in info else None
            parts = [f"  {record.name:<20} {_duration(now - t0):>6}"]
            if step is None:
                parts.append("starting, no report yet")
            else:
                if first is None:
                    first = (now, step)
                total = record.total_steps
                parts.append(f"step {step}/{total}" if total else f"step {step}")
                if now > first[0] and step > first[1]:
                    rate = (step - first[1]) / (now - first[0])
                    parts.append(f"{rate:.2f} steps/s")
                    if total:
                        parts.append(f"ETA {_duration((total - step) / rate)}")
                losses = _loss_summary(info or {})
                if losses:
                    parts.append(losses)
            line = "  ".join(parts)
            if self.tty:
                self._live_line(line)
            # Without a TTY (a log, CI): a line when the step moved, less often while nothing changes.
            elif now - last_plain >= self.plain_every_s * (1 if step != last_step else 4):
                self.say(line)
                last_plain, last_step = now, step


def _summary(records: list[StageRecord]) -> str:
    rows = []
    for r in records:
        m = r.metrics
        steps = f"{r.steps}/{r.total_steps}" if r.steps is not None and r.total_steps else r.steps
        val = m.get("val/mean_balanced_accuracy", m.get("val/loss"))
        rows.append([r.name, steps, _duration(r.wall_s), m.get("train/loss"), val, r.note])
    table = format_table(["stage", "steps", "wall", "train loss", "val loss/bacc", "note"], rows)
    tests = [metrics_table(r.metrics) for r in records if r.name == "evaluate"]
    return table + ("\n\n" + tests[0] if tests and tests[0] else "")


def _term_width(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120
