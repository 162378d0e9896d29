"""Task mixing for multi-task instruction tuning: mixture weights and a seeded, block-deterministic task schedule.

The official code mixes the six training sets with a shuffled ``ConcatDataset``, so each task is drawn in
proportion to its size (docs/reference.md §4.4): TUAB and HMC dominate, TUSL and Workload are starved. This
module offers that mixture and two others (:func:`mixture_weights`), and :class:`TaskSchedule`, which says
which task each micro-batch comes from (stage 3 draws one task per micro-batch), as a pure function of
``(seed, weights, micro-batch index)``:

- micro-batches are cut into blocks of ``block_micro_batches``;
- each block holds ``floor(B · w_t)`` micro-batches of task ``t`` plus one of the ``r = B − Σ_t floor(B · w_t)``
  remainder slots, dealt by systematic sampling along the tasks' fractional parts with an offset that rotates
  by the golden ratio from block to block. Every block count is the floor or the ceiling of its quota and the
  long-run mix is exact (a task whose quota is below one micro-batch per block still gets its share);
- the order inside a block is a permutation seeded by ``(seed, block)``.

Resuming at micro-batch ``i`` needs only :meth:`TaskSchedule.task_counts` (how many micro-batches each task
gave before ``i``) to fast-forward every task's stream; nothing is replayed::

    schedule = TaskSchedule(mixture_weights("proportional", sizes), block_micro_batches=256, seed=17)
    schedule.task_at(i)          # "hmc"
    schedule.task_counts(i)      # {"hmc": 41, "tuab": 120, ...} micro-batches before i

Random numbers come only from ``numpy.random.SeedSequence`` and the raw ``PCG64`` stream, which numpy keeps
stable across versions, so the order survives an upgrade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Literal

import numpy as np

__all__ = ["MixtureKind", "MIXTURE_KINDS", "mixture_weights", "TaskSchedule"]

MixtureKind = Literal["explicit", "proportional", "temperature"]
MIXTURE_KINDS: tuple[str, ...] = ("explicit", "proportional", "temperature")

# Remainder slots: the offset of block b is (h + b·_GOLDEN) mod 2^32, an exact-integer golden-ratio rotation.
_UNIT = 1 << 32
_GOLDEN = 0x9E3779B9  # round(2^32 / φ)
# Weights are snapped to the nearest fraction with a denominator ≤ 2^24, which makes size ratios n_t / N exact
# (for N ≤ 2^24) although they arrive as floats.
_MAX_DENOMINATOR = 1 << 24
# Independent random streams derived from the one seed (the values of earlier releases: same orders).
_STREAM_OFFSET = 0
_STREAM_BLOCK_ORDER = 1
# Blocks per vectorised chunk when counting the micro-batches before a position.
_CHUNK = 1 << 16


def _check_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    if not sizes:
        raise ValueError("sizes is empty: give the number of training samples of every task")
    out: dict[str, int] = {}
    for task, n in sizes.items():
        if not isinstance(task, str) or not task:
            raise ValueError(f"task names must be non-empty strings, got {task!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sizes[{task!r}] must be an integer >= 0, got {n!r}")
        out[task] = int(n)
    return out


def mixture_weights(
    kind: MixtureKind,
    sizes: Mapping[str, int],
    weights: Mapping[str, float] | None = None,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Normalised task-sampling probabilities.

    Parameters
    ----------
    kind : {"explicit", "proportional", "temperature"}
        ``"explicit"``: ``weights`` as given (tasks left out get 0), normalised to sum to 1.
        ``"proportional"``: ``n_t / Σ n``, the official ``ConcatDataset`` mix (docs/reference.md §4.4).
        ``"temperature"``: ``n_t^(1/T) / Σ n^(1/T)``; ``T = 1`` is proportional, ``T → inf`` uniform over
        the non-empty tasks (the "balanced or temperature task sampling" improvement of docs/reference.md §8).
    sizes : mapping of str to int
        Number of training samples of each task.
    weights : mapping of str to float, optional
        Only for ``"explicit"``: non-negative, finite, with a positive sum, naming only tasks in ``sizes``.
    temperature : float
        Only for ``"temperature"``: ``T > 0`` (``math.inf`` allowed).

    Returns
    -------
    dict of str to float
        One entry per task of ``sizes`` (in its order), summing to 1.
    """
    n = _check_sizes(sizes)
    if kind not in MIXTURE_KINDS:
        raise ValueError(f"unknown mixture kind {kind!r}; choose one of {', '.join(MIXTURE_KINDS)}")
    if kind != "explicit" and weights is not None:
        raise ValueError(f"weights are only used by kind='explicit', not {kind!r}")
    if kind != "temperature" and temperature != 1.0:
        raise ValueError(f"temperature is only used by kind='temperature', not {kind!r}")

    if kind == "explicit":
        if weights is None:
            raise ValueError("kind='explicit' needs weights")
        unknown = sorted(set(weights) - set(n))
        if unknown:
            raise ValueError(f"weights name unknown tasks {unknown}; known tasks: {sorted(n)}")
        raw = {}
        for task in n:
            w = weights.get(task, 0.0)
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise ValueError(f"weights[{task!r}] must be a number, got {w!r}")
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weights[{task!r}] must be finite and >= 0, got {w!r}")
            raw[task] = float(w)
    elif kind == "proportional":
        raw = {task: float(size) for task, size in n.items()}
    else:
        if not temperature > 0:  # also rejects NaN
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        raw = {task: (float(size) ** (1.0 / temperature) if size > 0 else 0.0) for task, size in n.items()}

    total = math.fsum(raw.values())
    if not total > 0:
        raise ValueError(f"mixture weights sum to zero ({kind}): {raw}")
    return {task: w / total for task, w in raw.items()}


