"""Pair sampling maths (no Django): which two models meet, and with what probability.

Two policies (`ARENA_SAMPLING`):

- `weighted`: each model gets an effective weight, its catalog weight multiplied by a boost
  while it has few votes so new models reach a stable rating sooner. An unordered pair {i, j}
  is drawn with probability proportional to w_i * w_j (never i with itself).
- `active`: spends votes on the order of neighbours on the board. From the last ratings
  (`Standing`: rating and standard error per model) it computes a design, a probability
  for every pair, that minimises the summed variance of neighbours' differences
  theta_k - theta_l (the A-optimal design for those contrasts, by the multiplicative
  algorithm; one vote on {i, j} brings the information p_ij (1 - p_ij)). Each pair {k, l}
  counts with its chance of being adjacent in the ranking (ratings drawn from
  N(rating, se^2); a fixed set of draws, so the same standings always give the same design)
  times how unsettled its order still is, 2 Phi(-|r_k - r_l| / sqrt(se_k^2 + se_l^2)).
  Close pairs get most votes, pairs two or three places apart some (they tie neighbours
  together), distant pairs few; the design is then multiplied by the catalog weights
  w_i * w_j. A share `exploration` of the probability still follows the weighted policy, so
  every pair keeps being sampled: each pair's probability is at least `exploration` times
  its weighted one (and so is each model's share of battles). A model without a rating
  counts as placed at the mean with a very wide error.

Either way sides are a fair coin flip, nothing depends on the visitor or the prompt, and the
probability of the exact ordered pair is recorded with the battle.
"""

import functools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Candidate:
    id: int
    weight: float
    votes: int


@dataclass(frozen=True)
class Draw:
    model_a: int
    model_b: int
    probability: float  # of this ordered pair
    weights: dict[int, float]  # effective weights used


def effective_weights(
    candidates: list[Candidate], *, boost: float, boost_below: int
) -> dict[int, float]:
    return {
        c.id: c.weight * (boost if c.votes < boost_below else 1.0)
        for c in candidates
        if c.weight > 0
    }


def pair_probabilities(weights: Mapping[int, float]) -> dict[tuple[int, int], float]:
    """Probability of each unordered pair (i < j)."""
    ids = sorted(weights)
    raw = {(i, j): weights[i] * weights[j] for n, i in enumerate(ids) for j in ids[n + 1 :]}
    total = sum(raw.values())
    return {pair: value / total for pair, value in raw.items()} if total > 0 else {}


@dataclass(frozen=True)
class Standing:
    """A model's last rating and its standard error, on the display (Elo) scale."""

    rating: float
    se: float


ELO_PER_LOGIT = 400 / math.log(10)


def active_pair_probabilities(
    weights: Mapping[int, float],
    standings: Mapping[int, Standing],
    *,
    exploration: float,
    design: "Design | None" = None,  # defined below
) -> dict[tuple[int, int], float]:
    """Probability of each unordered pair (i < j) under the active policy (see the top).

    `design`: the one the last recompute computed over the rated models (`Design.of`), used
    when it covers every candidate; otherwise (a model added since) it is computed here."""
    base = pair_probabilities(weights)
    rated = [standings[i] for i in weights if i in standings]
    if not base or not rated:
        return base
    if design is None or not set(weights) <= set(design.ids):
        design = design_for(weights, standings)
    weighted = design.weighted(weights)
    return {pair: (1 - exploration) * weighted[pair] + exploration * base[pair] for pair in base}


def design_for(ids: Iterable[int], standings: Mapping[int, Standing]) -> "Design":
    """The active design over these models (at least one of them rated)."""
    ids = sorted(ids)
    rated = [standings[i] for i in ids if i in standings]
    # Not rated yet: placed at the mean, with an error as wide as two logits (~350 points) or
    # twice the widest, so its possible neighbours are most of the board.
    unknown = Standing(
        sum(s.rating for s in rated) / len(rated),
        max(2 * max(s.se for s in rated), 2 * ELO_PER_LOGIT),
    )
    return _design(tuple((i, *_as_tuple(standings.get(i, unknown))) for i in ids))


def _as_tuple(standing: Standing) -> tuple[float, float]:
    return (standing.rating, standing.se)


# Draws of the ratings used to weigh neighbour pairs: a fixed seed, so the design is a
# function of the standings (the probability stored with a battle is the one it was drawn
# with), and enough draws that a pair's chance of being adjacent is known to a few percent.
NEIGHBOUR_DRAWS = 400
# The multiplicative algorithm is within 0.1% of the optimum after ~30 rounds for 20 or 50
# evenly spread models.
DESIGN_ROUNDS = 40
KEEP_EVERY_PAIR = 1e-4


