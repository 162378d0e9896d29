"""Task mixture weights and the seeded block task schedule (one task per micro-batch; exact resume)."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import pytest

from neurolm.data.mixture import TaskSchedule, mixture_weights

SIZES = {"tuab": 40, "tuev": 17, "seed": 9, "hmc": 23, "workload": 5, "tusl": 2}


# ------------------------------------------------------------------------------------------ weights


def test_official_proportional_weights_are_size_ratios() -> None:
    got = mixture_weights("proportional", SIZES)
    total = sum(SIZES.values())
    assert list(got) == list(SIZES)
    for task, n in SIZES.items():
        assert got[task] == pytest.approx(n / total, rel=1e-15)


def test_temperature_interpolates_between_proportional_and_uniform() -> None:
    sizes = {"big": 900, "small": 100, "empty": 0}
    assert mixture_weights("temperature", sizes, temperature=1.0) == pytest.approx(
        mixture_weights("proportional", sizes)
    )
    t2 = mixture_weights("temperature", sizes, temperature=2.0)
    assert t2 == pytest.approx({"big": 30 / 40, "small": 10 / 40, "empty": 0.0})  # √900 : √100
    assert mixture_weights("temperature", sizes, temperature=math.inf) == pytest.approx(
        {"big": 0.5, "small": 0.5, "empty": 0.0}
    )


def test_explicit_weights_are_normalised_and_missing_tasks_get_zero() -> None:
    got = mixture_weights("explicit", SIZES, {"tuab": 2.0, "tusl": 6.0})
    assert got["tuab"] == pytest.approx(0.25) and got["tusl"] == pytest.approx(0.75)
    assert got["hmc"] == 0.0 and sum(got.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("explicit", SIZES, {"tuab": 1.0, "zuco": 1.0}), {}, "unknown tasks \\['zuco'\\]"),
        (("explicit", SIZES, {"tuab": -1.0, "tuev": 2.0}), {}, "finite and >= 0"),
        (("explicit", SIZES, {"tuab": math.nan}), {}, "finite and >= 0"),
        (("explicit", SIZES, {"tuab": 0.0}), {}, "sum to zero"),
        (("explicit", SIZES), {}, "needs weights"),
        (("balanced", SIZES), {}, "unknown mixture kind 'balanced'; choose one of explicit, proportional"),
        (("proportional", SIZES, {"tuab": 1.0}), {}, "only used by kind='explicit'"),
        (("temperature", SIZES), {"temperature": 0.0}, "temperature must be > 0"),
        (("proportional", {"tuab": 0}), {}, "sum to zero"),
        (("proportional", {"tuab": -3}), {}, "integer >= 0"),
        (("proportional", {}), {}, "empty"),
    ],
)
def test_mixture_weights_reject_bad_input_clearly(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mixture_weights(*args, **kwargs)


# ------------------------------------------------------------------------------------------ schedule


def _schedule(block: int = 16, seed: int = 3) -> TaskSchedule:
    return TaskSchedule(mixture_weights("temperature", SIZES, temperature=2.0), block, seed)


def _tasks(s: TaskSchedule, start: int, stop: int) -> list[str]:
    return [s.task_at(i) for i in range(start, stop)]


def test_schedule_is_a_pure_function_of_seed_weights_and_position() -> None:
    a = _tasks(_schedule(), 0, 300)
    reordered = dict(reversed(list(SIZES.items())))  # dict order must not matter
    b = _tasks(TaskSchedule(mixture_weights("temperature", reordered, temperature=2.0), 16, 3), 0, 300)
    assert a == b
    assert _tasks(_schedule(seed=4), 0, 300) != a
    assert set(a) == set(SIZES)


@pytest.mark.parametrize("k", [0, 1, 15, 16, 17, 100, 299, 300])
def test_resume_at_any_micro_batch_knows_exactly_what_came_before(k: int) -> None:
    full = _tasks(_schedule(), 0, 300)
    fresh = _schedule()  # a fresh instance: nothing carried over
    assert fresh.task_counts(k) == {t: full[:k].count(t) for t in fresh.tasks}
    assert _tasks(fresh, k, 300) == full[k:]


def test_every_block_count_is_floor_or_ceil_of_its_quota() -> None:
    s = _schedule()
    for b in range(200):
        counts = s.block_counts(b)
        assert sum(counts.values()) == 16
        for task, c in counts.items():
            quota = 16 * s.weights[task]
            assert math.floor(quota) <= c <= math.ceil(quota)
        assert Counter(_tasks(s, 16 * b, 16 * (b + 1))) == {t: c for t, c in counts.items() if c}


def test_empirical_frequencies_match_the_weights() -> None:
    # Quotas below one micro-batch per block (tusl: 16·0.035 ≈ 0.56) still get their exact long-run share.
    s = _schedule()
    n = 16 * 2000
    counts = Counter(_tasks(s, 0, n))
    for task in s.tasks:
        assert abs(counts[task] - n * s.weights[task]) <= 4, task
    assert dict(counts) == s.task_counts(n)
    # ... and at every prefix, not only at the end (the error stays within a few micro-batches).
    for block in range(0, 2001, 50):
        prefix = s.task_counts(16 * block)
        assert all(abs(prefix[t] - 16 * block * s.weights[t]) <= 4 for t in s.tasks), block


def test_long_run_share_stays_exact_far_into_the_run() -> None:
    sizes = {"tuab": 327_000, "tuev": 80_000, "seed": 22_815, "hmc": 110_000, "workload": 1_508, "tusl": 150}
    s = TaskSchedule(mixture_weights("proportional", sizes), 2048, seed=0)
    n = 2048 * 200_000
    total = sum(sizes.values())
    counts = s.task_counts(n)
    assert sum(counts.values()) == n
    for task, size in sizes.items():
        assert abs(counts[task] - n * size / total) <= 30, task


def test_schedule_survives_pickling_for_ray_workers() -> None:
    clone = pickle.loads(pickle.dumps(_schedule()))
    assert _tasks(clone, 0, 300) == _tasks(_schedule(), 0, 300)


def test_zero_weight_tasks_are_never_drawn() -> None:
    s = TaskSchedule({"tuab": 1.0, "tusl": 1.0, "hmc": 0.0}, 4, seed=0)
    assert set(_tasks(s, 0, 400)) == {"tuab", "tusl"}
    assert "hmc" not in s.weights and s.task_counts(400) == {"tuab": 200, "tusl": 200}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {}}, "empty"),
        ({"weights": {"tuab": -1.0}}, ">= 0"),
        ({"weights": {"tuab": 0.0}}, "sum to zero"),
        ({"block_micro_batches": 0}, "block_micro_batches"),
        ({"seed": -1}, "seed"),
    ],
)
def test_schedule_rejects_bad_configuration_clearly(kwargs: dict, match: str) -> None:
    args = {"weights": {"tuab": 1.0}, "block_micro_batches": 8, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        TaskSchedule(**args)
