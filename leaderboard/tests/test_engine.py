"""The pure rating engine: hand-worked cases, the exact MLE, degenerate data, statistics."""

import math

import numpy as np
import pytest

from leaderboard.engine import (
    PairCounts,
    RatingOptions,
    StyleSums,
    fit,
    online_elo,
    rank_ub,
)

ELO = 400 / math.log(10)


def counts(rows):
    """PairCounts from (a, b, wins_a, wins_b, ties, both_bad) tuples."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * 6
    return PairCounts(*(np.array(c, dtype=int if i < 2 else float) for i, c in enumerate(cols)))


def simulate(strength, n_votes, rng, tie_rate=0.2, both_bad_rate=0.05):
    """Votes with P(A) + P(tie) / 2 = sigmoid(s_a - s_b), so the half-win MLE targets `strength`.

    Ties and both-bad votes take `tie_rate` of every pair; needs |s_a - s_b| small enough
    that sigmoid stays within [tie_rate / 2, 1 - tie_rate / 2].
    """
    n = len(strength)
    a = rng.integers(0, n, n_votes)
    b = (a + rng.integers(1, n, n_votes)) % n
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(n_votes)
    half = tie_rate / 2
    outcome = np.where(u < p - half, 0, np.where(u < 1 - 2 * half, 1, 2))
    outcome = np.where(
        (outcome == 2) & (rng.random(n_votes) < both_bad_rate / tie_rate), 3, outcome
    )
    return a, b, outcome


def aggregate(a, b, outcome, n):
    table = np.bincount((a * n + b) * 4 + outcome, minlength=n * n * 4).reshape(n * n, 4)
    rows = np.flatnonzero(table.sum(axis=1))
    return PairCounts(rows // n, rows % n, *(table[rows, j] for j in range(4)))


def exact_mle(pc, n):
    """Unpenalised Newton's method on the sum-zero subspace, to machine precision."""
    a, b = np.asarray(pc.model_a), np.asarray(pc.model_b)
    s = pc.wins_a + 0.5 * (pc.ties + pc.both_bad)
    m = pc.wins_a + pc.wins_b + pc.ties + pc.both_bad
    beta = np.zeros(n)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(beta[a] - beta[b])))
        g = np.zeros(n)
        np.add.at(g, a, s - m * p)
        np.add.at(g, b, -(s - m * p))
        w = m * p * (1 - p)
        h = np.zeros((n, n))
        np.add.at(h, (a, a), w)
        np.add.at(h, (b, b), w)
        np.add.at(h, (a, b), -w)
        np.add.at(h, (b, a), -w)
        step = np.linalg.pinv(h) @ g
        beta += step
        beta -= beta.mean()
        if np.abs(step).max() < 1e-13:
            break
    return ELO * beta + 1000


def test_two_models_split_evenly_get_equal_ratings():
    result = fit(counts([(0, 1, 7, 7, 2, 0)]), 2)
    np.testing.assert_allclose(result.ratings, [1000, 1000], atol=1e-6)