@dataclass(frozen=True, eq=False)
class Design:
    """The active policy's share of votes for each pair before the catalog weights: a
    symmetric matrix over `ids`. It costs a fraction of a second for 200 models, so the
    recompute computes it with the standings and battle starts only weigh it."""

    ids: tuple[int, ...]
    shares: np.ndarray

    @classmethod
    def of(cls, standings: Mapping[int, Standing]) -> "Design":
        ids = tuple(sorted(standings))
        theta = np.array([standings[i].rating for i in ids]) / ELO_PER_LOGIT
        se = np.array([standings[i].se for i in ids]) / ELO_PER_LOGIT
        shares = neighbour_design(theta, _contrasts(theta, se))
        return cls(ids, shares + shares.T)

    def weighted(self, weights: Mapping[int, float]) -> dict[tuple[int, int], float]:
        """Each pair (i < j) of the weighted models: its share times w_i * w_j, normalised."""
        ids = sorted(weights)
        index = {pk: k for k, pk in enumerate(self.ids)}
        at = np.array([index[i] for i in ids])
        w = np.array([weights[i] for i in ids])
        shares = self.shares[np.ix_(at, at)] * w[:, None] * w[None, :]
        upper = np.triu_indices(len(ids), 1)
        values = shares[upper]
        values = values / values.sum()
        return {(ids[i], ids[j]): float(v) for i, j, v in zip(*upper, values, strict=True)}


@functools.lru_cache(maxsize=16)
def _design(key: tuple[tuple[int, float, float], ...]) -> Design:
    """The design for (id, rating, se) rows sorted by id, when the stored one does not cover
    the candidates; cached because the standings only change at a recompute."""
    return Design.of({i: Standing(rating, se) for i, rating, se in key})


def _contrasts(theta: np.ndarray, se: np.ndarray) -> np.ndarray:
    """How much each pair's difference matters: its chance of being neighbours on the board
    (ratings drawn from N(theta, se^2)) times how unsettled its order is."""
    n = len(theta)
    draws = theta + se * np.random.default_rng(0).standard_normal((NEIGHBOUR_DRAWS, n))
    order = np.argsort(draws, axis=1)
    adjacent = np.zeros((n, n))
    np.add.at(adjacent, (order[:, 1:].ravel(), order[:, :-1].ravel()), 1.0 / NEIGHBOUR_DRAWS)
    adjacent += adjacent.T
    # ... times how unsettled their order is, 2 Phi(-|r_i - r_j| / sd): 1 for equal ratings,
    # towards 0 once the gap is many errors wide (neighbours far apart need no more votes).
    spread = np.maximum(np.sqrt(se[:, None] ** 2 + se[None, :] ** 2), 1e-12)
    return adjacent * special.erfc(np.abs(theta[:, None] - theta[None, :]) / spread / math.sqrt(2))


def neighbour_design(theta: np.ndarray, contrasts: np.ndarray) -> np.ndarray:
    """The share of votes for each pair (upper triangle, summing to 1) that minimises
    sum over k < l of contrasts[k, l] * Var(theta_k - theta_l) for a given number of votes,
    theta the ratings in logits (the A-optimal design, by the multiplicative algorithm).
    Every pair keeps at least `KEEP_EVERY_PAIR` of an even share; no contrast at all gives
    every pair alike."""
    n = len(theta)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    uniform = upper / upper.sum()
    design = uniform
    weights = np.triu(contrasts, 1)
    weights = weights + weights.T
    if not weights.sum() > 0:
        return design
    target = _laplacian(weights)
    p = special.expit(theta[:, None] - theta[None, :])
    info = p * (1 - p)  # one vote's information on the pair's difference
    centre = np.full((n, n), 1 / n)
    for _ in range(DESIGN_ROUNDS):
        # The covariance of the ratings for this design (a pseudo-inverse: only differences
        # are identified).
        cov = np.linalg.inv(_laplacian((design + design.T) * info) + centre) - centre
        m = cov @ target @ cov
        d = np.diag(m)
        # How much one more vote on {i, j} would shrink the weighted sum of variances.
        gain = info * (d[:, None] + d[None, :] - 2 * m)
        design = np.where(upper, design * np.clip(gain, 0, None), 0.0)
        # A ten-thousandth spread evenly keeps every pair in (a pair no contrast needs would
        # otherwise fall towards 0 and leave the covariance undefined).
        design = (1 - KEEP_EVERY_PAIR) * design / design.sum() + KEEP_EVERY_PAIR * uniform
    return design


def _laplacian(weights: np.ndarray) -> np.ndarray:
    return np.diag(weights.sum(axis=1)) - weights


def model_shares(
    weights: Mapping[int, float], pairs: Mapping[tuple[int, int], float]
) -> dict[int, float]:
    """Each model's chance of being in the next battle (the shares sum to 2: two per battle)."""
    shares = dict.fromkeys(weights, 0.0)
    for (i, j), probability in pairs.items():
        shares[i] += probability
        shares[j] += probability
    return shares


def draw_pair(
    candidates: list[Candidate],
    *,
    boost: float,
    boost_below: int,
    rng: random.Random | None = None,
    standings: Mapping[int, Standing] | None = None,
    exploration: float = 1.0,
    design: Design | None = None,
) -> Draw | None:
    """Two distinct models with randomised sides, or None when fewer than two can be drawn.

    With `standings` (the active policy) the pair follows `active_pair_probabilities`.
    """
    rng = rng or random.SystemRandom()
    weights = effective_weights(candidates, boost=boost, boost_below=boost_below)
    if standings:
        pairs = active_pair_probabilities(
            weights, standings, exploration=exploration, design=design
        )
    else:
        pairs = pair_probabilities(weights)
    if not pairs:
        return None
    keys = list(pairs)
    (i, j) = rng.choices(keys, weights=[pairs[k] for k in keys], k=1)[0]
    if rng.random() < 0.5:
        i, j = j, i
    return Draw(
        model_a=i, model_b=j, probability=pairs[(min(i, j), max(i, j))] / 2, weights=weights
    )
