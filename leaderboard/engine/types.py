"""Public data types of the rating engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTCOME_A = 0
OUTCOME_B = 1
OUTCOME_TIE = 2
OUTCOME_BOTH_BAD = 3

CI_METHODS = ("sandwich", "bootstrap", "none")


@dataclass(frozen=True)
class PairCounts:
    """Vote counts, one row per (model_a, model_b) as voted; several rows may share a pair."""

    model_a: np.ndarray
    model_b: np.ndarray
    wins_a: np.ndarray
    wins_b: np.ndarray
    ties: np.ndarray
    both_bad: np.ndarray


@dataclass(frozen=True)
class StyleSums:
    """Style features summed per PairCounts row, for style control without one row per vote.

    ``x[r, c]`` is the sum of the feature vectors (A minus B, e.g. (len_a - len_b) /
    (len_a + len_b + 1)) of row r's votes with outcome c (OUTCOME_A, OUTCOME_B, OUTCOME_TIE,
    OUTCOME_BOTH_BAD), shape (rows, 4, k); ``xx[r, c]`` the sum of their outer products,
    shape (rows, 4, k, k). Unscaled: the engine divides each feature by its root mean square.
    """

    x: np.ndarray
    xx: np.ndarray


@dataclass(frozen=True)
class RatingOptions:
    """How to fit and display.

    ``ci`` is "sandwich" (closed form, the default), "bootstrap" (``bootstrap_rounds``
    multinomial resamples of the count table, percentile intervals, seeded by ``seed``) or
    "none" (lower = upper = rating). Intervals have coverage ``1 - alpha``.
    """

    scale: float = 400.0
    base: float = 10.0
    init_rating: float = 1000.0
    anchor: int | None = None
    anchor_rating: float = 1000.0
    both_bad_as_tie: bool = True
    ci: str = "sandwich"
    bootstrap_rounds: int = 1000
    seed: int = 0
    alpha: float = 0.05


@dataclass(frozen=True)
class RatingResult:
    """Ratings on the display scale plus per-model and pairwise statistics.

    ``ties`` and ``both_bad`` are reported separately whatever ``both_bad_as_tie`` says;
    ``battles`` counts every vote (wins + losses + ties + both_bad). ``win_rate`` excludes
    ties and both-bad and is 0 without decisive battles; ``avg_win_rate`` averages the
    pairwise win rates over opponents with decisive battles. ``style_coefs`` holds the
    style coefficients in log-odds per feature unit (empty without features). ``method``
    reads like "bradley-terry/sandwich"; ``iterations`` counts L-BFGS-B iterations of the
    point fit and ``grad_norm`` is the largest |gradient| of the penalised negative
    log-likelihood there, in votes. ``rank_ub`` comes from ``lower`` and ``upper``.
    """

    ratings: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rank_ub: np.ndarray
    wins: np.ndarray
    losses: np.ndarray
    ties: np.ndarray
    both_bad: np.ndarray
    battles: np.ndarray
    win_rate: np.ndarray
    avg_win_rate: np.ndarray
    win_rate_matrix: np.ndarray
    battle_count_matrix: np.ndarray
    method: str
    iterations: int
    grad_norm: float
    style_coefs: np.ndarray
