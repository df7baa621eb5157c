"""Confidence intervals: sandwich coverage by simulation, bootstrap reproducibility."""

import math

import numpy as np
import pytest

from leaderboard.engine import RatingOptions, fit
from leaderboard.tests.test_engine import aggregate, simulate

ELO = 400 / math.log(10)


def test_sandwich_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    strength = np.linspace(-0.8, 0.8, 8)
    truth = ELO * (strength - strength.mean()) + 1000
    covered = []
    for _ in range(80):
        result = fit(aggregate(*simulate(strength, 3000, rng), 8), 8)
        covered.append((result.lower <= truth) & (truth <= result.upper))
    rate = np.mean(covered)
    assert 0.90 <= rate <= 0.99, rate


def test_sandwich_intervals_shrink_like_one_over_root_n():
    rng = np.random.default_rng(8)
    strength = np.linspace(-0.8, 0.8, 8)
    small = fit(aggregate(*simulate(strength, 4_000, rng), 8), 8)
    large = fit(aggregate(*simulate(strength, 64_000, rng), 8), 8)
    ratio = np.mean(small.upper - small.lower) / np.mean(large.upper - large.lower)
    assert ratio == pytest.approx(4.0, rel=0.1)


def test_bootstrap_and_sandwich_intervals_agree_on_plenty_of_data():
    rng = np.random.default_rng(9)
    strength = np.linspace(-0.8, 0.8, 8)
    pc = aggregate(*simulate(strength, 20_000, rng), 8)
    sandwich = fit(pc, 8)
    boot = fit(pc, 8, RatingOptions(ci="bootstrap", bootstrap_rounds=400))
    np.testing.assert_allclose(boot.ratings, sandwich.ratings)
    np.testing.assert_allclose(boot.upper - boot.lower, sandwich.upper - sandwich.lower, rtol=0.15)
    assert (boot.lower < boot.ratings).all() and (boot.ratings < boot.upper).all()


def test_bootstrap_is_reproducible_with_a_seed_and_changes_with_another():
    rng = np.random.default_rng(10)
    pc = aggregate(*simulate(np.linspace(-0.5, 0.5, 5), 2_000, rng), 5)
    options = RatingOptions(ci="bootstrap", bootstrap_rounds=60, seed=1)
    first, again = fit(pc, 5, options), fit(pc, 5, options)
    other = fit(pc, 5, RatingOptions(ci="bootstrap", bootstrap_rounds=60, seed=2))
    np.testing.assert_array_equal(first.lower, again.lower)
    np.testing.assert_array_equal(first.upper, again.upper)
    assert not np.array_equal(first.lower, other.lower)


def test_bootstrap_with_an_anchor_keeps_the_anchor_fixed():
    rng = np.random.default_rng(11)
    pc = aggregate(*simulate(np.linspace(-0.5, 0.5, 5), 5_000, rng), 5)
    result = fit(
        pc, 5, RatingOptions(ci="bootstrap", bootstrap_rounds=100, anchor=2, anchor_rating=1500)
    )
    assert result.ratings[2] == pytest.approx(1500)
    assert result.lower[2] == pytest.approx(1500) and result.upper[2] == pytest.approx(1500)
    assert (result.lower <= result.ratings + 1e-9).all()
    assert (result.ratings <= result.upper + 1e-9).all()


def test_without_intervals_rank_ub_is_the_plain_rank():
    rng = np.random.default_rng(12)
    pc = aggregate(*simulate(np.linspace(-0.8, 0.8, 6), 5_000, rng), 6)
    result = fit(pc, 6, RatingOptions(ci="none"))
    np.testing.assert_array_equal(result.lower, result.ratings)
    assert result.rank_ub.tolist() == (6 - np.argsort(np.argsort(result.ratings))).tolist()
