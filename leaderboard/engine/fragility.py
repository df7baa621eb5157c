"""Rank fragility: the fewest votes whose removal swaps two models' order (no Django).

Huang et al. (2025) showed that on public arena data the top spot can flip when a couple of
votes out of tens of thousands are dropped. For a pair (upper, lower) with rating difference
delta = beta_upper - beta_lower > 0 we look for the smallest set of counted votes whose
removal makes delta negative:

1. Influence (approximate maximum-influence perturbation, Broderick et al.): removing one
   vote v moves the fit by about H^-1 grad l_v, so delta by (p_r - y_v) * (u_a - u_b) with
   u = H^-1 (e_upper - e_lower), the same for every vote of one (pair, outcome) cell. The
   votes are sorted by that influence, most negative first (the counts make it cheap: one
   number per cell, not per vote); summing them until they outweigh delta gives an estimate.
2. Check by refitting: the smallest prefix of that order whose removal really swaps the pair
   when the model is fitted again (Newton from the current fit, the engine's objective and
   ridge), searched from the estimate outwards (galloping, then bisection). The linear step
   only orders the votes and picks where to start; the number reported is always one a
   refit confirmed.

None when even removing every vote that pushes the pair towards a swap does not swap it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import special

from leaderboard.engine.likelihood import (
    RIDGE,
    Rows,
    fit_theta,
    fitting_rows,
    gram,
    successes,
    trials,
)
from leaderboard.engine.types import PairCounts

# A swap is a strict reversal, by more than rounding: an exact tie (both sides equal after a
# removal) is no swap, whichever side float noise puts ahead.
SWAP_MARGIN = 1e-6

# Outcome of each cell column for the side listed first: A wins, B wins, half a win each.
_Y = np.array([1.0, 0.0, 0.5])


@dataclass(frozen=True)
class Fragility:
    """`swap_votes[k]`: votes to remove to swap `order[k]` with `order[k + 1]` (None: none
    found; the last entry is always None); `top_votes`: to take the top spot from `order[0]`."""

    order: list[int]
    swap_votes: list[int | None]
    top_votes: int | None


def _objective(rows: Rows, cells: np.ndarray, theta: np.ndarray) -> float:
    d = theta[rows.a] - theta[rows.b]
    return float(
        np.sum(trials(cells) * np.logaddexp(0.0, d) - successes(cells) * d)
        + 0.5 * RIDGE * theta @ theta
    )


def _newton(rows: Rows, cells: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Minimise the engine's penalised likelihood (no features) from a nearby `theta`.

    Damped Newton: a removal can leave a model that never lost, whose rating then runs off
    towards the ridge's limit, where a full step would overshoot.
    """
    n = rows.n_models
    s, m = successes(cells), trials(cells)
    f = _objective(rows, cells, theta)
    for _ in range(100):
        p = special.expit(theta[rows.a] - theta[rows.b])
        resid = s - m * p
        grad = RIDGE * theta - (np.bincount(rows.a, resid, n) - np.bincount(rows.b, resid, n))
        hess = _laplacian(rows, m * p * (1 - p))
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = theta - t * step
            f_new = _objective(rows, cells, candidate)
            if f_new <= f + 1e-12 * abs(f) or t < 1e-6:
                break
            t /= 2
        theta, f = candidate, f_new
        if np.abs(t * step).max() < 1e-9:
            break
    return theta


def _laplacian(rows: Rows, w: np.ndarray) -> np.ndarray:
    """sum_r w_r (e_a - e_b)(e_a - e_b)^T plus the ridge: the plain Bradley-Terry Hessian."""
    hess = gram(rows, w)
    hess[np.diag_indices(rows.n_models)] += RIDGE
    return hess


def _influence(rows: Rows, theta: np.ndarray, upper: int, lower: int) -> np.ndarray:
    """Change of beta_upper - beta_lower from removing one vote of each cell (rows, 3)."""
    n = rows.n_models
    p = special.expit(theta[rows.a] - theta[rows.b])
    hess = _laplacian(rows, trials(rows.cells) * p * (1 - p))
    target = np.zeros(n)
    target[upper], target[lower] = 1.0, -1.0
    u = np.linalg.solve(hess, target)
    return (p[:, None] - _Y[None, :]) * (u[rows.a] - u[rows.b])[:, None]


