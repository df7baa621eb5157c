"""Pair sampling policies on a simulated arena with a known truth, at equal vote budgets.

    make bench-sampling

20 and 50 models with strengths spread evenly over 3 logits (about 520 Elo points), ~30%
ties whatever the pair (`BENCH_SAMPLING_TIES=0` for none; the engine counts a tie as half a
win each, so ties pull every pair towards even and flatten the fitted ratings), other outcomes
drawn from the Bradley-Terry truth. Votes arrive in batches; after each batch
the real engine (`leaderboard.engine.fit`, sandwich intervals) refits, like the recompute,
and the next batch is drawn from that snapshot. Policies:

- uniform: every pair alike;
- weighted: today's default (catalog weights 1, x2 below 50 votes);
- paper: Chiang et al. (2024), pair weight sqrt(V)(1 - sqrt(n / (n + 1))), V the variance of
  the pair's difference and n its votes so far (no exploration);
- active: `battles.sampling.active_pair_probabilities` (ARENA_SAMPLING=active) with the
  default exploration share;
- oracle: `battles.sampling.neighbour_design` for the truly adjacent pairs at the true
  strengths, from the first vote, no exploration: not a policy anyone can run (it knows the
  answer), a reference for what the best fixed design could save here.

Per policy (mean over seeds), at the budget: the 95% interval width of each truly adjacent
pair's difference (from the Fisher information at the fit: what resolving neighbours needs),
averaged ("adj. CI"); the mean and max width of the models' own intervals; adjacent pairs
whose order is resolved at 95%; Spearman correlation with the truth; the smallest and largest
share of votes a model got (shares sum to 2: two models a vote), and the smallest over the
uniform share 2/n (the stated floor: 0.5); and the votes until the adjacent-pair width
reaches weighted's at the budget (checked after every batch, linearly interpolated between
batches: the width falls convexly, so the interpolation errs towards more votes).
"""

import math
import os
import random

import numpy as np
from scipy import stats

from battles.sampling import (
    ELO_PER_LOGIT,
    Candidate,
    Standing,
    active_pair_probabilities,
    effective_weights,
    neighbour_design,
    pair_probabilities,
)
from leaderboard.engine import PairCounts, RatingOptions, fit

EXPLORATION = float(os.environ.get("ARENA_SAMPLING_EXPLORATION", "0.25"))
TIES = float(os.environ.get("BENCH_SAMPLING_TIES", "0.3"))
SEEDS = 5
SHARE_FLOOR = 0.5  # of the uniform share 2/n: no model may get fewer votes than that


def uniform(weights, standings, pair_votes, truth):
    return pair_probabilities(dict.fromkeys(weights, 1.0))


def weighted(weights, standings, pair_votes, truth):
    return pair_probabilities(weights)


def paper(weights, standings, pair_votes, truth):
    if not standings:
        return pair_probabilities(weights)
    raw = {}
    for i, j in pair_probabilities(weights):
        variance = standings[i].se ** 2 + standings[j].se ** 2
        n = pair_votes.get((i, j), 0)
        raw[(i, j)] = math.sqrt(variance) * (1 - math.sqrt(n / (n + 1)))
    total = sum(raw.values())
    return {pair: value / total for pair, value in raw.items()}


def active(weights, standings, pair_votes, truth):
    return active_pair_probabilities(weights, standings, exploration=EXPLORATION)


def oracle(weights, standings, pair_votes, truth):
    ids = sorted(weights)
    theta = np.array([truth[i] for i in ids])
    order = np.argsort(theta)
    adjacent = np.zeros((len(ids), len(ids)))
    adjacent[order[1:], order[:-1]] = 1
    design = neighbour_design(theta, adjacent + adjacent.T)
    return {
        (ids[a], ids[b]): float(design[a, b])
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
    }


POLICIES = {
    "uniform": uniform,
    "weighted": weighted,
    "paper": paper,
    "active": active,
    "oracle": oracle,
}


