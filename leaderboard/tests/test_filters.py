"""The analysis-time filters: hot prompts down-sampled, outlier voters flagged and left out."""

import dataclasses
import math
import random
import threading

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from battles.models import FlaggedVoter, Vote
from leaderboard import selectors, services


@pytest.fixture(autouse=True)
def filters_on(settings):
    settings.ARENA_PROMPT_DEDUP = True
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.999
    settings.ARENA_OUTLIER_DETECTION = True
    settings.ARENA_OUTLIER_ALPHA = 0.05
    settings.ARENA_OUTLIER_MIN_VOTES = 5
    settings.ARENA_OUTLIER_MAX_VOTES = 100


# --- hot prompts ----------------------------------------------------------------------------------


def test_the_dedup_cut_off_is_the_interpolated_quantile_of_prompt_counts():
    # Nine prompts asked once and one asked eight times, at the 90th percentile:
    # position 0.9 * 9 = 8.1, between 1 and 8, so 1 + 0.1 * 7 = 1.7.
    assert selectors._quantile_of_counts({1: 9, 8: 1}, 0.9) == pytest.approx(1.7)
    # 99 single prompts and one asked 50 times, at FastChat's top 0.1%: 1 + 0.901 * 49.
    assert selectors._quantile_of_counts({1: 99, 50: 1}, 0.999) == pytest.approx(45.149)
    assert selectors._quantile_of_counts({1: 5}, 0.999) == 1.0


def test_a_hot_prompt_keeps_only_its_first_votes(settings, three_models, make_vote):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, _ = three_models
    for i in range(9):
        make_vote(alpha, bravo, "a", prompt_hash=f"{i:064x}")
    hot = [make_vote(alpha, bravo, "b", prompt_hash="f" * 64) for _ in range(8)]

    snapshot = services.ratings_recompute(style=False)

    # Cut-off 1.7: the hot prompt keeps int(1.7) = 1 vote, its earliest; 7 are left out.
    assert snapshot.excluded["prompt_dedup"] == 7
    assert snapshot.vote_count == 10
    assert snapshot.params["filters"]["prompt_dedup_keep"] == 1
    plan = selectors.filter_plan()
    kept = Vote.objects.filter(selectors._valid(Vote, plan), prompt_hash="f" * 64)
    assert list(kept.values_list("pk", flat=True)) == [hot[0].pk]
    row = {r.model_id: r for r in snapshot.rows.all()}[alpha.pk]
    assert (row.wins, row.losses) == (9, 1)


def test_dedup_off_counts_every_vote_and_votes_without_a_hash_are_never_dropped(
    settings, three_models, make_vote
):
    alpha, bravo, _ = three_models
    for _ in range(6):
        make_vote(alpha, bravo, "a")  # older votes: no prompt hash
    assert services.ratings_recompute(style=False).excluded["prompt_dedup"] == 0
    settings.ARENA_PROMPT_DEDUP = False
    for _ in range(6):
        make_vote(alpha, bravo, "a", prompt_hash="e" * 64)
    snapshot = services.ratings_recompute(style=False)
    assert "prompt_dedup" not in snapshot.excluded
    assert snapshot.vote_count == 12


# --- outlier voters -------------------------------------------------------------------------------


@pytest.fixture
def consensus(three_models, make_vote):
    """Five honest voters, eight votes each, always for the better model (Alpha > Bravo > C)."""
    alpha, bravo, charlie = three_models
    for voter in range(5):
        for i in range(8):
            pair = [(alpha, bravo, "a"), (bravo, alpha, "b"), (bravo, charlie, "a"),
                    (alpha, charlie, "a")][i % 4]
            make_vote(*pair, visitor_hash=f"honest-{voter}")
    return three_models


