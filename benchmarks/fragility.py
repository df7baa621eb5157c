"""Rank fragility on simulated boards: time per board and the numbers it finds.

    make bench-fragility

Spread strengths, ~30% ties, votes spread evenly over pairs; one BLAS thread (as in the
recompute). For each board: seconds for every adjacent pair plus the top spot, and the
smallest / median / largest number of votes that swaps an adjacent pair.
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

from leaderboard.engine import PairCounts, RatingOptions, fit, fragility


def board(n: int, votes: int, rng: np.random.Generator) -> PairCounts:
    strength = np.sort(rng.normal(0.0, 1.0, n))[::-1]
    a, b = rng.integers(0, n, votes), rng.integers(0, n, votes)
    a, b = a[a != b], b[a != b]
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    tie = rng.random(len(a)) < 0.3
    outcome = np.where(tie, 2, np.where(rng.random(len(a)) < p, 0, 1))
    cells = np.bincount((a * n + b) * 4 + outcome, minlength=n * n * 4).reshape(n * n, 4)
    pairs = np.flatnonzero(cells.sum(axis=1))
    return PairCounts(pairs // n, pairs % n, *cells[pairs].T)


def main() -> None:
    rng = np.random.default_rng(0)
    heading = ("models", 6), ("votes", 8), ("seconds", 8), ("top spot", 9), ("min", 5)
    print(" ".join(f"{label:>{width}}" for label, width in heading), f"{'median':>7} {'max':>6}")
    for n, votes in ((20, 5_000), (50, 20_000), (100, 50_000), (200, 200_000)):
        counts = board(n, votes, rng)
        ratings = fit(counts, n, RatingOptions(ci="none")).ratings
        ranked = [int(i) for i in np.argsort(-ratings)]
        with threadpool_limits(limits=1, user_api="blas"):
            started = time.perf_counter()
            found = fragility(counts, n, ranked)
            seconds = time.perf_counter() - started
        swaps = [k for k in found.swap_votes if k is not None]
        print(
            f"{n:>6} {votes:>8} {seconds:>8.2f} {found.top_votes!s:>9} {min(swaps):>5} "
            f"{int(np.median(swaps)):>7} {max(swaps):>6}"
        )


if __name__ == "__main__":
    main()