def _stable_permutation(n: int, entropy: list[int]) -> np.ndarray:
    # argsort of raw PCG64 outputs: depends only on SeedSequence and PCG64, whose streams numpy keeps stable.
    raw = np.random.PCG64(np.random.SeedSequence(entropy)).random_raw(n)
    return np.argsort(raw, kind="stable")


def _check_index(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


class TaskSchedule:
    """Which task each micro-batch comes from: seeded blocks whose composition follows the weights.

    Parameters
    ----------
    weights : mapping of str to float
        Task sampling weights (normalised here; see :func:`mixture_weights`); zero-weight tasks never appear.
    block_micro_batches : int
        Micro-batches per block; each block's task counts match the weights as closely as integers allow.
    seed : int
        The one seed (``>= 0``) from which the block orders and remainder offsets derive.

    Everything is a pure function of the constructor arguments and the micro-batch index; tasks are ordered
    by name, so the order of ``weights`` does not matter.
    """

    def __init__(self, weights: Mapping[str, float], block_micro_batches: int, seed: int) -> None:
        if not weights:
            raise ValueError("weights is empty: give a weight per task")
        self.block_micro_batches = _check_index(block_micro_batches, "block_micro_batches")
        if self.block_micro_batches < 1:
            raise ValueError(f"block_micro_batches must be an integer >= 1, got {block_micro_batches!r}")
        self.seed = _check_index(seed, "seed")
        normalised = mixture_weights("explicit", dict.fromkeys(weights, 1), weights)
        self.tasks: tuple[str, ...] = tuple(sorted(t for t, w in normalised.items() if w > 0))
        # Exact rational weights → per-block base counts and fractional parts (which sum to an integer r).
        snapped = [Fraction(normalised[t]).limit_denominator(_MAX_DENOMINATOR) for t in self.tasks]
        exact = [w / sum(snapped, Fraction(0)) for w in snapped]
        self.weights: dict[str, float] = {t: float(w) for t, w in zip(self.tasks, exact, strict=True)}
        quotas = [self.block_micro_batches * w for w in exact]
        self._base = np.array([math.floor(q) for q in quotas], dtype=np.int64)
        # The fractional parts tile [0, r); their cumulative boundaries in units of 2^-32 (the last is exactly r).
        bounds, acc = [0], Fraction(0)
        for q in quotas:
            acc += q - math.floor(q)
            bounds.append(math.floor(acc * _UNIT))
        self._bounds = np.array(bounds, dtype=np.int64)
        self._offset0 = int(np.random.SeedSequence([self.seed, _STREAM_OFFSET]).generate_state(1)[0])

    def __repr__(self) -> str:
        weights = {t: round(w, 6) for t, w in self.weights.items()}
        return f"TaskSchedule(block_micro_batches={self.block_micro_batches}, seed={self.seed}, weights={weights})"

    def _counts(self, blocks: np.ndarray) -> np.ndarray:
        """(len(blocks), tasks) micro-batches of each task in each block."""
        offset = (self._offset0 + blocks.astype(np.int64) * _GOLDEN) % _UNIT  # (n,)
        # Remainder points sit at offset + j·2^32 (j < r); a task gets one per point in its segment.
        hits = -(
            (offset[:, None] - self._bounds[None, :]) // _UNIT
        )  # (n, tasks + 1): ceil((c - offset) / 2^32)
        return self._base[None, :] + np.diff(hits, axis=1)

    def block_counts(self, block: int) -> dict[str, int]:
        """Micro-batches of each task in block ``block`` (each the floor or ceiling of ``B · w_t``)."""
        counts = self._counts(np.array([_check_index(block, "block")]))[0]
        return dict(zip(self.tasks, counts.tolist(), strict=True))

    def _block_order(self, block: int) -> np.ndarray:
        """Task ids (indices into ``self.tasks``) of the block's micro-batches, in order."""
        slots = np.repeat(np.arange(len(self.tasks)), self._counts(np.array([block]))[0])
        return slots[_stable_permutation(self.block_micro_batches, [self.seed, _STREAM_BLOCK_ORDER, block])]

    def task_at(self, micro_batch: int) -> str:
        """The task of micro-batch ``micro_batch`` (0-based, counted over the whole run)."""
        block, within = divmod(_check_index(micro_batch, "micro_batch"), self.block_micro_batches)
        return self.tasks[int(self._block_order(block)[within])]

    def task_counts(self, micro_batch: int) -> dict[str, int]:
        """Micro-batches each task gave before ``micro_batch`` (what a resume fast-forwards)."""
        block, within = divmod(_check_index(micro_batch, "micro_batch"), self.block_micro_batches)
        counts = np.zeros(len(self.tasks), dtype=np.int64)
        for start in range(0, block, _CHUNK):
            counts += self._counts(np.arange(start, min(block, start + _CHUNK))).sum(axis=0)
        if within:
            counts += np.bincount(self._block_order(block)[:within], minlength=len(self.tasks))
        return dict(zip(self.tasks, counts.tolist(), strict=True))
