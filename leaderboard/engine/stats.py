"""Per-model and pairwise vote statistics, rank (UB) and online Elo."""

from __future__ import annotations

import numpy as np

from leaderboard.engine.types import OUTCOME_A, OUTCOME_BOTH_BAD, PairCounts


def rank_ub(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + the number of models whose lower bound is above this model's upper bound."""
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    above = len(lower) - np.searchsorted(np.sort(lower), upper, side="right")
    return 1 + above


def online_elo(
    model_a: np.ndarray,
    model_b: np.ndarray,
    outcome: np.ndarray,
    n_models: int,
    *,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init: float = 1000.0,
) -> np.ndarray:
    """Sequential Elo over battles in the given order; ties and both-bad score half each."""
    outcome = np.asarray(outcome)
    if outcome.size and (outcome.min() < OUTCOME_A or outcome.max() > OUTCOME_BOTH_BAD):
        raise ValueError("outcome codes must be 0 (A), 1 (B), 2 (tie) or 3 (both bad)")
    score_a = np.array([1.0, 0.0, 0.5, 0.5])[outcome]
    rating = [float(init)] * n_models
    # A loop over Python lists is the fastest pure-Python form of this inherently serial update.
    pairs = zip(np.asarray(model_a).tolist(), np.asarray(model_b).tolist(), strict=True)
    for (a, b), s in zip(pairs, score_a.tolist(), strict=True):
        expected = 1.0 / (1.0 + base ** ((rating[b] - rating[a]) / scale))
        delta = k * (s - expected)
        rating[a] += delta
        rating[b] -= delta
    return np.array(rating)


def model_stats(counts: PairCounts, n_models: int) -> dict[str, np.ndarray]:
    a = np.asarray(counts.model_a, dtype=np.int64)
    b = np.asarray(counts.model_b, dtype=np.int64)
    wa, wb, ties, both_bad = (
        np.asarray(c, dtype=float)
        for c in (counts.wins_a, counts.wins_b, counts.ties, counts.both_bad)
    )

    def per_model(col_a: np.ndarray, col_b: np.ndarray) -> np.ndarray:
        return np.bincount(a, col_a, n_models) + np.bincount(b, col_b, n_models)

    def pairwise(values: np.ndarray) -> np.ndarray:
        return np.bincount(a * n_models + b, values, n_models**2).reshape(n_models, n_models)

    wins, losses = per_model(wa, wb), per_model(wb, wa)
    beats = pairwise(wa) + pairwise(wb).T
    decisive = beats + beats.T
    played = pairwise(wa + wb + ties + both_bad)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(decisive > 0, beats / decisive, np.nan)
        met = decisive > 0
        avg = np.where(met.any(axis=1), np.nansum(matrix, axis=1) / met.sum(axis=1), 0.0)
        rate = np.where(wins + losses > 0, wins / (wins + losses), 0.0)
    return {
        "wins": wins,
        "losses": losses,
        "ties": per_model(ties, ties),
        "both_bad": per_model(both_bad, both_bad),
        "battles": per_model(wa + wb + ties + both_bad, wa + wb + ties + both_bad),
        "win_rate": rate,
        "avg_win_rate": avg,
        "win_rate_matrix": matrix,
        "battle_count_matrix": played + played.T,
    }