def test_three_wins_to_one_give_a_gap_of_400_log10_3():
    result = fit(counts([(0, 1, 3, 1, 0, 0)]), 2)
    assert result.ratings[0] - result.ratings[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert result.ratings.mean() == pytest.approx(1000)


def test_ties_and_both_bad_count_as_half_a_win_each():
    # 2 wins + 2 ties + 2 both-bad against none: 4 to 2 in half-wins, i.e. 2:1.
    result = fit(counts([(0, 1, 2, 0, 2, 2)]), 2)
    assert result.ratings[0] - result.ratings[1] == pytest.approx(400 * math.log10(2), abs=0.01)


def test_both_bad_votes_are_dropped_on_request():
    result = fit(counts([(0, 1, 2, 0, 2, 50)]), 2, RatingOptions(both_bad_as_tie=False))
    assert result.ratings[0] - result.ratings[1] == pytest.approx(400 * math.log10(3), abs=0.01)
    assert result.both_bad.tolist() == [50, 50]
    assert result.ties.tolist() == [2, 2]


def test_rows_in_either_orientation_give_the_same_ratings():
    one = fit(counts([(0, 1, 5, 2, 1, 0), (1, 2, 4, 4, 0, 1), (2, 0, 3, 6, 2, 0)]), 3)
    other = fit(
        counts([(1, 0, 2, 3, 1, 0), (0, 1, 2, 0, 0, 0), (2, 1, 4, 4, 0, 1), (0, 2, 6, 3, 2, 0)]), 3
    )
    np.testing.assert_allclose(one.ratings, other.ratings, atol=1e-4)
    np.testing.assert_allclose(one.lower, other.lower, atol=1e-4)


def test_it_matches_the_exact_mle_to_a_hundredth_of_a_point():
    rng = np.random.default_rng(3)
    strength = np.linspace(-1.0, 1.0, 12)
    pc = aggregate(*simulate(strength, 800, rng), 12)
    result = fit(pc, 12, RatingOptions(ci="none"))
    assert np.abs(result.ratings - exact_mle(pc, 12)).max() < 0.01


def test_it_matches_the_exact_mle_on_skewed_data_with_a_rarely_seen_model():
    rng = np.random.default_rng(4)
    strength = np.linspace(-1.0, 1.0, 6)
    pc = aggregate(*simulate(strength, 200_000, rng), 6)
    rare = counts([(0, 6, 2, 1, 1, 0), (6, 3, 1, 2, 0, 0)])
    joined = PairCounts(*(np.r_[getattr(pc, f), getattr(rare, f)] for f in pc.__dataclass_fields__))
    result = fit(joined, 7, RatingOptions(ci="none"))
    assert np.abs(result.ratings - exact_mle(joined, 7)).max() < 0.01


def test_the_gradient_vanishes_at_the_optimum():
    rng = np.random.default_rng(5)
    strength = np.linspace(-1.0, 1.0, 10)
    a, b, outcome = simulate(strength, 50_000, rng)
    result = fit(aggregate(a, b, outcome, 10), 10)
    assert result.grad_norm < 1e-6 * len(a)
    # Independent check: each model's observed score equals its expected score.
    beta = (result.ratings - 1000) / ELO
    p = 1 / (1 + np.exp(-(beta[a] - beta[b])))
    y = np.array([1.0, 0.0, 0.5, 0.5])[outcome]
    residual = np.bincount(a, y - p, 10) - np.bincount(b, y - p, 10)
    assert np.abs(residual).max() < 1e-3


@pytest.mark.parametrize(
    "rows, n",
    [
        pytest.param(
            [(0, 1, 5, 0, 0, 0), (1, 2, 3, 3, 1, 0), (2, 0, 2, 2, 0, 0)], 3, id="never-lost"
        ),
        pytest.param(
            [(0, 1, 0, 5, 0, 0), (1, 2, 3, 3, 1, 0), (2, 0, 2, 2, 0, 0)], 3, id="never-won"
        ),
        pytest.param([(0, 1, 3, 2, 1, 0), (2, 3, 4, 1, 0, 0)], 4, id="disconnected-pairs"),
        pytest.param([(0, 1, 1, 0, 0, 0)], 2, id="single-battle"),
        pytest.param([(0, 1, 0, 0, 3, 0)], 2, id="only-ties"),
        pytest.param([], 3, id="zero-battles"),
    ],
)
@pytest.mark.parametrize("ci", ["sandwich", "bootstrap"])
def test_degenerate_data_gives_finite_ratings_and_no_nan(rows, n, ci):
    result = fit(counts(rows), n, RatingOptions(ci=ci, bootstrap_rounds=50))
    assert np.isfinite(result.ratings).all()
    for values in (result.lower, result.upper, result.win_rate, result.avg_win_rate):
        assert not np.isnan(values).any()
    assert np.isfinite(result.grad_norm)


def test_a_model_that_never_lost_is_rated_above_the_rest():
    result = fit(counts([(0, 1, 5, 0, 0, 0), (1, 2, 3, 3, 1, 0), (2, 0, 0, 2, 0, 0)]), 3)
    assert result.ratings[0] > result.ratings[1:].max() + 400


def test_a_model_without_battles_gets_the_initial_rating_and_an_unbounded_interval():
    result = fit(counts([(0, 1, 3, 1, 0, 0)]), 3, RatingOptions(init_rating=1200))
    assert result.ratings[2] == 1200
    assert result.lower[2] == -np.inf and result.upper[2] == np.inf
    assert result.battles[2] == 0
    assert result.ratings[:2].mean() == pytest.approx(1200)


def test_the_anchor_is_pinned_and_the_gaps_do_not_move():
    rows = [(0, 1, 5, 2, 1, 0), (1, 2, 4, 4, 0, 1), (2, 0, 3, 6, 2, 0)]
    free = fit(counts(rows), 3)
    pinned = fit(counts(rows), 3, RatingOptions(anchor=1, anchor_rating=800))
    assert pinned.ratings[1] == pytest.approx(800)
    assert pinned.lower[1] == pytest.approx(800) and pinned.upper[1] == pytest.approx(800)
    np.testing.assert_allclose(np.diff(pinned.ratings), np.diff(free.ratings), atol=1e-9)


def test_rank_ub_counts_the_models_whose_lower_bound_is_above_this_upper_bound():
    lower = np.array([1100.0, 1050.0, 990.0, 900.0])
    upper = np.array([1200.0, 1150.0, 1060.0, 1000.0])
    assert rank_ub(lower, upper).tolist() == [1, 1, 2, 3]


def test_online_elo_matches_a_hand_computed_two_battle_example():
    # Battle 1: 0 beats 1 from 1000/1000: expected 0.5, so +/- 4 * 0.5 = 2 -> 1002 / 998.
    # Battle 2: 1 (as A) ties 0: expected for 1 is 1 / (1 + 10 ** (4 / 400)) = 0.4942438,
    # so 1 gains 4 * (0.5 - 0.4942438) = 0.0230248 and 0 loses it.
    ratings = online_elo(np.array([0, 1]), np.array([1, 0]), np.array([0, 2]), 3)
    expected_1 = 1 / (1 + 10 ** (4 / 400))
    delta = 4 * (0.5 - expected_1)
    np.testing.assert_allclose(ratings, [1002 - delta, 998 + delta, 1000])
    assert delta == pytest.approx(0.0230248, abs=1e-7)


def test_online_elo_rejects_unknown_outcome_codes():
    with pytest.raises(ValueError):
        online_elo(np.array([0]), np.array([1]), np.array([4]), 2)


def test_it_reports_wins_ties_and_win_rates_per_model_and_pair():
    result = fit(counts([(0, 1, 3, 1, 2, 1), (1, 0, 1, 0, 0, 0), (1, 2, 0, 0, 4, 0)]), 3)
    assert result.wins.tolist() == [3, 2, 0]
    assert result.losses.tolist() == [2, 3, 0]
    assert result.ties.tolist() == [2, 6, 4]
    assert result.both_bad.tolist() == [1, 1, 0]
    assert result.battles.tolist() == [8, 12, 4]
    assert result.win_rate.tolist() == [0.6, 0.4, 0.0]
    assert result.win_rate_matrix[0, 1] == pytest.approx(0.6)
    assert result.win_rate_matrix[1, 0] == pytest.approx(0.4)
    assert np.isnan(result.win_rate_matrix[1, 2]) and np.isnan(result.win_rate_matrix[0, 2])
    assert result.avg_win_rate.tolist() == pytest.approx([0.6, 0.4, 0.0])
    assert result.battle_count_matrix.tolist() == [[0, 8, 0], [8, 0, 4], [0, 4, 0]]


def test_it_rejects_malformed_counts():
    with pytest.raises(ValueError, match="itself"):
        fit(counts([(1, 1, 1, 0, 0, 0)]), 2)
    with pytest.raises(ValueError, match="indices"):
        fit(counts([(0, 2, 1, 0, 0, 0)]), 2)
    with pytest.raises(ValueError, match="ci"):
        fit(counts([(0, 1, 1, 0, 0, 0)]), 2, RatingOptions(ci="jackknife"))


def style_battles(rng, n_votes, gamma):
    """Four equally strong models; model 0 writes longer answers, and length sways votes."""
    a = rng.integers(0, 4, n_votes)
    b = (a + rng.integers(1, 4, n_votes)) % 4
    length = np.where(np.arange(4) == 0, 0.6, 0.0)
    x = np.round(length[a] - length[b] + rng.normal(0, 0.3, n_votes), 1)
    p = 1 / (1 + np.exp(-gamma * x))
    outcome = np.where(rng.random(n_votes) < p, 0, 1)
    return a, b, outcome, x


def aggregate_with_feature(a, b, outcome, x, n):
    """Aggregate by (a, b, outcome, feature bucket), the way the Django side does."""
    keys = np.column_stack([a, b, np.round(x * 10).astype(int)])
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    table = np.zeros((len(uniq), 4))
    np.add.at(table, (inverse, outcome), 1)
    pc = PairCounts(uniq[:, 0], uniq[:, 1], *(table[:, j] for j in range(4)))
    return pc, uniq[:, 2:] / 10


def test_style_control_recovers_a_length_effect_and_removes_it_from_the_ratings():
    rng = np.random.default_rng(6)
    a, b, outcome, x = style_battles(rng, 40_000, gamma=1.0)
    pc, features = aggregate_with_feature(a, b, outcome, x, 4)
    plain = fit(pc, 4)
    controlled = fit(pc, 4, features=features)
    assert plain.ratings[0] - plain.ratings[1:].mean() > 40
    assert abs(controlled.ratings[0] - controlled.ratings[1:].mean()) < 10
    assert controlled.style_coefs == pytest.approx([1.0], abs=0.1)
    assert controlled.method == "bradley-terry+style/sandwich"
    assert controlled.upper[0] - controlled.lower[0] > plain.upper[0] - plain.lower[0]


def test_style_control_with_zero_features_equals_the_plain_fit():
    rows = [(0, 1, 5, 2, 1, 0), (1, 2, 4, 4, 0, 1), (2, 0, 3, 6, 2, 0)]
    plain = fit(counts(rows), 3)
    styled = fit(counts(rows), 3, features=np.zeros((3, 2)))
    np.testing.assert_allclose(styled.ratings, plain.ratings, atol=1e-3)
    np.testing.assert_allclose(styled.upper, plain.upper, atol=1e-3)
    np.testing.assert_allclose(styled.style_coefs, 0, atol=1e-6)


# --- style control from per-pair sums (StyleSums) ---------------------------------------------


def style_votes(rng, n_models, n_votes, gamma):
    """Votes swayed by two style features; models differ in how long they write."""
    strength = rng.normal(0, 0.5, n_models)
    verbosity = rng.normal(0, 0.5, n_models)
    a = rng.integers(0, n_models, n_votes)
    b = (a + rng.integers(1, n_models, n_votes)) % n_models
    x = np.column_stack(
        [
            np.tanh(verbosity[a] - verbosity[b] + rng.normal(0, 0.4, n_votes)),
            rng.normal(0, 0.3, n_votes) * (rng.random(n_votes) < 0.3),
        ]
    )
    p = 1 / (1 + np.exp(-(strength[a] - strength[b] + x @ gamma)))
    outcome = np.where(rng.random(n_votes) < 0.25, 2, np.where(rng.random(n_votes) < p, 0, 1))
    outcome = np.where((outcome == 2) & (rng.random(n_votes) < 0.1), 3, outcome)
    return a, b, outcome, x


def per_vote(a, b, outcome):
    table = np.zeros((len(a), 4))
    table[np.arange(len(a)), outcome] = 1
    return PairCounts(a, b, *(table[:, j] for j in range(4)))


def summed(a, b, outcome, x, n):
    """One row per ordered pair with the per-outcome feature sums, as the recompute reads."""
    keys, inverse = np.unique(a * n + b, return_inverse=True)
    k = x.shape[1]
    table = np.zeros((len(keys), 4))
    sx = np.zeros((len(keys), 4, k))
    sxx = np.zeros((len(keys), 4, k, k))
    np.add.at(table, (inverse, outcome), 1)
    np.add.at(sx, (inverse, outcome), x)
    np.add.at(sxx, (inverse, outcome), x[:, :, None] * x[:, None, :])
    counts = PairCounts(keys // n, keys % n, *(table[:, j] for j in range(4)))
    return counts, StyleSums(sx, sxx)


def test_style_sums_agree_with_the_fit_on_one_row_per_vote():
    rng = np.random.default_rng(11)
    n = 12
    a, b, outcome, x = style_votes(rng, n, 60_000, gamma=np.array([1.2, 0.3]))
    rms = np.sqrt(np.mean(x**2, axis=0))  # the engine scales summed features the same way
    exact = fit(per_vote(a, b, outcome), n, features=x / rms)
    pair_counts, sums = summed(a, b, outcome, x, n)
    approx = fit(pair_counts, n, style=sums)
    plain = fit(pair_counts, n)
    assert np.abs(plain.ratings - exact.ratings).max() > 40  # a style effect worth removing
    np.testing.assert_allclose(approx.ratings, exact.ratings, atol=0.5)
    np.testing.assert_allclose(approx.style_coefs, exact.style_coefs, atol=0.01)
    np.testing.assert_allclose(
        approx.upper - approx.ratings, exact.upper - exact.ratings, rtol=0.03
    )
    assert approx.method == "bradley-terry+style/sandwich"


def test_style_sums_are_exact_when_every_vote_of_a_pair_has_the_same_features():
    rng = np.random.default_rng(12)
    n = 6
    a, b, outcome, _ = style_votes(rng, n, 20_000, gamma=np.array([0.0, 0.0]))
    per_pair = rng.normal(0, 0.3, (n * n, 2))  # one feature vector per ordered pair
    x = per_pair[a * n + b]
    rms = np.sqrt(np.mean(x**2, axis=0))
    _, first = np.unique(a * n + b, return_index=True)
    pair_counts, sums = summed(a, b, outcome, x, n)
    exact = fit(pair_counts, n, features=x[first] / rms)
    approx = fit(pair_counts, n, style=sums)
    np.testing.assert_allclose(approx.ratings, exact.ratings, atol=1e-4)
    np.testing.assert_allclose(approx.upper, exact.upper, atol=1e-3)


def test_style_sums_refuse_the_bootstrap_and_malformed_shapes():
    pair_counts, sums = summed(
        np.array([0, 1]), np.array([1, 0]), np.array([0, 1]), np.ones((2, 1)), 2
    )
    with pytest.raises(ValueError, match="bootstrap"):
        fit(pair_counts, 2, RatingOptions(ci="bootstrap"), style=sums)
    with pytest.raises(ValueError, match="shapes"):
        fit(pair_counts, 2, style=StyleSums(sums.x[:, :2], sums.xx))
