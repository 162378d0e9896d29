"""Seeded subject-wise splits."""

from __future__ import annotations

import pytest

from neurolm.data.readers.splits import split_counts, subject_split, train_val_split


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [(10, (0.8, 0.1, 0.1), [8, 1, 1]), (3, (0.8, 0.1, 0.1), [1, 1, 1]), (2, (0.8, 0.1, 0.1), [2, 0, 0]),
     (7, (0.6, 0.2, 0.2), [4, 2, 1]), (0, (0.8, 0.1, 0.1), [0, 0, 0]), (5, (1.0, 0.0, 0.0), [5, 0, 0])],
)  # fmt: skip
def test_split_counts(n, fractions, expected):
    assert split_counts(n, fractions) == expected
    assert sum(split_counts(n, fractions)) == n


def test_subject_split_is_seeded_disjoint_and_stable():
    subjects = [f"s{i:02d}" for i in range(20)] * 3  # three recordings per subject
    split = subject_split(subjects, (0.8, 0.1, 0.1), seed=0)
    assert set(split) == set(subjects)
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [16, 2, 2]
    assert (
        subject_split(reversed(subjects), (0.8, 0.1, 0.1), seed=0) == split
    )  # order of discovery is irrelevant
    assert subject_split(subjects, (0.8, 0.1, 0.1), seed=1) != split


def test_train_val_split_renormalises():
    split = train_val_split([f"s{i}" for i in range(10)], (0.8, 0.1, 0.1), seed=0)
    assert sorted(split.values()).count("val") == 1 and set(split.values()) == {"train", "val"}
