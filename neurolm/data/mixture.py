"""Task mixing for multi-task instruction tuning: mixture weights and a block-deterministic sampler.

The official code mixes the six training sets with a shuffled ``ConcatDataset``, so each task is drawn in
proportion to its size (spec §4.4): TUAB and HMC dominate, TUSL and Workload are starved. This module offers
that mixture and two others (:func:`mixture_weights`), and a sampler in the style of levanter's
``data/mixture.py`` (STYLE.md) whose data order is a pure function of ``(seed, weights, sizes, position)``:

- the stream is cut into blocks of ``block_size`` positions;
- each block holds a fixed number of samples per task: ``floor(block_size · w_t)`` plus one of the
  ``r = block_size − Σ_t floor(block_size · w_t)`` remainder slots. Every task's count is therefore the floor or
  the ceiling of its quota, and the counts sum to ``block_size``, the closest a block can be to the weights.
  Plain largest-remainder rounding would give the remainder slots to the same tasks in every block and bias the
  long-run mix by up to ``1 / block_size`` per task (a task whose quota is below one sample, such as TUSL under
  the official mix, would get a sample in every block or never). Instead the remainder slots are dealt by
  systematic sampling along the tasks' fractional parts with an offset that rotates by the golden ratio from
  block to block, so over many blocks each task gets its exact share (the error stays within a few samples).
  ``remainder="largest"`` keeps plain largest-remainder rounding for whoever wants identical blocks;
- the order inside a block is a permutation seeded by ``(seed, block)``;
- the ``k``-th sample drawn from task ``t`` is ``perm(seed, t, k // n_t)[k % n_t]``: every sample of a task
  is seen once per task-epoch, in a new order each epoch.

Resuming at position ``i``, or computing only one rank's positions ``rank, rank + world, …``, gives exactly
the samples of the uninterrupted stream, without replaying it: the per-task counts before any block come in
closed form from a floor sum (``O(tasks · log)``, not ``O(blocks)``)::

    sizes = {"tuab": 327_000, "tuev": 80_000, "seed": 22_815, "hmc": 110_000, "workload": 1_508, "tusl": 150}
    weights = mixture_weights("temperature", sizes, temperature=3.0)
    sampler = MixtureSampler(sizes, weights, block_size=2048, seed=17)
    sampler.indices(start=step * 64 + rank, stop=(step + 1) * 64, step=world)   # [("hmc", 40211), ...]

Random numbers come only from ``numpy.random.SeedSequence`` and the raw ``PCG64`` stream, which numpy keeps
stable across versions, so the order survives an upgrade.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Literal

import numpy as np

__all__ = ["MixtureKind", "MIXTURE_KINDS", "mixture_weights", "MixtureSampler"]

MixtureKind = Literal["explicit", "proportional", "temperature"]
MIXTURE_KINDS: tuple[str, ...] = ("explicit", "proportional", "temperature")

# Remainder slots: the offset of block b is (h + b·_GOLDEN) mod 2^32, an exact-integer golden-ratio rotation.
_UNIT = 1 << 32
_GOLDEN = 0x9E3779B9  # round(2^32 / φ)
# Weights are snapped to the nearest fraction with a denominator ≤ 2^24, which makes size ratios n_t / N exact
# (for N ≤ 2^24) although they arrive as floats.
_MAX_DENOMINATOR = 1 << 24
# Independent random streams derived from the one seed.
_STREAM_OFFSET = 0
_STREAM_BLOCK_ORDER = 1
_STREAM_TASK_EPOCH = 2


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
        ``"proportional"``: ``n_t / Σ n``, the official ``ConcatDataset`` mix (spec §4.4).
        ``"temperature"``: ``n_t^(1/T) / Σ n^(1/T)``; ``T = 1`` is proportional, ``T → inf`` uniform over
        the non-empty tasks (the "balanced or temperature task sampling" improvement of spec §8).
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


def _floor_sum(n: int, m: int, a: int, b: int) -> int:
    """``Σ_{i=0}^{n-1} floor((a·i + b) / m)`` for ``n >= 0``, ``m > 0``, ``a >= 0`` and any ``b``, in
    ``O(log m)`` (the Euclid-like reduction)."""
    total = 0
    q, b = divmod(b, m)  # make 0 <= b < m
    total += n * q
    while n > 0:
        if a >= m:
            total += (n * (n - 1) // 2) * (a // m)
            a %= m
        if b >= m:
            total += n * (b // m)
            b %= m
        y_max = a * n + b
        if y_max < m:
            break
        n, b = divmod(y_max, m)
        m, a = a, m
    return total


def _task_key(task: str) -> int:
    """A stable 64-bit key per task name, so a task's epoch orders do not depend on the other tasks."""
    return int.from_bytes(hashlib.blake2b(task.encode(), digest_size=8).digest(), "little")


