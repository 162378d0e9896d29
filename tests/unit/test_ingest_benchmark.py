"""``benchmarks/ingest.py --timeline``: the read-task summary it prints from ``ray.timeline()``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"


def _bench():
    spec = importlib.util.spec_from_file_location("ingest_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_task_summary() -> None:
    summarize = _bench().summarize_spans
    # Three tasks one after another (waits 0.5 s and 0.25 s), then one overlapping the third.
    out = summarize([(0.0, 1.0), (1.5, 2.0), (2.25, 3.25), (3.0, 3.5)])
    assert out["read_tasks"] == 4 and out["read_tasks_at_once_max"] == 2
    assert out["read_task_ms_median"] == pytest.approx(750.0)
    assert out["read_gap_ms_median"] == pytest.approx(375.0)  # the overlap is no wait
    assert out["read_busy_fraction"] == pytest.approx((1.0 + 0.5 + 1.25) / 3.5)
    assert summarize([]) == {"read_tasks": 0}
    assert summarize([(0.0, 2.0)])["read_gap_ms_median"] is None
