"""Seeded, subject-wise train/val/test splits (docs/reference.md §6.3-10 and §8: the official TUAB split is
unseeded and TUSL's is by file, not by subject).

A split is a function of the sorted set of subjects and the seed only, so the same corpus and seed give the
same split on every machine, and adding a file of a known subject never moves that subject.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["split_counts", "subject_split", "train_val_split"]


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` items go to each part: largest-remainder rounding, and every part with a positive
    fraction gets at least one item when ``n`` allows it (so a small corpus still has a val and a test part)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    total = fractions.sum()
    if n == 0 or total <= 0:
        return [0] * len(fractions)
    exact = fractions / total * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    positive = np.flatnonzero(fractions > 0)
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return [int(c) for c in counts]


def subject_split(
    subjects: Iterable[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, str]:
    """Assign every subject to one split: a seeded permutation of the sorted unique subjects, cut by
    :func:`split_counts`.

    Parameters
    ----------
    subjects : iterable of str
        Subject of every recording (duplicates allowed).
    fractions : sequence of float
        One fraction per split name.
    seed : int
        Seed of the permutation.
    names : sequence of str
        Split names, one per fraction.

    Returns
    -------
    dict
        subject → split name.
    """
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    out: dict[str, str] = {}
    position = 0
    for name, count in zip(names, split_counts(len(unique), fractions), strict=True):
        for i in order[position : position + count]:
            out[unique[i]] = name
        position += count
    return out


def train_val_split(subjects: Iterable[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Train/val split of the subjects of a corpus whose test set is fixed (TUAB/TUEV ``eval``): the train and
    val fractions of ``fractions`` are renormalised."""
    train, val = float(fractions[0]), float(fractions[1])
    if train + val <= 0:
        train = 1.0
    return subject_split(subjects, (train, val), seed, names=("train", "val"))
