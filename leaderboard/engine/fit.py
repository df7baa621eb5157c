"""The entry point: counts in, display-scale ratings with intervals out."""

from __future__ import annotations

import math

import numpy as np

# special.ndtri is the normal quantile; scipy.stats would add 0.6 s to every command's start.
from scipy import special

from leaderboard.engine.bootstrap import bootstrap_samples
from leaderboard.engine.likelihood import (
    centre,
    connected_groups,
    fit_theta,
    fitting_rows,
    sandwich_variance,
    style_rows,
    successes,
    trials,
)
from leaderboard.engine.stats import model_stats, rank_ub
from leaderboard.engine.types import (
    CI_METHODS,
    PairCounts,
    RatingOptions,
    RatingResult,
    StyleSums,
)


def fit(
    counts: PairCounts,
    n_models: int,
    options: RatingOptions = RatingOptions(),  # noqa: B008 (frozen, safe to share)
    *,
    features: np.ndarray | None = None,
    style: StyleSums | None = None,
) -> RatingResult:
    """Fit Bradley-Terry ratings with confidence intervals.

    ``features`` (rows x k) turns on style control: row r of ``counts`` carries the style
    difference A - B of the battles it aggregates, already normalised (e.g. length as
    (len_a - len_b) / (len_a + len_b), markdown counts likewise, then standardised). Callers
    aggregate by (model_a, model_b, rounded feature bucket) and pass the bucket value. The
    ratings are then style-controlled and ``style_coefs`` holds gamma.

    ``style`` does the same from feature sums per row (StyleSums: one row per pair however
    many distinct feature values its votes have), through a second-order expansion of each
    vote's likelihood around its row's mean (see likelihood.style_rows); features are scaled
    by their root mean square, and only sandwich or no intervals are offered.
    """
    if options.ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {options.ci!r}")
    if options.anchor is not None and not 0 <= options.anchor < n_models:
        raise ValueError("anchor must index a model")
    if style is not None:
        if features is not None:
            raise ValueError("pass features or style sums, not both")
        if options.ci == "bootstrap":
            raise ValueError("style sums support sandwich intervals or none, not the bootstrap")
        rows = style_rows(counts, style, n_models, options.both_bad_as_tie)
    else:
        rows = fitting_rows(counts, n_models, options.both_bad_as_tie, features)
    summary = model_stats(counts, n_models)
    played = np.zeros(n_models, dtype=bool)
    played[rows.a] = True
    played[rows.b] = True
    groups = connected_groups(rows, played)

    theta, iterations, grad_norm = fit_theta(rows, successes(rows.cells), trials(rows.cells))
    beta = centre(theta[:n_models], groups, played)
    to_elo = options.scale / math.log(options.base)
    anchor = options.anchor if options.anchor is not None and played[options.anchor] else None
    offset = _offset(beta, anchor, options, to_elo)
    ratings = np.where(played, to_elo * beta + offset, options.init_rating)

    if not played.any():
        lower, upper = ratings.copy(), ratings.copy()
    elif options.ci == "sandwich":
        se = to_elo * np.sqrt(sandwich_variance(theta, rows, groups, anchor))
        half = special.ndtri(1 - options.alpha / 2) * se
        lower, upper = ratings - half, ratings + half
    elif options.ci == "bootstrap":
        samples = bootstrap_samples(theta, rows, groups, played, anchor, options)
        lower = to_elo * np.quantile(samples, options.alpha / 2, axis=0) + offset
        upper = to_elo * np.quantile(samples, 1 - options.alpha / 2, axis=0) + offset
    else:
        lower, upper = ratings.copy(), ratings.copy()
    lower = np.where(played, lower, -np.inf)
    upper = np.where(played, upper, np.inf)

    kind = "bradley-terry+style" if rows.x.shape[1] else "bradley-terry"
    return RatingResult(
        ratings=ratings,
        lower=lower,
        upper=upper,
        rank_ub=rank_ub(lower, upper),
        method=f"{kind}/{options.ci}",
        iterations=iterations,
        grad_norm=grad_norm,
        style_coefs=theta[n_models:].copy(),
        **summary,
    )


def _offset(beta: np.ndarray, anchor: int | None, options: RatingOptions, to_elo: float) -> float:
    if anchor is None:
        return options.init_rating
    return options.anchor_rating - to_elo * beta[anchor]
