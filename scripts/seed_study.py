"""Several seeds of the small-task recipe through the whole pipeline, and the issue-16 table (docs/recipe.md §12–13).

Each (preset, seed) runs ``ray_jobs/pipeline.py --config configs/pipeline/<preset>.yaml`` with ``train.seed`` of
all three stages set to the seed, its workdir on the preset's storage (``s3://neurolm/study-<preset>-s<seed>`` on
the embedded S3 server) and its evaluation copied to ``<out>/<preset>-s<seed>/`` (``results_dir``). A run whose
``metrics.json`` is already there is not run again, so an interrupted study resumes. Then, per preset:

* per seed: the model's test balanced accuracy (raw and val-calibrated), ROC AUC, the best of the linear
  baselines fitted in the same run, the target (best baseline − 0.02) and whether it is met, the wall time;
* across seeds: the mean, how many seeds meet the target, and the **seed ensemble** — the test answer of the
  mean of the seeds' answer probabilities (``p_<answer>`` of ``predictions_test_<task>.csv``), scored against the
  best baseline of the first seed (the baselines do not depend on the seed).

    python scripts/seed_study.py --out .cache/study --presets scp1 blink --seeds 1234 2 3
    python scripts/seed_study.py --out .cache/study-400 --presets blink --stage-override train.max_steps=400

``--stage-override KEY=VALUE`` adds a dotted override to all three stages (e.g. ``train.max_steps=400``);
``--pipeline-override KEY=VALUE`` one to the pipeline config (e.g. ``instruct.config=my.yaml``). Prints one JSON
line per finished run, then the table (markdown) and writes ``<out>/study.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from neurolm.eval.baselines import best_baseline
from neurolm.eval.evaluate import ensemble_rows
from neurolm.eval.metrics import balanced_accuracy

REPO = Path(__file__).resolve().parent.parent
STAGES = ("tokenizer", "pretrain", "instruct")


def _stage_overrides(preset: dict, stage: str, seed: int | None, extra: list[str]) -> str:
    """The stage's overrides of the preset, then ``extra``, then its seed (``None``: the preset's seed)."""
    items = [*((preset.get(stage) or {}).get("overrides") or []), *extra]
    items += [] if seed is None else [f"train.seed={seed}"]
    return f"{stage}.overrides=[{','.join(items)}]"


def run_one(
    preset_name: str,
    seed: int,
    out: Path,
    stage_extra: list[str],
    pipeline_extra: list[str],
    seed_stages: tuple[str, ...] = STAGES,
) -> dict:
    """Run the pipeline once (unless its results are already in ``out``) and return its figures."""
    config = REPO / "configs" / "pipeline" / f"{preset_name}.yaml"
    preset = yaml.safe_load(config.read_text())
    results = out / f"{preset_name}-s{seed}"
    log = out / f"{preset_name}-s{seed}.log"
    wall_file = results / "wall_s.txt"
    if not (results / "metrics.json").exists():
        bucket = preset["workdir"].split("/")[2] if preset["workdir"].startswith("s3://") else None
        workdir = (
            f"s3://{bucket}/study-{out.name}-{preset_name}-s{seed}" if bucket else str(results / "workdir")
        )
        cmd = [sys.executable, str(REPO / "ray_jobs" / "pipeline.py"), "--config", str(config),
               f"workdir={workdir}", f"results_dir={results}", "seeds=[]",
               *(_stage_overrides(preset, s, seed if s in seed_stages else None, stage_extra) for s in STAGES), *pipeline_extra]  # fmt: skip
        start = time.monotonic()
        with open(log, "w") as fh:
            code = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        wall = time.monotonic() - start
        if code != 0 or not (results / "metrics.json").exists():
            raise SystemExit(f"{preset_name} seed {seed}: the pipeline failed (exit {code}); see {log}")
        wall_file.write_text(f"{wall:.1f}\n")
    return figures(results, seed)


def figures(results: Path, seed: int) -> dict:
    report = json.loads((results / "metrics.json").read_text())
    test = [(k, t) for k, t in report["tasks"].items() if t["split"] == "test"]
    if len(test) != 1:
        raise SystemExit(f"{results}: expected one test task in metrics.json, found {[k for k, _ in test]}")
    key, entry = test[0]
    m = entry["metrics"]
    best_name, best = best_baseline(entry.get("baselines") or {}) or (None, None)
    wall = float((results / "wall_s.txt").read_text()) if (results / "wall_s.txt").exists() else None
    return {
        "seed": seed, "task": entry["task"], "key": key, "results": str(results),
        "balanced_accuracy": m.get("balanced_accuracy"),
        "calibrated_balanced_accuracy": m.get("calibrated/balanced_accuracy"),
        "roc_auc": m.get("roc_auc"), "collapsed": entry.get("collapsed", False),
        "best_baseline": best, "best_baseline_name": best_name,
        "target": None if best is None else round(best - 0.02, 6),
        "met": None if best is None else bool(m.get("balanced_accuracy", 0.0) >= best - 0.02 - 1e-12),
        "wall_s": wall,
    }  # fmt: skip


def _read_predictions(results: Path, key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    slug = key.replace("/", "_")
    path = results / f"predictions_{slug}.csv"
    if not path.exists():
        matches = sorted(results.glob("predictions_test*.csv"))
        if len(matches) != 1:
            raise SystemExit(f"{results}: no predictions_{slug}.csv")
        path = matches[0]
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = [c for c in rows[0] if c.startswith("p_")]
    ids = [r["sample_id"] for r in rows]
    return (
        ids,
        np.array([int(r["label"]) for r in rows]),
        np.array([[float(r[c]) for c in cols] for r in rows]),
    )


def ensemble(runs: list[dict]) -> float | None:
    """Balanced accuracy of the argmax of the seeds' mean answer probabilities (rows matched by sample id), the
    same combination as the pipeline's ``seeds`` (:func:`neurolm.eval.evaluate.ensemble_rows`)."""
    if len(runs) < 2:
        return None
    members = []
    for run in runs:
        ids, labels, probs = _read_predictions(Path(run["results"]), run["key"])
        order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
        members.append([{"sample_id": np.asarray(ids, dtype=object)[order], "label": labels[order],
                         "probs": probs[order]}])  # fmt: skip
    try:
        (rows,) = ensemble_rows(members, [runs[0]["key"]])
    except ValueError as err:
        raise SystemExit(f"{err}: the test rows of {[r['results'] for r in runs]} are not those of one split") from None
    return float(balanced_accuracy(rows["label"], rows["pred"], rows["probs"].shape[1]))


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def table(study: dict) -> str:
    lines = ["| task | target | seeds | test BAcc per seed (raw) | mean | met | calibrated per seed | ROC AUC per seed "
             "| seed ensemble | wall time per run |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for preset, s in study["presets"].items():
        runs = s["runs"]
        lines.append(
            f"| {runs[0]['task']} ({preset}) | {_fmt(runs[0]['target'])} | {' / '.join(str(r['seed']) for r in runs)} "
            f"| {' / '.join(_fmt(r['balanced_accuracy']) for r in runs)} | {_fmt(s['mean'])} "
            f"| {s['met']}/{len(runs)} | {' / '.join(_fmt(r['calibrated_balanced_accuracy']) for r in runs)} "
            f"| {' / '.join(_fmt(r['roc_auc']) for r in runs)} | {_fmt(s['ensemble'])} "
            f"| {' / '.join(_minutes(r['wall_s']) for r in runs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="local folder for every run's results and study.json")
    parser.add_argument("--presets", nargs="+", default=["scp1", "blink", "eyesopenshut", "fingermovements"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234, 2, 3])
    parser.add_argument(
        "--stage-override", action="append", default=[], help="dotted override of all 3 stages"
    )
    parser.add_argument("--seed-stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages whose train.seed is the run's seed (the others keep the preset's): "
                             "`--seed-stages instruct` varies stage 3 only (stages 1-2 then give the same export in every run)")  # fmt: skip
    parser.add_argument("--pipeline-override", action="append", default=[], help="dotted pipeline override")
    args = parser.parse_args(argv)
    for preset in args.presets:
        if not (REPO / "configs" / "pipeline" / f"{preset}.yaml").exists():
            parser.error(f"--presets {preset}: configs/pipeline/{preset}.yaml does not exist")
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    study: dict = {"presets": {}, "stage_overrides": args.stage_override, "seed_stages": args.seed_stages,
                   "pipeline_overrides": args.pipeline_override}  # fmt: skip
    # Seed-major order: a study cut short still has every task at its first seeds.
    runs: dict[str, list[dict]] = {p: [] for p in args.presets}
    for seed in args.seeds:
        for preset in args.presets:
            fig = run_one(
                preset, seed, out, args.stage_override, args.pipeline_override, tuple(args.seed_stages)
            )
            runs[preset].append(fig)
            print(json.dumps({"preset": preset, **fig}), flush=True)
    for preset, rs in runs.items():
        accs = [r["balanced_accuracy"] for r in rs]
        study["presets"][preset] = {
            "runs": rs, "mean": float(np.mean(accs)), "met": sum(bool(r["met"]) for r in rs),
            "ensemble": ensemble(rs), "ensemble_met": None,
        }  # fmt: skip
        s = study["presets"][preset]
        if s["ensemble"] is not None and rs[0]["target"] is not None:
            s["ensemble_met"] = s["ensemble"] >= rs[0]["target"] - 1e-12
    (out / "study.json").write_text(json.dumps(study, indent=1) + "\n")
    print(table(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
