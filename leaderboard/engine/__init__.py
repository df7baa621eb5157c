"""Bradley-Terry rating engine on aggregated vote counts (numpy/scipy only, no Django).

Model: P(a beats b) = sigmoid(beta_a - beta_b + gamma . x), where x is an optional row of
style features. Ties, and both-bad votes unless dropped, count as half a win for each side.

Conventions the callers rely on:

- Fitting minimises the negative log-likelihood plus a ridge of ``RIDGE / 2 * |theta|^2``.
  The ridge is far too small to move well-posed estimates (< 0.001 Elo points even at a
  handful of votes) but keeps a model that never won or never lost finite (roughly 2,000
  points from the others) instead of running off to infinity. Since the likelihood does not
  change when all ratings of a connected group move together, the ridge also centres each
  connected group at mean zero.
- Display scale: ``scale * beta / ln(base)``, shifted so the models with battles average
  ``init_rating``, or so the anchor sits at ``anchor_rating`` (an anchor without battles is
  ignored). On a disconnected comparison graph each group is centred on its own and ratings
  across groups are not comparable.
- Models with zero battles get ``rating = init_rating`` and bounds ``-inf``/``+inf``; nothing
  in the result is NaN except ``win_rate_matrix`` cells with no decisive battles.
- Intervals of a model that never lost or never won come from the ridge, not the data: keep
  such models behind the minimum-votes threshold.
"""

from leaderboard.engine.fit import fit
from leaderboard.engine.fragility import Fragility, fragility
from leaderboard.engine.likelihood import RIDGE
from leaderboard.engine.stats import online_elo, rank_ub
from leaderboard.engine.types import (
    CI_METHODS,
    OUTCOME_A,
    OUTCOME_B,
    OUTCOME_BOTH_BAD,
    OUTCOME_TIE,
    PairCounts,
    RatingOptions,
    RatingResult,
    StyleSums,
)

__all__ = [
    "CI_METHODS",
    "OUTCOME_A",
    "OUTCOME_B",
    "OUTCOME_BOTH_BAD",
    "OUTCOME_TIE",
    "RIDGE",
    "Fragility",
    "PairCounts",
    "RatingOptions",
    "RatingResult",
    "StyleSums",
    "fit",
    "fragility",
    "online_elo",
    "rank_ub",
]
