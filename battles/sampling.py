"""Pair sampling maths (no Django): which two models meet, and with what probability.

Each model gets an effective weight: its catalog weight, multiplied by a boost while it has
few votes so new models reach a stable rating sooner. An unordered pair {i, j} is drawn with
probability proportional to w_i * w_j (never i with itself), then sides are a fair coin flip.
The probability of the exact ordered pair is recorded with the battle.
"""

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


def model_shares(weights: Mapping[int, float]) -> dict[int, float]:
    """Each model's chance of being in the next battle (the shares sum to 2: two per battle)."""
    shares = dict.fromkeys(weights, 0.0)
    for (i, j), probability in pair_probabilities(weights).items():
        shares[i] += probability
        shares[j] += probability
    return shares


def draw_pair(
    candidates: list[Candidate], *, boost: float, boost_below: int, rng: random.Random | None = None
) -> Draw | None:
    """Two distinct models with randomised sides, or None when fewer than two can be drawn."""
    rng = rng or random.SystemRandom()
    weights = effective_weights(candidates, boost=boost, boost_below=boost_below)
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
