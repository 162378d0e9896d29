"""Task mixture weights and the block-deterministic sampler (spec §4.4, STYLE.md levanter mixture)."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from neurolm.data.mixture import MixtureSampler, _floor_sum, mixture_weights

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


# ------------------------------------------------------------------------------------------ sampler


def _sampler(block_size: int = 16, seed: int = 3, kind: str = "temperature", **kw: float) -> MixtureSampler:
    weights = mixture_weights(kind, SIZES, **({"temperature": 2.0} if kind == "temperature" else {}), **kw)
    return MixtureSampler(SIZES, weights, block_size=block_size, seed=seed)


def test_stream_is_a_pure_function_of_seed_weights_sizes_and_position() -> None:
    a = _sampler().indices(0, 300)
    reordered = dict(reversed(list(SIZES.items())))  # dict order must not matter
    b = MixtureSampler(reordered, mixture_weights("temperature", reordered, temperature=2.0), 16, 3).indices(0, 300)
    assert a == b
    assert _sampler(seed=4).indices(0, 300) != a
    assert all(0 <= i < SIZES[task] for task, i in a)


@pytest.mark.parametrize("k", [0, 1, 15, 16, 17, 100, 299, 300])
def test_resume_at_any_position_reproduces_the_stream(k: int) -> None:
    full = _sampler().indices(0, 300)
    before = _sampler().indices(0, k)
    after = _sampler().indices(k, 300)  # a fresh instance: nothing carried over
    assert before + after == full


def test_ranks_compute_their_positions_independently() -> None:
    world, n = 3, 250
    full = _sampler().indices(0, n)
    per_rank = [_sampler().indices(rank, n, world) for rank in range(world)]
    assert [per_rank[i % world][i // world] for i in range(n)] == full
    # A strided slice starting mid-stream agrees too.
    assert _sampler().indices(37, 200, 5) == full[37:200:5]


def test_block_is_the_slice_of_the_stream() -> None:
    s = _sampler(block_size=16)
    assert s.block(4) == s.indices(64, 80) == _sampler(block_size=16).indices(0, 80)[64:]


def test_every_block_count_is_floor_or_ceil_of_its_quota() -> None:
    s = _sampler(block_size=16)
    for b in range(200):
        counts = s.block_counts(b)
        assert sum(counts.values()) == 16
        for task, c in counts.items():
            quota = 16 * s.weights[task]
            assert math.floor(quota) <= c <= math.ceil(quota)
        assert Counter(task for task, _ in s.block(b)) == {t: c for t, c in counts.items() if c}


def test_empirical_frequencies_match_the_weights() -> None:
    # Quotas below one sample per block (tusl: 16·0.035 ≈ 0.56) still get their exact long-run share.
    s = _sampler(block_size=16)
    n = 16 * 2000
    counts = Counter(task for task, _ in s.indices(0, n))
    for task in s.tasks:
        assert abs(counts[task] - n * s.weights[task]) <= 4, task
    assert dict(counts) == s.task_counts(n)
    # ... and at every prefix, not only at the end (the error stays within a few samples).
    for block in range(0, 2001, 50):
        prefix = s.task_counts(16 * block)
        assert all(abs(prefix[t] - 16 * block * s.weights[t]) <= 4 for t in s.tasks), block


def test_closed_form_task_counts_match_the_stream_everywhere() -> None:
    s = _sampler(block_size=16)
    stream = s.indices(0, 16 * 60 + 5)
    running = Counter()
    for pos, (task, _) in enumerate(stream):
        if pos % 7 == 0:
            assert s.task_counts(pos) == {t: running[t] for t in s.tasks}
        running[task] += 1


def test_long_run_share_stays_exact_far_into_the_stream() -> None:
    sizes = {"tuab": 327_000, "tuev": 80_000, "seed": 22_815, "hmc": 110_000, "workload": 1_508, "tusl": 150}
    s = MixtureSampler(sizes, mixture_weights("proportional", sizes), block_size=2048, seed=0)
    n = 2048 * 1_000_000
    total = sum(sizes.values())
    counts = s.task_counts(n)  # closed form: no replay of a million blocks
    assert sum(counts.values()) == n
    for task, size in sizes.items():
        assert abs(counts[task] - Fraction(n * size, total)) <= 30, task


def test_every_sample_is_seen_once_per_task_epoch_in_a_new_order() -> None:
    s = _sampler(block_size=8)
    stream = s.indices(0, 8 * 400)
    for task, size in SIZES.items():
        drawn = [i for t, i in stream if t == task]
        epochs = [drawn[e * size : (e + 1) * size] for e in range(len(drawn) // size)]
        assert len(epochs) >= 3, task
        for order in epochs:
            assert sorted(order) == list(range(size)), task
        if size > 3:
            assert len({tuple(order) for order in epochs}) > 1, task


def test_proportional_block_of_the_dataset_size_is_one_shuffled_concat_epoch() -> None:
    # With the official mix and a block of Σ n samples, each block is exactly one ConcatDataset epoch.
    total = sum(SIZES.values())
    s = MixtureSampler(SIZES, mixture_weights("proportional", SIZES), block_size=total, seed=11)
    for b in range(3):
        block = s.block(b)
        assert Counter(t for t, _ in block) == SIZES
        assert sorted(block) == sorted((t, i) for t, n in SIZES.items() for i in range(n))


def test_largest_remainder_gives_every_block_the_same_composition() -> None:
    weights = mixture_weights("temperature", SIZES, temperature=2.0)
    s = MixtureSampler(SIZES, weights, block_size=16, seed=3, remainder="largest")
    first = s.block_counts(0)
    assert sum(first.values()) == 16
    # The 16·w_t with the largest fractional parts get the remainder slots; all others get the floor.
    fractions = {t: 16 * s.weights[t] - math.floor(16 * s.weights[t]) for t in s.tasks}
    extra = sorted(s.tasks, key=lambda t: -fractions[t])[: 16 - sum(math.floor(16 * s.weights[t]) for t in s.tasks)]
    assert first == {t: math.floor(16 * s.weights[t]) + (t in extra) for t in s.tasks}
    assert all(s.block_counts(b) == first for b in range(50))
    stream = s.indices(0, 16 * 50)
    assert s.indices(0, 100) + s.indices(100, 16 * 50) == stream
    assert dict(Counter(t for t, _ in stream)) == {t: 50 * c for t, c in first.items() if c}
    assert s.task_counts(16 * 50) == {t: 50 * c for t, c in first.items()}


def test_sampler_survives_pickling_for_ray_workers() -> None:
    s = _sampler()
    s.indices(0, 50)  # with a warm permutation cache
    clone = pickle.loads(pickle.dumps(s))
    assert clone.indices(0, 300) == _sampler().indices(0, 300)


def test_zero_weight_tasks_are_never_drawn() -> None:
    s = MixtureSampler(SIZES, {"tuab": 1.0, "tusl": 1.0}, block_size=4, seed=0)
    assert {t for t, _ in s.indices(0, 400)} == {"tuab", "tusl"}
    assert s.weights["hmc"] == 0.0 and s.task_counts(400)["tusl"] == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {"zuco": 1.0}}, "unknown tasks"),
        ({"weights": {"tuab": -1.0}}, ">= 0"),
        ({"weights": {"tuab": 0.0}}, "sum to zero"),
        ({"sizes": {"tuab": 0, "tusl": 3}, "weights": {"tuab": 1.0}}, "positive weight but no samples"),
        ({"block_size": 0}, "block_size"),
        ({"seed": -1}, "seed"),
        ({"remainder": "random"}, "remainder"),
    ],
)
def test_sampler_rejects_bad_configuration_clearly(kwargs: dict, match: str) -> None:
    args = {"sizes": SIZES, "weights": {"tuab": 1.0}, "block_size": 8, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        MixtureSampler(**args)


def test_positions_must_be_non_negative_integers() -> None:
    s = _sampler()
    with pytest.raises(ValueError, match="start"):
        s.indices(-1, 5)
    with pytest.raises(ValueError, match="step"):
        s.indices(0, 5, 0)
    assert s.indices(5, 5) == [] and s.indices(7, 3) == []


@pytest.mark.parametrize("seed", range(20))
def test_floor_sum_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, a = int(rng.integers(0, 200)), int(rng.integers(1, 1000)), int(rng.integers(0, 3000))
    b = int(rng.integers(-5000, 5000))
    assert _floor_sum(n, m, a, b) == sum((a * i + b) // m for i in range(n))
