"""Stage 3: multi-task instruction tuning (docs/reference.md §4) with a block-deterministic task mixture.

Each task's shards are their own Ray dataset, split across workers (``streaming_split``). The mixture picks one
task per micro-batch, from :class:`neurolm.data.mixture.TaskSchedule` with the same seed on every rank, so all
ranks read the same task's split at the same step. That lockstep is required: a streaming split's consumers
start each pass together, and ranks reading different tasks' splits would wait on each other forever. The
data order is a pure function of the seed and the step: a resume fast-forwards every task stream by the
closed-form count of batches it had given, and continues exactly. Task weights thus apply to micro-batches
(the share of samples is the same in expectation), and every batch holds one task (one prompt length).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from neurolm.config import ConfigError, InstructJobConfig
from neurolm.data.layout import instruction_layout
from neurolm.data.mixture import TaskSchedule, mixture_weights
from neurolm.data.shards import count_rows
from neurolm.data.tasks import Task, TaskTokens, tokenize_task
from neurolm.train.stage import Stage, StepOutput, WorkerContext
from neurolm.vocab import EOT_ID

log = logging.getLogger("neurolm.train")

EVAL_KEYS = ("x", "input_chans", "input_time", "input_mask", "prompt", "label")


def task_tokens(task: Task) -> TaskTokens:
    """Token ids of a task (its definition travels in the config: workers read no task file)."""
    from neurolm.data.bpe import load_gpt2_tokenizer

    return tokenize_task(task, load_gpt2_tokenizer().encode)


class _RowStream:
    """Rows of one task's shard on this worker, forever, handed out as column slices (never a dict per row).

    The first pass streams the shard through Ray Data (local shuffle buffer). A task whose rows fit in
    ``cache_bytes`` is then kept in memory and each later pass is a full permutation of it (seeded by the pass):
    a small task otherwise pays a new Ray Data execution every epoch, which dominated stage 3's step time on
    SelfRegulationSCP1 (15 micro-batches per epoch). Larger tasks re-read the shard each pass.
    """

    def __init__(self, shard: Any, chunk: int, seed: int, shuffle_buffer: int, cache_bytes: int = 0) -> None:
        self.shard, self.chunk, self.seed, self.shuffle_buffer = shard, chunk, seed, shuffle_buffer
        self.cache_bytes = cache_bytes
        self.passes = 0
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self._buffer: dict[str, np.ndarray] = {}
        self._offset = 0
        self._size = 0
        self._seen: list[dict[str, np.ndarray]] | None = [] if cache_bytes > 0 else None
        self._seen_bytes = 0
        self._cache: dict[str, np.ndarray] | None = None

    def _new_pass(self) -> Iterator[dict[str, np.ndarray]]:
        if self.passes == 1 and self._seen:  # the first pass ended within the budget: keep it
            self._cache = {k: np.concatenate([b[k] for b in self._seen]) for k in self._seen[0]}
            self._seen = None
        self.passes += 1
        if self._cache is not None:
            return self._cached_pass()
        return iter(self.shard.iter_batches(
            batch_size=self.chunk, batch_format="numpy",
            local_shuffle_buffer_size=self.shuffle_buffer or None,
            local_shuffle_seed=(self.seed + self.passes) if self.shuffle_buffer else None,
        ))

    def _cached_pass(self) -> Iterator[dict[str, np.ndarray]]:
        assert self._cache is not None
        n = len(next(iter(self._cache.values())))
        order = np.random.default_rng((self.seed, self.passes)).permutation(n)
        for i in range(0, n, self.chunk):
            rows = order[i : i + self.chunk]
            yield {k: v[rows] for k, v in self._cache.items()}

    def _keep(self, batch: dict[str, np.ndarray]) -> None:
        """Remember a first-pass batch while the pass still fits in the cache budget."""
        if self._seen is None or self.passes != 1:
            return
        self._seen_bytes += sum(v.nbytes for v in batch.values())
        if self._seen_bytes > self.cache_bytes:
            self._seen = None  # too big: stream every pass
        else:  # a heap copy: a batch may be a view of an object-store block, which must not stay pinned
            self._seen.append({k: np.array(v) for k, v in batch.items()})

    def _refill(self) -> None:
        for _ in range(2):
            try:
                self._buffer = next(self._batches)
                self._keep(self._buffer)
                self._size, self._offset = len(next(iter(self._buffer.values()))), 0
                return
            except StopIteration:
                self._batches = self._new_pass()
        raise RuntimeError("a task shard of this worker is empty")

    def take(self, n: int) -> list[dict[str, np.ndarray]]:
        """The next ``n`` rows as a list of column slices (crossing batch and pass boundaries as needed)."""
        parts = []
        while n > 0:
            if self._offset >= self._size:
                self._refill()
            k = min(n, self._size - self._offset)
            parts.append({key: v[self._offset : self._offset + k] for key, v in self._buffer.items()})
            self._offset += k
            n -= k
        return parts


SCORE_TIE_BREAK = 1e-3  # val/score = val/mean_balanced_accuracy - this x val/loss (see InstructStage.evaluate)


class MixedTaskStream:
    """Micro-batches of one worker, one task per micro-batch, in the order of a :class:`TaskSchedule` over
    micro-batch indices (identical on every rank)."""

    def __init__(self, shards: dict[str, Any], schedule: TaskSchedule, batch_size: int, micro_batch: int,
                 shuffle_seed: int, shuffle_buffer: int, cache_bytes: int = 0) -> None:
        self.schedule, self.batch_size = schedule, batch_size
        self.streams = {t: _RowStream(s, 64, shuffle_seed + i, shuffle_buffer, cache_bytes)
                        for i, (t, s) in enumerate(sorted(shards.items()))}
        self.micro_batch = micro_batch
        for task, count in schedule.task_counts(micro_batch).items():  # resume: replay each stream's batches
            if count:
                self.streams[task].take(count * batch_size)

    def next(self) -> dict[str, torch.Tensor]:
        task = self.schedule.task_at(self.micro_batch)
        self.micro_batch += 1
        parts = self.streams[task].take(self.batch_size)
        return {k: torch.as_tensor(np.concatenate([p[k] for p in parts])) for k in parts[0]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    __next__ = next


def drop_channels(x: torch.Tensor, input_chans: torch.Tensor, input_mask: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` (B, N, patch) with each real channel of each sample silenced (its patches set to 0) with probability
    ``p``, independently, drawn from torch's global generator (the trainer seeds it per micro-step, so resumes
    replay it); every sample keeps at least one of its channels (a sample that would lose all keeps one chosen
    at random). ``input_chans`` (B, N) gives each token's channel index, ``input_mask`` (B, N) its reality;
    padding tokens are zero and stay zero. Channel dropout: an answer may not hang on one electrode, whose
    contact and artefacts change between sessions (docs/recipe.md §10)."""
    n_chan = int(input_chans.max()) + 1
    # A channel is present if any of its tokens is real (padding tokens carry channel 0: not a plain scatter).
    present = torch.zeros(x.shape[0], n_chan, dtype=torch.int64, device=x.device)
    present = present.scatter_reduce(1, input_chans.long(), input_mask.long(), reduce="amax").bool()
    keep = (torch.rand(x.shape[0], n_chan, device=x.device) >= p) & present
    lost = ~keep.any(1) & present.any(1)
    if lost.any():
        # One present channel of each such sample, uniformly: the largest random score among its present channels.
        score = torch.rand(int(lost.sum()), n_chan, device=x.device).masked_fill(~present[lost], -1.0)
        keep[lost] = torch.nn.functional.one_hot(score.argmax(1), n_chan).bool()
    return x * keep.gather(1, input_chans.long()).to(x.dtype)[..., None]