def simulate(n: int, policy, budget: int, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    strength = rng.permutation(np.linspace(-1.5, 1.5, n))
    cells = np.zeros((n, n, 3))  # (i < j): i wins, j wins, ties
    votes = np.zeros(n, dtype=int)
    standings: dict[int, Standing] = {}
    history = []
    total = 0
    while total < budget:
        candidates = [Candidate(id=i, weight=1.0, votes=int(votes[i])) for i in range(n)]
        weights = effective_weights(candidates, boost=2.0, boost_below=50)
        pair_votes = {(i, j): int(cells[i, j].sum()) for i in range(n) for j in range(i + 1, n)}
        probs = policy(weights, standings, pair_votes, strength)
        keys = list(probs)
        p = np.array([probs[k] for k in keys])
        picked = rng.choice(len(keys), size=batch, p=p / p.sum())
        i = np.array([keys[k][0] for k in picked])
        j = np.array([keys[k][1] for k in picked])
        tie = rng.random(batch) < TIES
        i_wins = rng.random(batch) < 1 / (1 + np.exp(-(strength[i] - strength[j])))
        outcome = np.where(tie, 2, np.where(i_wins, 0, 1))
        np.add.at(cells, (i, j, outcome), 1)
        np.add.at(votes, i, 1)
        np.add.at(votes, j, 1)
        total += batch
        a, b = np.nonzero(cells.sum(axis=2))
        result = fit(
            PairCounts(a, b, cells[a, b, 0], cells[a, b, 1], cells[a, b, 2], np.zeros(len(a))),
            n,
            RatingOptions(),
        )
        se = (result.upper - result.lower) / (2 * 1.959964)
        standings = {k: Standing(float(result.ratings[k]), float(se[k])) for k in range(n)}
        order = np.argsort(-strength)
        history.append((total, float(np.mean(adjacent_widths(cells, result.ratings, order)))))
    width = result.upper - result.lower
    order = np.argsort(-strength)
    adjacent = adjacent_widths(cells, result.ratings, order)
    upper, lower = order[:-1], order[1:]
    gap = np.abs(result.ratings[upper] - result.ratings[lower])
    resolved = int(np.sum(gap > adjacent / 2))
    share = votes / total
    return {
        "adjacent_width": float(adjacent.mean()),
        "mean_width": float(width.mean()),
        "max_width": float(width.max()),
        "resolved": resolved,
        "spearman": float(stats.spearmanr(result.ratings, strength).statistic),
        "min_share": float(share.min()),
        "max_share": float(share.max()),
        "history": history,
    }


def adjacent_widths(cells: np.ndarray, ratings: np.ndarray, order: np.ndarray) -> np.ndarray:
    """95% interval width of each truly adjacent pair's difference (Elo), from the Fisher
    information at the fitted ratings: what resolving the order of neighbours needs."""
    n = len(ratings)
    theta = ratings / ELO_PER_LOGIT
    m = cells.sum(axis=2)
    p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
    w = (m + m.T) * p * (1 - p)
    info = np.diag(w.sum(axis=1)) - w
    cov = np.linalg.pinv(info)
    upper, lower = order[:-1], order[1:]
    var = cov[upper, upper] + cov[lower, lower] - 2 * cov[upper, lower]
    return 2 * 1.959964 * ELO_PER_LOGIT * np.sqrt(np.clip(var, 0, None)) + 0 * n


def votes_to(history: list[tuple[int, float]], width: float) -> float | None:
    previous = None
    for votes, mean in history:
        if mean <= width:
            if previous is None:
                return votes
            before, above = previous
            return before + (votes - before) * (above - width) / (above - mean)
        previous = (votes, mean)
    return None


def main() -> None:
    random.seed(0)
    for n, budget, batch in ((20, 6_000, 200), (50, 20_000, 500)):
        runs = {
            name: [simulate(n, policy, budget, batch, seed) for seed in range(SEEDS)]
            for name, policy in POLICIES.items()
        }
        target = [run["adjacent_width"] for run in runs["weighted"]]
        print(
            f"\n{n} models, {budget:,} votes (batches of {batch}, refit after each), "
            f"ties {TIES:.0%}, seeds 0-{SEEDS - 1}; active exploration {EXPLORATION}: every pair "
            f"keeps at least {EXPLORATION:.0%} of its weighted chance; stated floor: no model's "
            f"share below {SHARE_FLOOR} of the uniform share ({SHARE_FLOOR * 2 / n:.3f})"
        )
        print(
            f"{'policy':<9}{'adj. CI':>9}{'mean CI':>9}{'max CI':>8}{'resolved':>10}"
            f"{'spearman':>10}{'min share':>11}{'max share':>11}{'min/unif':>10}"
            f"{'votes to weighted precision':>29}"
        )
        for name, results in runs.items():
            reached = [votes_to(r["history"], w) for r, w in zip(results, target, strict=True)]
            if all(v is not None for v in reached):
                mean_votes = sum(reached) / len(reached)
                to_target = f"{mean_votes:,.0f} ({mean_votes / budget - 1:+.0%})"
            else:
                to_target = f"> {budget:,} in {sum(v is None for v in reached)} of {SEEDS}"

            def avg(key, results=results):
                return sum(r[key] for r in results) / len(results)

            print(
                f"{name:<9}{avg('adjacent_width'):>9.1f}{avg('mean_width'):>9.1f}{avg('max_width'):>8.1f}"
                f"{avg('resolved'):>7.1f}/{n - 1:<2}{avg('spearman'):>10.3f}"
                f"{avg('min_share'):>11.3f}{avg('max_share'):>11.3f}"
                f"{min(r['min_share'] for r in results) * n / 2:>10.2f}{to_target:>29}"
            )


if __name__ == "__main__":
    main()
