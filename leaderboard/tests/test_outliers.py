"""The sequential outlier test: voters flagged, left out, cleared by staff."""

import math
import random

import pytest
from django.utils import timezone

from leaderboard import outliers, recompute, tally
from leaderboard.models import FlaggedVoter

pytestmark = pytest.mark.usefixtures("filters_on")


def test_a_voter_who_always_votes_against_the_consensus_is_flagged_and_left_out(
    consensus, make_vote
):
    alpha, bravo, charlie = consensus
    for i in range(10):
        pair = [(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2]
        make_vote(*pair, visitor_hash="contrarian")

    snapshot = recompute.ratings_recompute(style=False)

    flagged = FlaggedVoter.objects.get()
    assert flagged.visitor_hash == "contrarian"
    assert flagged.e_value > 1 / 0.05
    # Alpha beat Bravo in 20 of 25 decisive votes (a contrary vote multiplies the e-value by
    # 1 / (2 * 5/25) = 2.5), Bravo beat Charlie in 10 of 15 (1 / (2 * 5/15) = 1.5); the votes
    # alternate, so 2.5 * 1.5 * 2.5 * 1.5 = 14.1 and the fifth vote crosses 20 (35.2).
    assert flagged.votes_tested == 5
    assert flagged.e_value == pytest.approx(2.5**3 * 1.5**2)
    assert flagged.votes_total == 10
    assert snapshot.excluded["voter_flagged"] == 10
    assert snapshot.vote_count == 40
    alpha_row = {r.model_id: r for r in snapshot.rows.all()}[alpha.pk]
    assert alpha_row.losses == 0


def test_honest_voters_and_voters_with_few_votes_are_not_flagged(consensus, make_vote):
    alpha, bravo, _ = consensus
    for _ in range(4):  # below ARENA_OUTLIER_MIN_VOTES: never tested
        make_vote(alpha, bravo, "b", visitor_hash="newcomer")
    report = outliers.voters_flag(cutoff=_now())
    assert report.voters_tested == 5
    assert not FlaggedVoter.objects.exists()


def test_a_voter_flagged_again_keeps_one_row_brought_up_to_date(consensus, make_vote):
    alpha, bravo, charlie = consensus
    contrary = [(alpha, bravo, "b"), (bravo, charlie, "b")]
    for i in range(10):
        make_vote(*contrary[i % 2], visitor_hash="contrarian")
    outliers.voters_flag(cutoff=_now())
    first = FlaggedVoter.objects.get()
    for i in range(4):
        make_vote(*contrary[i % 2], visitor_hash="contrarian")
    outliers.voters_flag(cutoff=_now())
    again = FlaggedVoter.objects.get()
    assert again.pk == first.pk and again.flagged_at == first.flagged_at
    assert (first.votes_total, again.votes_total) == (10, 14)
    assert again.updated_at > first.updated_at


def test_a_cleared_voter_stays_cleared_and_a_stale_flag_is_removed(consensus, make_vote):
    alpha, bravo, charlie = consensus
    for i in range(10):
        make_vote(*[(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2], visitor_hash="contrarian")
    FlaggedVoter.objects.create(visitor_hash="honest-0", e_value=30, votes_tested=3, votes_total=8)
    outliers.voters_flag(cutoff=_now())
    assert list(FlaggedVoter.objects.values_list("visitor_hash", flat=True)) == ["contrarian"]

    FlaggedVoter.objects.filter(visitor_hash="contrarian").update(cleared=True)
    snapshot = recompute.ratings_recompute(style=False)
    assert FlaggedVoter.objects.get().cleared
    assert snapshot.excluded["voter_flagged"] == 0
    assert snapshot.vote_count == 50


def test_outlier_detection_off_flags_nobody(settings, consensus, make_vote):
    settings.ARENA_OUTLIER_DETECTION = False
    alpha, bravo, _ = consensus
    for _ in range(10):
        make_vote(alpha, bravo, "b", visitor_hash="contrarian")
    snapshot = recompute.ratings_recompute(style=False)
    assert not FlaggedVoter.objects.exists()
    assert "voter_flagged" not in snapshot.excluded


def test_a_vote_against_a_unanimous_pair_is_not_an_infinite_e_value():
    upper, lower = outliers.tail_probabilities(0.0, 10, 0)
    assert upper == pytest.approx(1 / 11) and lower == 1.0


def test_ties_are_no_evidence_and_decisive_votes_make_a_supermartingale():
    assert outliers.tail_probabilities(0.5, 10, 3) is None
    for lo_wins, hi_wins in [(60, 10), (10, 60), (45, 45), (99, 1)]:
        q = lo_wins / (lo_wins + hi_wins)
        for side in (0, 1):
            expectation = sum(
                p / (2 * outliers.tail_probabilities(vote, lo_wins, hi_wins)[side])
                for vote, p in ((1.0, q), (0.0, 1 - q))
            )
            assert expectation <= 1 + 1e-9, (lo_wins, hi_wins, side, expectation)


def _now():
    return timezone.now()


def _walk_one_vote_at_a_time(votes, consensus, threshold, max_votes):
    """The sequential rule written out plainly, vote by vote: the reference for the arrays."""
    flags, tested_voters, current = {}, set(), None
    state = {}
    for visitor, model_a, model_b, choice in votes:
        if visitor != current:
            current, state = visitor, {"tested": 0, "up": 0.0, "down": 0.0, "done": False}
        if state["done"] or state["tested"] >= max_votes:
            continue
        lo, hi = sorted((model_a, model_b))
        vote = float((model_a if choice == "a" else model_b) == lo)
        tails = outliers.tail_probabilities(vote, *consensus.get((lo, hi), (0, 0)))
        if tails is None:
            continue
        tested_voters.add(visitor)
        state["tested"] += 1
        state["up"] -= math.log(2 * tails[0])
        state["down"] -= math.log(2 * tails[1])
        peak = max(state["up"], state["down"])
        if peak > threshold:
            state["done"] = True
            flags[visitor] = (math.exp(peak), state["tested"])
    return len(tested_voters), flags


def test_the_vectorised_outlier_walk_matches_the_rule_vote_by_vote():
    rng = random.Random(5)
    consensus = {
        (lo, hi): (rng.randint(0, 40), rng.randint(0, 40))
        for lo in range(6)
        for hi in range(lo + 1, 6)
    }
    consensus[(0, 5)] = (0, 0)  # a pair nobody decided: skipped
    votes = []
    for voter in range(300):
        contrarian = voter % 7 == 0
        count = rng.randint(5, 150)
        for _ in range(count):
            a, b = rng.sample(range(6), 2)
            lo, hi = sorted((a, b))
            lo_wins, hi_wins = consensus[(lo, hi)]
            lo_better = lo_wins >= hi_wins
            picks_lo = (not lo_better) if contrarian else (rng.random() < 0.6) == lo_better
            votes.append((f"v{voter:03d}", a, b, "a" if (a == lo) == picks_lo else "b"))
    tested, flags = outliers.outlier_walk(
        tally.VoterVotes.from_rows(votes),
        tally.Consensus.from_dict(consensus),
        threshold=math.log(20),
        max_votes=100,
    )
    expected_tested, expected = _walk_one_vote_at_a_time(votes, consensus, math.log(20), 100)
    assert tested == expected_tested
    assert set(flags) == set(expected) and len(expected) >= 30
    for visitor, (e_value, votes_tested) in expected.items():
        assert flags[visitor][0] == pytest.approx(e_value, rel=1e-9)
        assert flags[visitor][1] == votes_tested
