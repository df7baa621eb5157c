"""The sequential outlier test: voters whose votes go against the consensus beyond chance.

FastChat's `outlier_detect` (elo_analysis.py), run by every recompute between the tally and
the fit. The database sorts the votes (tally.VoterVotes); numpy walks them; the flags are
stored as FlaggedVoter rows, which the tally then leaves out (exclusions.flagged_voter_hashes).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction

from leaderboard.exclusions import filter_plan
from leaderboard.models import FlaggedVoter
from leaderboard.tally import Consensus, VoterVotes, VoteTallies
from leaderboard.timing import stage

log = logging.getLogger(__name__)


@dataclass
class FlagReport:
    voters_tested: int = 0
    flagged: int = 0
    unflagged: int = 0


@dataclass(frozen=True)
class _Flag:
    e_value: float
    votes_tested: int
    votes_total: int


def tail_probabilities(vote: float, lo_wins: int, hi_wins: int) -> tuple[float, float] | None:
    """P(consensus outcome <= vote) and P(>= vote), outcomes 1 (lo won) or 0 (hi won).

    Ties and both-bad votes are no evidence either way and are skipped (None): scored as ½
    against a decisive-only consensus, an honest voter's ties grew the products without cause
    (leaderboard/README.md gives the simulation). For decisive votes each factor 1 / (2 p) has
    expectation at most 1 under the consensus, so the products are supermartingales and the
    false-flag rate stays below alpha. `outlier_walk` applies the same rule to arrays.
    """
    decisive = lo_wins + hi_wins
    if not decisive or vote == 0.5:
        return None
    q = lo_wins / decisive
    upper = 1.0 if vote == 1 else 1 - q
    lower = 1.0 if vote == 0 else q
    # A vote the pair's consensus never saw would give p = 0 (an infinite e-value from one
    # vote); count the vote itself as one more observation instead.
    floor = 1 / (decisive + 1)
    return max(upper, floor), max(lower, floor)


def outlier_walk(
    votes: VoterVotes, consensus: Consensus, *, threshold: float, max_votes: int
) -> tuple[int, dict[str, tuple[float, int]]]:
    """(voters tested, {visitor_hash: (e-value, votes tested)}) for decisive votes in (voter,
    time) order.

    Vectorised: per vote the two log e-value factors -log(2 p), then running sums within
    each voter over their first `max_votes` tested votes; a voter is flagged at the first
    vote where either sum exceeds `threshold`.
    """
    if not len(votes):
        return 0, {}
    a, b, a_won, voter = votes.model_a, votes.model_b, votes.a_won, votes.voter

    lo, hi = np.minimum(a, b), np.maximum(a, b)
    lo_won = np.where(a_won, a, b) == lo
    pairs, wins = consensus.pairs, consensus.wins
    width = int(max(hi.max(), pairs[:, 1].max(initial=0))) + 1
    codes = pairs[:, 0] * width + pairs[:, 1]  # sorted, as the pairs are
    at = np.searchsorted(codes, lo * width + hi)
    found = at < len(codes)
    found[found] = codes[at[found]] == (lo * width + hi)[found]
    lo_wins = np.where(found, wins[np.minimum(at, len(codes) - 1), 0], 0.0)
    hi_wins = np.where(found, wins[np.minimum(at, len(codes) - 1), 1], 0.0)
    decisive = lo_wins + hi_wins

    tested = decisive > 0
    voter, lo_won = voter[tested], lo_won[tested]
    lo_wins, decisive = lo_wins[tested], decisive[tested]
    if not len(voter):
        return 0, {}
    q = lo_wins / decisive
    floor = 1 / (decisive + 1)
    upper = np.maximum(np.where(lo_won, 1.0, 1 - q), floor)
    lower = np.maximum(np.where(lo_won, q, 1.0), floor)
    positions = np.arange(len(voter))
    first = np.r_[True, voter[1:] != voter[:-1]]
    start = np.maximum.accumulate(np.where(first, positions, 0))
    rank = positions - start
    keep = rank < max_votes
    voter, rank = voter[keep], rank[keep]
    log_upper, log_lower = -np.log(2 * upper[keep]), -np.log(2 * lower[keep])
    positions = np.arange(len(voter))
    first = np.r_[True, voter[1:] != voter[:-1]]
    start = np.maximum.accumulate(np.where(first, positions, 0))

    def running(values: np.ndarray) -> np.ndarray:
        total = np.cumsum(values)
        return total - (total - values)[start]

    peak = np.maximum(running(log_upper), running(log_lower))
    crossed = np.flatnonzero(peak > threshold)
    _, firsts = np.unique(voter[crossed], return_index=True)
    flags = {
        votes.hashes[voter[i]]: (float(np.exp(min(peak[i], 690.0))), int(rank[i]) + 1)
        for i in crossed[firsts]
    }
    return int(np.count_nonzero(first)), flags


def voters_flag(
    *,
    cutoff: dt.datetime,
    tallies: VoteTallies | None = None,
) -> FlagReport:
    """Flag voters whose votes go against the consensus beyond chance (FastChat's rule).

    This is `outlier_detect` from FastChat's elo_analysis.py. For every voter with at least
    ARENA_OUTLIER_MIN_VOTES decisive counted votes, their first ARENA_OUTLIER_MAX_VOTES of them
    are walked in time order. Each vote is scored 1 / 0 from the point of view of the pair's
    lower-id model and compared with the pair's decisive votes by everyone (the consensus,
    the voter's own votes included): p_upper = P(consensus <= vote), p_lower =
    P(consensus >= vote). Two betting martingales multiply 1 / (2 p) per vote; a voter whose
    either product exceeds 1 / ARENA_OUTLIER_ALPHA is flagged and all their votes are left
    out. Ties and votes on a pair with no decisive vote are skipped.

    The database sorts the votes; numpy walks them. The result replaces the previous flags,
    except rows staff cleared. `voters_tested` counts voters with a tested vote.
    """
    alpha = settings.ARENA_OUTLIER_ALPHA
    max_votes = settings.ARENA_OUTLIER_MAX_VOTES
    if tallies is None:
        with stage("outlier: pair consensus"):
            tallies = VoteTallies(
                cutoff=cutoff,
                plan=filter_plan(cutoff=cutoff),
                style=False,
                languages=False,
            )
    with stage("outlier: read votes"):
        votes = tallies.votes_by_voter(min_votes=settings.ARENA_OUTLIER_MIN_VOTES)
    with stage("outlier: walk votes"):
        tested, crossed = outlier_walk(
            votes, tallies.consensus(), threshold=math.log(1 / alpha), max_votes=max_votes
        )
        totals = tallies.votes_counted_by(list(crossed))
        flagged = {
            voter: _Flag(e_value, votes_tested, totals.get(voter, votes_tested))
            for voter, (e_value, votes_tested) in crossed.items()
        }
    report = FlagReport(voters_tested=tested)
    params = {
        "alpha": alpha,
        "min_votes": settings.ARENA_OUTLIER_MIN_VOTES,
        "max_votes": max_votes,
        "cutoff": cutoff.isoformat(),
    }
    with stage("outlier: write flags"), transaction.atomic():
        stale = FlaggedVoter.objects.filter(cleared=False).exclude(visitor_hash__in=list(flagged))
        report.unflagged = stale.delete()[0]
        cleared = set(
            FlaggedVoter.objects.filter(visitor_hash__in=list(flagged), cleared=True).values_list(
                "visitor_hash", flat=True
            )
        )
        FlaggedVoter.objects.bulk_create(
            [
                FlaggedVoter(
                    visitor_hash=visitor_hash,
                    e_value=flag.e_value,
                    votes_tested=flag.votes_tested,
                    votes_total=flag.votes_total,
                    params=params,
                )
                for visitor_hash, flag in flagged.items()
                if visitor_hash not in cleared
            ],
            update_conflicts=True,
            unique_fields=["visitor_hash"],
            update_fields=["e_value", "votes_tested", "votes_total", "params", "updated_at"],
            batch_size=1000,
        )
    report.flagged = len(flagged)
    log.info("outlier test: %s voters tested, %s flagged", report.voters_tested, report.flagged)
    return report