def _removal_order(influence: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The cells whose votes push the pair towards a swap, most first, as (row, col, count)."""
    r, c = np.nonzero((influence < 0) & (cells > 0))
    by_most = np.argsort(influence[r, c], kind="stable")
    return np.column_stack([r[by_most], c[by_most], cells[r, c][by_most].astype(np.int64)])


def _without(rows: Rows, order: np.ndarray, k: int) -> np.ndarray:
    """The cells after removing the first k votes of `order` (each cell appears once in it)."""
    cells = rows.cells.copy()
    upto = np.cumsum(order[:, 2])
    last = int(np.searchsorted(upto, k)) + 1  # the cells that give up votes
    head = order[:last]
    taken = np.minimum(upto[:last], k) - np.minimum(upto[:last] - head[:, 2], k)
    cells[head[:, 0], head[:, 1]] -= taken
    return cells


def votes_to_swap(rows: Rows, theta: np.ndarray, upper: int, lower: int) -> int | None:
    """Fewest votes (along the influence order) whose removal puts `upper` below `lower`."""
    influence = _influence(rows, theta, upper, lower)
    order = _removal_order(influence, rows.cells)
    available = int(order[:, 2].sum())
    if not available:
        return None

    def swapped(k: int) -> bool:
        refit = _newton(rows, _without(rows, order, k), theta)
        return bool(refit[lower] - refit[upper] > SWAP_MARGIN)

    # Start at the linear estimate, which is usually within a vote or two of the answer, and
    # gallop away from it (steps 1, 2, 4, ...) to a bracket, then bisect: a few refits per pair
    # instead of one per vote. `swapped` is monotone along one removal order in practice (each
    # vote removed pushes the same way).
    per_vote = influence[order[:, 0], order[:, 1]]
    estimate = _linear_votes(per_vote, order[:, 2], theta[upper] - theta[lower])
    k = int(min(max(estimate, 1), available))
    if swapped(k):
        hi, step = k, 1
        lo = hi - step
        while lo > 0 and swapped(lo):
            hi, step = lo, step * 2
            lo = max(hi - step, 0)
    else:
        lo, step = k, 1
        hi = min(lo + step, available)
        while not swapped(hi):
            if hi == available:
                return None
            lo, step = hi, step * 2
            hi = min(lo + step, available)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if swapped(mid):
            hi = mid
        else:
            lo = mid
    return hi


def fragility(
    counts: PairCounts,
    n_models: int,
    ranked: list[int],
    *,
    both_bad_as_tie: bool = True,
    top_rivals: int = 3,
) -> Fragility:
    """Votes to swap each adjacent pair of `ranked` (model indices, best first), and to take
    the top spot (from any of the `top_rivals` models ranked next)."""
    rows = fitting_rows(counts, n_models, both_bad_as_tie, None)
    if len(ranked) < 2 or not len(rows.a):
        return Fragility(list(ranked), [None] * len(ranked), None)
    theta, _, _ = fit_theta(rows, successes(rows.cells), trials(rows.cells))
    swaps: list[int | None] = [
        votes_to_swap(rows, theta, upper, lower) for upper, lower in itertools.pairwise(ranked)
    ]
    swaps.append(None)
    # The top spot: the next few models by score are the ones it can lose it to first.
    top = ranked[0]
    found = [votes_to_swap(rows, theta, top, rival) for rival in ranked[2 : 1 + top_rivals]]
    found = [k for k in (swaps[0], *found) if k is not None]
    return Fragility(list(ranked), swaps, min(found) if found else None)


def _linear_votes(per_vote: np.ndarray, count: np.ndarray, delta: float) -> float:
    """The influence estimate alone: votes until their summed influence outweighs delta."""
    reach = np.cumsum(-per_vote * count)
    enough = np.flatnonzero(reach >= delta)
    if not len(enough):
        return float("inf")
    j = enough[0]
    before = reach[j - 1] if j else 0.0
    return float(count[:j].sum() + np.ceil((delta - before) / -per_vote[j]))