def test_a_voter_who_always_votes_against_the_consensus_is_flagged_and_left_out(
    consensus, make_vote
):
    alpha, bravo, charlie = consensus
    for i in range(10):
        pair = [(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2]
        make_vote(*pair, visitor_hash="contrarian")

    snapshot = services.ratings_recompute(style=False)

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
    report = services.voters_flag(cutoff=_now())
    assert report.voters_tested == 5
    assert not FlaggedVoter.objects.exists()


def test_a_voter_flagged_again_keeps_one_row_brought_up_to_date(consensus, make_vote):
    alpha, bravo, charlie = consensus
    contrary = [(alpha, bravo, "b"), (bravo, charlie, "b")]
    for i in range(10):
        make_vote(*contrary[i % 2], visitor_hash="contrarian")
    services.voters_flag(cutoff=_now())
    first = FlaggedVoter.objects.get()
    for i in range(4):
        make_vote(*contrary[i % 2], visitor_hash="contrarian")
    services.voters_flag(cutoff=_now())
    again = FlaggedVoter.objects.get()
    assert again.pk == first.pk and again.flagged_at == first.flagged_at
    assert (first.votes_total, again.votes_total) == (10, 14)
    assert again.updated_at > first.updated_at


def test_a_cleared_voter_stays_cleared_and_a_stale_flag_is_removed(consensus, make_vote):
    alpha, bravo, charlie = consensus
    for i in range(10):
        make_vote(*[(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2], visitor_hash="contrarian")
    FlaggedVoter.objects.create(visitor_hash="honest-0", e_value=30, votes_tested=3, votes_total=8)
    services.voters_flag(cutoff=_now())
    assert list(FlaggedVoter.objects.values_list("visitor_hash", flat=True)) == ["contrarian"]

    FlaggedVoter.objects.filter(visitor_hash="contrarian").update(cleared=True)
    snapshot = services.ratings_recompute(style=False)
    assert FlaggedVoter.objects.get().cleared
    assert snapshot.excluded["voter_flagged"] == 0
    assert snapshot.vote_count == 50


def test_outlier_detection_off_flags_nobody(settings, consensus, make_vote):
    settings.ARENA_OUTLIER_DETECTION = False
    alpha, bravo, _ = consensus
    for _ in range(10):
        make_vote(alpha, bravo, "b", visitor_hash="contrarian")
    snapshot = services.ratings_recompute(style=False)
    assert not FlaggedVoter.objects.exists()
    assert "voter_flagged" not in snapshot.excluded


def test_a_vote_against_a_unanimous_pair_is_not_an_infinite_e_value():
    upper, lower = services._tail_probabilities(0.0, 10, 0)
    assert upper == pytest.approx(1 / 11) and lower == 1.0


def test_ties_are_no_evidence_and_decisive_votes_make_a_supermartingale():
    assert services._tail_probabilities(0.5, 10, 3) is None
    for lo_wins, hi_wins in [(60, 10), (10, 60), (45, 45), (99, 1)]:
        q = lo_wins / (lo_wins + hi_wins)
        for side in (0, 1):
            expectation = sum(
                p / (2 * services._tail_probabilities(vote, lo_wins, hi_wins)[side])
                for vote, p in ((1.0, q), (0.0, 1 - q))
            )
            assert expectation <= 1 + 1e-9, (lo_wins, hi_wins, side, expectation)


def _now():
    from django.utils import timezone

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
        tails = services._tail_probabilities(vote, *consensus.get((lo, hi), (0, 0)))
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
    consensus = {(lo, hi): (rng.randint(0, 40), rng.randint(0, 40))
                 for lo in range(6) for hi in range(lo + 1, 6)}
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
    tested, flags = services._outlier_walk(
        selectors.VoterVotes.from_rows(votes), selectors.Consensus.from_dict(consensus),
        threshold=math.log(20), max_votes=100,
    )
    expected_tested, expected = _walk_one_vote_at_a_time(votes, consensus, math.log(20), 100)
    assert tested == expected_tested
    assert set(flags) == set(expected) and len(expected) >= 30
    for visitor, (e_value, votes_tested) in expected.items():
        assert flags[visitor][0] == pytest.approx(e_value, rel=1e-9)
        assert flags[visitor][1] == votes_tested


# --- the reads at once (PostgreSQL) ---------------------------------------------------------------

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent reads are PostgreSQL only: runs in the service-mode pass",
)


def _tallied(tallies: selectors.VoteTallies) -> dict:
    """Everything a recompute takes from the tallies, comparable with ==."""
    def table(t):
        return sorted(zip(t.keys, t.values.tolist(), strict=True))

    return {
        "plan": tallies.plan,
        "fixed": table(tallies.fixed),
        "by_language": table(tallies.by_language),
        "voters": [np.asarray(column).tolist()
                   for column in dataclasses.astuple(tallies.votes_by_voter(min_votes=5))],
        "dropped": tallies.dropped_ids,
    }


@on_postgresql
def test_the_reads_at_once_see_what_the_reads_in_turn_see(
    transactional_db, settings, consensus, make_vote
):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, charlie = consensus
    for i in range(10):
        pair = [(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2]
        make_vote(*pair, visitor_hash="contrarian", language="de", prompt_hash="f" * 64)
    for i in range(9):
        make_vote(alpha, charlie, "tie", prompt_hash=f"{i:064x}", language="fr")
    make_vote(alpha, charlie, "a", identity_leak=True, language="fr")
    cutoff = timezone.now()

    with selectors.recompute_reads() as concurrent:
        assert concurrent  # the outermost transaction on PostgreSQL
        at_once = selectors.VoteTallies(
            cutoff=cutoff, style=True, voter_min_votes=5, concurrent=True
        )
        in_turn = selectors.VoteTallies(cutoff=cutoff, style=True, voter_min_votes=5)

    assert at_once.plan.hot_prompts == ("f" * 64,)
    # Nine prompts asked once and one ten times: cut-off 1.9, the hot prompt keeps 1 vote.
    assert len(at_once.dropped_ids) == 9
    # Four of the contrarian's decisive votes are left: fewer than 5, so none is tested.
    assert "contrarian" not in at_once.votes_by_voter(min_votes=5).hashes
    assert _tallied(at_once) == _tallied(in_turn)


@on_postgresql
def test_every_read_of_a_recompute_sees_the_votes_as_they_were_when_it_began(
    transactional_db, consensus
):
    cutoff = timezone.now()

    def flag_elsewhere():  # staff flag a voter's votes, committed on another connection
        try:
            Vote.objects.filter(visitor_hash="honest-0").update(flagged_invalid=True)
        finally:
            connection.close()

    with selectors.recompute_reads() as concurrent:
        before = selectors.VoteTallies(cutoff=cutoff, style=False)
        worker = threading.Thread(target=flag_elsewhere)
        worker.start()
        worker.join()
        at_once = selectors.VoteTallies(cutoff=cutoff, style=False, concurrent=concurrent)
        in_turn = selectors.VoteTallies(cutoff=cutoff, style=False)
    assert Vote.objects.filter(flagged_invalid=True).count() == 8
    assert _tallied(at_once) == _tallied(before) == _tallied(in_turn)
    assert "flagged_invalid" not in {key[-1] for key in at_once.fixed.keys}


@on_postgresql
def test_a_snapshot_that_cannot_be_shared_says_which_setting_to_turn_off(transactional_db):
    # What a read behind a transaction-mode pooler meets: a snapshot id its connection
    # does not know.
    refused = pytest.raises(
        selectors.ConcurrentReadsError, match="ARENA_RECOMPUTE_CONCURRENT_READS"
    )
    with refused, transaction.atomic(), connection.cursor() as cursor:
        selectors._snapshot_import(cursor, "00000003-0000001B-1")


def test_the_reads_run_in_turn_inside_an_enclosing_transaction(db):
    with selectors.recompute_reads() as concurrent:
        assert not concurrent
