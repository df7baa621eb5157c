"""A visitor's own leaderboard: their blind votes, fitted with the rating engine and shrunk
toward the public ratings.

The prior is a set of pseudo-votes centred on the current public snapshot: every pair of
models the snapshot rates gets `ARENA_PERSONAL_PRIOR_VOTES / (n - 1)` pseudo-votes, split as
the public ratings predict (P(i beats j) = 1 / (1 + 10^((r_j - r_i) / 400))), so each rated
model carries about `ARENA_PERSONAL_PRIOR_VOTES` of them. Fitted alone they give back the
public ratings; a handful of one's own votes moves them a little and hundreds move them a lot.
The intervals are the engine's sandwich intervals over own votes and pseudo-votes together.

Computed on request, never stored: the fit runs on a few hundred counts. Only blind votes
count (a side-by-side vote's models were chosen by name); votes the arena leaves out of the
public ratings whatever the voter (an identity leak, flagged invalid by staff) are left out
here too, and counted as such.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Count, Q

from battles.models import Mode, Vote
from leaderboard.categories import OVERALL
from leaderboard.engine import PairCounts, RatingOptions, fit
from leaderboard.models import Snapshot
from leaderboard.selectors import snapshot_current
from llm_providers.models import LLMModel

SCALE = 400.0
BASE = 10.0
# Disagreements shown: the pairs where the visitor's verdict is furthest from the crowd's.
DISAGREEMENTS_SHOWN = 5


@dataclass(frozen=True)
class PersonalRow:
    model: LLMModel
    rating: float
    lower: float
    upper: float
    rank: int
    # The model's rating on the public board, when it has one.
    public: float | None
    # The visitor's own votes that involve this model.
    votes: int

    @property
    def shift(self) -> float | None:
        return None if self.public is None else self.rating - self.public


@dataclass(frozen=True)
class Disagreement:
    preferred: LLMModel
    other: LLMModel
    # The visitor's decisive votes on the pair, and how many went to `preferred`.
    votes: int
    wins: float
    # The chance the public ratings give `preferred` against `other`.
    crowd: float


@dataclass(frozen=True)
class PersonalBoard:
    rows: list[PersonalRow]
    votes_used: int
    votes_left_out: int
    prior_votes: int
    snapshot: Snapshot | None
    disagreements: list[Disagreement]


def _public_ratings() -> tuple[Snapshot | None, dict[int, float]]:
    snapshot = snapshot_current(category=OVERALL, matrices=False)
    if snapshot is None:
        return None, {}
    rows = snapshot.rows.filter(votes__gte=settings.ARENA_MIN_VOTES_TO_SHOW)
    return snapshot, dict(rows.values_list("model_id", "rating"))


def _own_counts(owner_key: str) -> tuple[dict[tuple[int, int], list[float]], int, int]:
    """The owner's blind votes per (model_a, model_b): [A wins, B wins, ties, both bad]; how
    many were used and how many left out."""
    votes = Vote.objects.filter(battle__owner_key=owner_key, battle__mode=Mode.BLIND)
    used = ~Q(identity_leak=True) & ~Q(flagged_invalid=True)
    rows = (
        votes.filter(used)
        .order_by()
        .values("model_a_id", "model_b_id", "choice")
        .annotate(n=Count("pk"))
        .values_list("model_a_id", "model_b_id", "choice", "n")
    )
    column = {"a": 0, "b": 1, "tie": 2, "bothbad": 3}
    counts: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    total = 0
    for a, b, choice, n in rows:
        counts[(a, b)][column[choice]] += n
        total += n
    left_out = votes.exclude(used).count()
    return counts, total, left_out


def _win_probability(r_i: float, r_j: float) -> float:
    return 1.0 / (1.0 + BASE ** ((r_j - r_i) / SCALE))


def personal_board(*, owner_key: str) -> PersonalBoard:
    """The owner's leaderboard, fitted now from their votes and the public prior."""
    snapshot, public = _public_ratings()
    own, used, left_out = _own_counts(owner_key)
    model_ids = sorted(set(public) | {m for pair in own for m in pair})
    strength = settings.ARENA_PERSONAL_PRIOR_VOTES
    if not model_ids or (not used and (not public or not strength)):
        return PersonalBoard([], used, left_out, strength, snapshot, [])
    index = {pk: i for i, pk in enumerate(model_ids)}

    a, b, cells = [], [], []
    rated = sorted(public)
    per_pair = strength / (len(rated) - 1) if len(rated) > 1 else 0.0
    for x, i in enumerate(rated):
        for j in rated[x + 1 :]:
            p = _win_probability(public[i], public[j])
            a.append(index[i])
            b.append(index[j])
            cells.append((per_pair * p, per_pair * (1 - p), 0.0, 0.0))
    for (i, j), row in own.items():
        a.append(index[i])
        b.append(index[j])
        cells.append(tuple(row))
    columns = np.array(cells, dtype=float).reshape(-1, 4)
    counts = PairCounts(
        model_a=np.array(a, dtype=np.int64),
        model_b=np.array(b, dtype=np.int64),
        wins_a=columns[:, 0],
        wins_b=columns[:, 1],
        ties=columns[:, 2],
        both_bad=columns[:, 3],
    )
    # Centred where the public board is, so a model nobody moved keeps its public rating.
    centre = float(np.mean(list(public.values()))) if public else 1000.0
    result = fit(counts, len(model_ids), RatingOptions(scale=SCALE, base=BASE, init_rating=centre))

    own_votes: dict[int, int] = defaultdict(int)
    for (i, j), row in own.items():
        own_votes[i] += int(sum(row))
        own_votes[j] += int(sum(row))
    models = LLMModel.objects.in_bulk(model_ids)
    order = sorted(range(len(model_ids)), key=lambda k: (-result.ratings[k], model_ids[k]))
    rows = []
    for k in order:
        pk = model_ids[k]
        if not np.isfinite(result.lower[k]):
            continue  # neither the prior nor the visitor's votes say anything about it
        rows.append(
            PersonalRow(
                model=models[pk],
                rating=float(result.ratings[k]),
                lower=float(result.lower[k]),
                upper=float(result.upper[k]),
                rank=int(result.rank_ub[k]),
                public=public.get(pk),
                votes=own_votes[pk],
            )
        )
    return PersonalBoard(
        rows=rows,
        votes_used=used,
        votes_left_out=left_out,
        prior_votes=strength,
        snapshot=snapshot,
        disagreements=_disagreements(own, public, models),
    )


def _disagreements(
    own: dict[tuple[int, int], list[float]], public: dict[int, float], models: dict
) -> list[Disagreement]:
    """Pairs the visitor decided against the public ratings' favourite, furthest first."""
    decisive: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (i, j), row in own.items():
        lo, hi = (i, j) if i < j else (j, i)
        wins_i, wins_j = row[0], row[1]
        decisive[(lo, hi)][0] += wins_i if lo == i else wins_j
        decisive[(lo, hi)][1] += wins_j if lo == i else wins_i
    found = []
    for (i, j), (wins_i, wins_j) in decisive.items():
        if i not in public or j not in public or wins_i == wins_j:
            continue
        preferred, other = (i, j) if wins_i > wins_j else (j, i)
        crowd = _win_probability(public[preferred], public[other])
        if crowd >= 0.5:
            continue
        total = wins_i + wins_j
        mine = max(wins_i, wins_j) / total
        wins = max(wins_i, wins_j)
        disagreement = Disagreement(models[preferred], models[other], int(total), wins, crowd)
        found.append(((mine - crowd) * total, disagreement))
    found.sort(key=lambda item: -item[0])
    return [d for _, d in found[:DISAGREEMENTS_SHOWN]]