def _stable_permutation(n: int, entropy: list[int]) -> np.ndarray:
    # argsort of raw PCG64 outputs: depends only on SeedSequence and PCG64, whose streams numpy keeps stable.
    raw = np.random.PCG64(np.random.SeedSequence(entropy)).random_raw(n)
    return np.argsort(raw, kind="stable")


class MixtureSampler:
    """Block-deterministic stream of ``(task, index within task)`` (levanter-style mixture, spec §4.4).

    Parameters
    ----------
    sizes : mapping of str to int
        Number of samples of each task.
    weights : mapping of str to float
        Sampling weights (normalised here; see :func:`mixture_weights`). A task with a positive weight must
        have at least one sample.
    block_size : int
        Positions per block; each block's task composition matches the weights as closely as integers allow.
    seed : int
        The one seed (``>= 0``) from which the block orders, remainder offsets and task-epoch orders derive.
    remainder : {"rotating", "largest"}
        How the ``r`` remainder slots of a block are dealt. ``"rotating"`` (default): by systematic sampling
        with a golden-ratio offset per block, so the long-run mix is exact. ``"largest"``: plain
        largest-remainder rounding (ties by task name), the same composition in every block; the long-run
        mix is then off by up to ``1 / block_size`` per task.

    Notes
    -----
    Everything is a pure function of the constructor arguments and the position; the instance only caches
    the last few task-epoch permutations. Task order is by name, so the order of the dicts does not matter.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        weights: Mapping[str, float],
        block_size: int,
        seed: int,
        remainder: Literal["rotating", "largest"] = "rotating",
    ):
        if remainder not in ("rotating", "largest"):
            raise ValueError(f"remainder must be 'rotating' or 'largest', got {remainder!r}")
        n = _check_sizes(sizes)
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        normalised = mixture_weights("explicit", n, weights)
        empty = sorted(task for task, w in normalised.items() if w > 0 and n[task] == 0)
        if empty:
            raise ValueError(f"tasks {empty} have a positive weight but no samples")

        self.block_size = int(block_size)
        self.seed = int(seed)
        self.tasks: tuple[str, ...] = tuple(sorted(task for task, w in normalised.items() if w > 0))
        self._sizes = {task: n[task] for task in sorted(n)}

        # Exact rational weights → per-block base counts and fractional parts (which sum to an integer r).
        snapped = [Fraction(normalised[t]).limit_denominator(_MAX_DENOMINATOR) for t in self.tasks]
        total = sum(snapped, Fraction(0))
        exact = [w / total for w in snapped]
        exact_by_task = dict(zip(self.tasks, exact, strict=True))
        self._weights = {task: float(exact_by_task.get(task, 0)) for task in self._sizes}
        quotas = [self.block_size * w for w in exact]
        self._base = tuple(math.floor(q) for q in quotas)
        self._remainder = self.block_size - sum(self._base)
        # The fractional parts tile [0, r); their cumulative boundaries in units of 2^-32 (the last is exactly r).
        bounds, acc = [0], Fraction(0)
        for q, base in zip(quotas, self._base, strict=True):
            acc += q - base
            bounds.append(math.floor(acc * _UNIT))
        self._bounds = tuple(bounds)
        self.remainder = remainder
        fractions = [q - base for q, base in zip(quotas, self._base, strict=True)]
        by_fraction = sorted(range(len(self.tasks)), key=lambda i: (-fractions[i], i))[: self._remainder]
        self._largest = tuple(base + (i in by_fraction) for i, base in enumerate(self._base))
        self._offset0 = int(np.random.SeedSequence([self.seed, _STREAM_OFFSET]).generate_state(1)[0])
        self._task_keys = tuple(_task_key(t) for t in self.tasks)
        self._perm_cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._perm_cache_size = 2 * len(self.tasks)

    @property
    def sizes(self) -> Mapping[str, int]:
        """Samples per task (read-only, by task name)."""
        return MappingProxyType(self._sizes)

    @property
    def weights(self) -> Mapping[str, float]:
        """The normalised weights the sampler realises (read-only, by task name; 0 for unused tasks)."""
        return MappingProxyType(self._weights)

    def __repr__(self) -> str:
        weights = {t: round(self.weights[t], 6) for t in self.tasks}
        return (
            f"MixtureSampler(block_size={self.block_size}, seed={self.seed}, remainder={self.remainder!r}, "
            f"weights={weights})"
        )

    # ----------------------------------------------------------------------------- block composition

    def _offset(self, block: int) -> int:
        return (self._offset0 + block * _GOLDEN) % _UNIT

    def _counts_array(self, block: int) -> list[int]:
        if self.remainder == "largest":
            return list(self._largest)
        offset = self._offset(block)
        # Remainder points sit at offset + j·2^32 (j < r); task i gets one iff a point falls in its segment.
        hits = [-((offset - c) // _UNIT) for c in self._bounds]  # ceil((c - offset) / 2^32)
        return [base + hits[i + 1] - hits[i] for i, base in enumerate(self._base)]

    def _counts_before_array(self, block: int) -> list[int]:
        if self.remainder == "largest":
            return [block * c for c in self._largest]
        # Σ_{b<block} ceil((c − φ_b)/U) = F(h) − F(h − c) with F(β) = Σ_b floor((b·G + β)/U), so the remainder
        # slots task i got in blocks [0, block) are F(h − c_i) − F(h − c_{i+1}).
        f = [_floor_sum(block, _UNIT, _GOLDEN, self._offset0 - c) for c in self._bounds]
        return [block * base + f[i] - f[i + 1] for i, base in enumerate(self._base)]

    def block_counts(self, block: int) -> dict[str, int]:
        """Samples of each task in block ``block`` (each is ``floor`` or ``ceil`` of ``block_size · w_t``)."""
        self._check_index(block, "block")
        return dict(zip(self.tasks, self._counts_array(block), strict=True))

    def task_counts(self, position: int) -> dict[str, int]:
        """Samples drawn from each task at positions ``[0, position)``; divide by ``sizes`` for task epochs."""
        self._check_index(position, "position")
        block, within = divmod(position, self.block_size)
        counts = self._counts_before_array(block)
        if within:
            order = self._block_order(block)[:within]
            counts = [c + int(np.sum(order == i)) for i, c in enumerate(counts)]
        return dict(zip(self.tasks, counts, strict=True))

    # ----------------------------------------------------------------------------------- samples

    def _block_order(self, block: int) -> np.ndarray:
        """Task ids (indices into ``self.tasks``) of the block's positions, in order."""
        slots = np.repeat(np.arange(len(self.tasks)), self._counts_array(block))
        return slots[_stable_permutation(self.block_size, [self.seed, _STREAM_BLOCK_ORDER, block])]

    def _permutation(self, task_id: int, epoch: int) -> np.ndarray:
        key = (task_id, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            entropy = [self.seed, _STREAM_TASK_EPOCH, self._task_keys[task_id], epoch]
            perm = _stable_permutation(self._sizes[self.tasks[task_id]], entropy)
            self._perm_cache[key] = perm
            while len(self._perm_cache) > self._perm_cache_size:
                self._perm_cache.popitem(last=False)
        else:
            self._perm_cache.move_to_end(key)
        return perm

    def _sample(self, task_id: int, k: int) -> tuple[str, int]:
        size = self._sizes[self.tasks[task_id]]
        epoch, i = divmod(k, size)
        return self.tasks[task_id], int(self._permutation(task_id, epoch)[i])

    def indices(self, start: int, stop: int, step: int = 1) -> list[tuple[str, int]]:
        """The samples at positions ``range(start, stop, step)`` of the stream.

        ``indices(0, n) == indices(0, k) + indices(k, n)`` for every ``k``, and rank ``r`` of ``world`` gets
        its share of a global batch with ``indices(begin + r, end, world)``.

        Returns
        -------
        list of (str, int)
            ``(task, index within that task's dataset)`` per position.
        """
        self._check_index(start, "start")
        self._check_index(stop, "stop")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"step must be an integer >= 1, got {step!r}")
        out: list[tuple[str, int]] = []
        positions = range(start, stop, step)
        if not positions:
            return out
        first_block = positions[0] // self.block_size
        last_block = positions[-1] // self.block_size
        seen = self._counts_before_array(first_block)
        for block in range(first_block, last_block + 1):
            order = self._block_order(block)
            block_start = block * self.block_size
            lo = max(positions[0], block_start)
            hi = min(positions[-1] + 1, block_start + self.block_size)
            lo += (positions[0] - lo) % step  # first position of the range inside this block
            if lo < hi:
                # The occurrence number of each slot's task within the block, then within the whole stream.
                occurrence = np.zeros(self.block_size, dtype=np.int64)
                for task_id in range(len(self.tasks)):
                    where = np.flatnonzero(order == task_id)
                    occurrence[where] = seen[task_id] + np.arange(where.size)
                for pos in range(lo, hi, step):
                    slot = pos - block_start
                    out.append(self._sample(int(order[slot]), int(occurrence[slot])))
            counts = np.bincount(order, minlength=len(self.tasks))
            seen = [s + int(c) for s, c in zip(seen, counts, strict=True)]
        return out

    def block(self, block: int) -> list[tuple[str, int]]:
        """All ``block_size`` samples of block ``block``."""
        self._check_index(block, "block")
        return self.indices(block * self.block_size, (block + 1) * self.block_size)

    @staticmethod
    def _check_index(value: int, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
