"""Pair sampling maths (no Django): which two models meet, and with what probability.

Two policies (`ARENA_SAMPLING`):

- `weighted`: each model gets an effective weight, its catalog weight multiplied by a boost
  while it has few votes so new models reach a stable rating sooner. An unordered pair {i, j}
  is drawn with probability proportional to w_i * w_j (never i with itself).
- `active`: spends votes where they shrink the widest intervals most. From the last ratings
  (`Standing`: rating and standard error per model), a vote on {i, j} is worth about
  p_ij (1 - p_ij) (se_i^4 + se_j^4) (the information of one vote on the pair times how much
  it lowers the two variances), times the catalog weights; a share `exploration` of the
  probability still follows the weighted policy, so every pair keeps being sampled: each
  pair's probability is at least `exploration` times its weighted one. A model without a
  rating counts as the least certain.

Either way sides are a fair coin flip, nothing depends on the visitor or the prompt, and the
probability of the exact ordered pair is recorded with the battle.
"""

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass


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
    weights: Mapping[int, float], standings: Mapping[int, Standing], *, exploration: float
) -> dict[tuple[int, int], float]:
    """Probability of each unordered pair (i < j) under the active policy (see the top)."""
    base = pair_probabilities(weights)
    rated = [standings[i] for i in weights if i in standings]
    if not base or not rated:
        return base
    # Not rated yet: placed at the mean, with an error as wide as two logits (~350 points) or
    # twice the widest, so it is drawn often until the next recompute rates it.
    unknown = Standing(
        sum(s.rating for s in rated) / len(rated),
        max(2 * max(s.se for s in rated), 2 * ELO_PER_LOGIT),
    )
    worth = {}
    for i, j in base:
        a, b = standings.get(i, unknown), standings.get(j, unknown)
        p = 1 / (1 + math.exp(-(a.rating - b.rating) / ELO_PER_LOGIT))
        spread = math.sqrt(a.se**2 + b.se**2)
        misorder = 0.5 * math.erfc(abs(a.rating - b.rating) / spread / math.sqrt(2))
        worth[(i, j)] = weights[i] * weights[j] * p * (1 - p) * spread * misorder
    total = sum(worth.values())
    if not total > 0:
        return base
    return {
        pair: (1 - exploration) * worth[pair] / total + exploration * base[pair] for pair in base
    }


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
) -> Draw | None:
    """Two distinct models with randomised sides, or None when fewer than two can be drawn.

    With `standings` (the active policy) the pair follows `active_pair_probabilities`.
    """
    rng = rng or random.SystemRandom()
    weights = effective_weights(candidates, boost=boost, boost_below=boost_below)
    if standings:
        pairs = active_pair_probabilities(weights, standings, exploration=exploration)
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