class InstructStage(Stage):
    """Validation is per task (:meth:`evaluate`); :meth:`eval_step` is the base class's (the answer loss)."""

    name = "instruct"

    def __init__(self, cfg: InstructJobConfig) -> None:
        super().__init__(cfg)
        self.tasks = {t.name: t.definition for t in cfg.tasks}
        missing = [t.name for t in cfg.tasks if not t.train]
        if missing:
            raise ConfigError(f"tasks: {missing} have no train shards")
        self.model_overrides = cfg.model.override_dict()
        self._val_cache: dict[str, list[dict[str, np.ndarray]]] = {}  # worker side: small val splits, see _val_batches

    # -- driver side ---------------------------------------------------------------------------------------
    def datasets(self, read_shards) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per-task train/val datasets and the facts workers need (task sizes, mixture weights)."""
        cfg = self.cfg
        datasets: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        for t in cfg.tasks:
            tokens = task_tokens(t.definition)
            raw = read_shards([t.train])
            sizes[t.name] = count_rows(t.train)  # the same count as the tuner's, read from the Parquet footers
            datasets[f"train_{t.name}"] = raw.map_batches(
                functools.partial(instruction_layout, tokens=tokens, eeg_max_len=cfg.eeg_max_len,
                                  text_max_len=cfg.text_max_len, evaluation=False,
                                  sample_key=cfg.train.record_samples),
                batch_format="numpy",
            )
            if t.val:
                datasets[f"val_{t.name}"] = read_shards([t.val]).map_batches(
                    functools.partial(instruction_layout, tokens=tokens, eeg_max_len=cfg.eeg_max_len,
                                      text_max_len=cfg.text_max_len, evaluation=True),
                    batch_format="numpy",
                )
        weights = self.weights(sizes)
        return datasets, {"sizes": sizes, "weights": weights, "rows": sum(sizes.values())}

    def weights(self, sizes: dict[str, int]) -> dict[str, float]:
        m = self.cfg.mixture
        try:
            weights = mixture_weights(m.kind, sizes, weights=m.weights or None, temperature=m.temperature)
        except ValueError as err:
            raise ConfigError(f"mixture: {err}") from None
        empty = sorted(t for t, w in weights.items() if w > 0 and sizes[t] == 0)
        if empty:
            raise ConfigError(f"mixture: tasks {empty} have a positive weight but no training samples")
        return weights

    # -- worker side ---------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from neurolm.models.io import load_neurolm

        model = load_neurolm(self.cfg.init, **self.model_overrides)
        model.set_activation_checkpointing(self.cfg.train.activation_checkpointing)
        return model

    def train_stream(self, ctx: WorkerContext, info: dict[str, Any], position: int, seed: int) -> MixedTaskStream:
        """The mixture stream at ``position`` samples; ``seed`` is the run's seed (the same on every rank)."""
        schedule = TaskSchedule(info["weights"], self.cfg.mixture.block_micro_batches, seed)
        shards = {t: ctx.shard(f"train_{t}") for t in info["sizes"]}
        batch = self.cfg.train.micro_batch_size
        return MixedTaskStream(shards, schedule, batch, position // batch, seed + 7919 * (ctx.rank + 1),
                               self.cfg.data.local_shuffle_buffer, self.cfg.data.cache_task_mb << 20)

    def train_step(
        self, model: Any, batch: dict[str, torch.Tensor], text: torch.Tensor | None, progress: float
    ) -> StepOutput:
        x = batch["x"]
        if self.cfg.augment_channel_dropout > 0:
            x = drop_channels(x, batch["input_chans"], batch["input_mask"], self.cfg.augment_channel_dropout)
        out = model(x, batch["input_chans"], batch["input_time"], batch["input_mask"],
                    text=batch["text"], text_targets=batch["text_targets"])
        loss = out.loss
        metrics = {"answer_loss": float(out.loss.detach()), "answer_accuracy": float(out.accuracy)}
        tokens = int(batch["input_mask"].sum()) + int((batch["text"] != EOT_ID).sum())
        if text is not None and self.cfg.text_loss_weight > 0:
            lm = model(text=text[:, :-1], text_targets=text[:, 1:])
            loss = loss + self.cfg.text_loss_weight * lm.loss
            metrics["text_loss"] = float(lm.loss.detach())
            tokens += text[:, :-1].numel()
        metrics["loss"] = float(loss.detach())
        # issue 16: a non-finite loss is reported (train/nonfinite_loss = share of such micro-steps), not averaged away.
        metrics["nonfinite_loss"] = float(not np.isfinite(metrics["loss"]))
        if metrics["nonfinite_loss"]:
            log.warning("COLLAPSED: non-finite instruction loss %s at progress %.3f", metrics["loss"], progress)
        return StepOutput(loss=loss, metrics=metrics, tokens=tokens)

    def evaluate(self, model: nn.Module, ctx: WorkerContext) -> dict[str, float]:
        """Per task: constrained scoring of the answer options on this worker's val shard, confusion counts
        all-reduced over ranks → ``val/<task>/balanced_accuracy``, ``accuracy``, ``loss`` (NLL of the truth)."""
        from neurolm.models.collapse import balanced_accuracy_of, collapse_metrics
        from neurolm.models.generate import score_options

        metrics: dict[str, float] = {}
        baccs = []
        for t in self.cfg.tasks:
            if not t.val:
                continue
            tokens = task_tokens(t.definition)
            k = len(tokens.options)
            confusion = np.zeros((k, k))
            nll = 0.0
            for batch in self._val_batches(ctx, t.name):
                b = ctx.to_device({key: torch.as_tensor(batch[key]) for key in EVAL_KEYS})
                ll = score_options(model, b["x"], b["input_chans"], b["input_time"], b["input_mask"], b["prompt"],
                                   tokens.options).float()
                logp = torch.log_softmax(ll, dim=-1)
                labels = b["label"].long()
                nll -= float(logp.gather(1, labels[:, None]).sum())
                np.add.at(confusion, (labels.cpu().numpy(), logp.argmax(-1).cpu().numpy()), 1)
            total = ctx.all_reduce(confusion.ravel().tolist() + [nll])
            confusion = np.asarray(total[:-1]).reshape(k, k)
            n = confusion.sum()
            bacc = balanced_accuracy_of(confusion)
            metrics[f"val/{t.name}/balanced_accuracy"] = bacc
            metrics[f"val/{t.name}/accuracy"] = float(np.trace(confusion) / max(n, 1))
            metrics[f"val/{t.name}/loss"] = total[-1] / max(n, 1)
            # issue 16: a model answering one class (or with a non-finite loss) is flagged, not just scored.
            metrics.update(collapse_metrics(f"val/{t.name}", confusion.sum(axis=0), metrics[f"val/{t.name}/loss"]))
            baccs.append(bacc)
        if baccs:
            metrics["val/mean_balanced_accuracy"] = float(np.nanmean(baccs))
            metrics["val/worst_balanced_accuracy"] = float(np.nanmin(baccs))
            metrics["val/loss"] = float(np.mean([metrics[f"val/{t.name}/loss"] for t in self.cfg.tasks if t.val]))
            # What the small-task recipe ranks checkpoints by: balanced accuracy moves in steps of 1/n_val, so on a
            # small val split several checkpoints tie, and the latest (most fitted) one used to win; the NLL of the
            # true answers breaks the tie toward the better-calibrated one and never outweighs one val trial.
            metrics["val/score"] = metrics["val/mean_balanced_accuracy"] - SCORE_TIE_BREAK * metrics["val/loss"]
        return metrics

    def _val_batches(self, ctx: WorkerContext, task: str) -> Iterator[dict[str, np.ndarray]]:
        """This worker's validation batches of ``task`` (at most ``train.eval_batches``). When they fit in
        ``data.cache_task_mb`` they are kept after the first validation: a small val split otherwise costs a new
        Ray Data execution (~6 s for 30 rows on 2 cores) at every epoch end."""
        if task in self._val_cache:
            yield from self._val_cache[task]
            return
        kept: list[dict[str, np.ndarray]] | None = []
        size, budget = 0, self.cfg.data.cache_task_mb << 20
        shard = ctx.shard(f"val_{task}")
        batches = shard.iter_batches(batch_size=self.cfg.train.micro_batch_size, batch_format="numpy")
        for i, batch in enumerate(batches):
            if self.cfg.train.eval_batches is not None and i >= self.cfg.train.eval_batches:
                break
            size += sum(v.nbytes for v in batch.values())
            if kept is not None and size <= budget:
                kept.append({k: np.array(v) for k, v in batch.items()})  # off the object store (see _RowStream)
            else:
                kept = None  # over the budget: stream this split at every validation
            yield batch
        if kept is not None:
            self._val_cache[task] = kept

    def export(self, state_dict: dict[str, torch.Tensor], out_dir: str, model_config: dict[str, Any]) -> None:
        from neurolm.data.shards import split_preprocessing
        from neurolm.models.io import save_pretrained
        from neurolm.models.neurolm import NeuroLM, NeuroLMConfig

        with torch.device("meta"):  # the weights come from the checkpoint: allocate nothing twice
            model = NeuroLM(NeuroLMConfig.from_dict(model_config))
        model.load_state_dict(state_dict, strict=True, assign=True)
        # The sequence lengths it was tuned with: without patch_norm_over_real_tokens features depend on padding.
        # And what each task's training data went through, so `neurolm predict` filters raw recordings the same
        # way and refuses what it cannot reproduce (docs/recipe.md §17).
        preprocessing = {t.definition.name: pre for t in self.cfg.tasks if t.train and (pre := split_preprocessing(t.train))}
        save_pretrained(model, out_dir, extra={"stage": "instruct", "run": self.cfg.run.name,
                                               "tasks": [t.name for t in self.cfg.tasks],
                                               "eeg_max_len": self.cfg.eeg_max_len,
                                               "text_max_len": self.cfg.text_max_len,
                                               "preprocessing": preprocessing})
