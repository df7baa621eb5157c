"""The recompute's reads at once on their own connections see what the reads in turn see."""

import dataclasses
import threading

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from battles.models import Vote
from leaderboard.consistent_reads import ConcurrentReadsError, ConsistentReads, snapshot_import
from leaderboard.tally import VoteTallies

pytestmark = pytest.mark.usefixtures("filters_on")

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent reads are PostgreSQL only: runs in the service-mode pass",
)


def _tallied(tallies: VoteTallies) -> dict:
    """Everything a recompute takes from the tallies, comparable with ==."""

    def listed(value):
        return np.asarray(value).tolist() if value is not None else None

    languages = tallies.languages(min_votes=1)
    categories = ["overall", "multi_turn", "long_prompt", "code"]
    return {
        "plan": tallies.plan,
        "languages": languages,
        "categories": {
            key: {
                field.name: getattr(votes, field.name)
                if field.name == "excluded"
                else listed(getattr(votes, field.name))
                for field in dataclasses.fields(votes)
            }
            for key in [*categories, *(f"lang:{code}" for code in languages)]
            for votes in [tallies.category(key)]
        },
        "consensus": [listed(column) for column in dataclasses.astuple(tallies.consensus())],
        "voters": [
            listed(column) for column in dataclasses.astuple(tallies.votes_by_voter(min_votes=5))
        ],
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

    with ConsistentReads() as reads:
        assert reads.concurrent  # the outermost transaction on PostgreSQL
        at_once = VoteTallies(cutoff=cutoff, style=True, voter_min_votes=5, reads=reads)
        in_turn = VoteTallies(cutoff=cutoff, style=True, voter_min_votes=5)

    assert at_once.plan.hot_prompts == ("f" * 64,)
    # Nine prompts asked once and one ten times: cut-off 1.9, the hot prompt keeps 1 vote.
    assert at_once.category("overall").excluded["prompt_dedup"] == 9
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

    with ConsistentReads() as reads:
        before = VoteTallies(cutoff=cutoff, style=False)
        worker = threading.Thread(target=flag_elsewhere)
        worker.start()
        worker.join()
        at_once = VoteTallies(cutoff=cutoff, style=False, reads=reads)
        in_turn = VoteTallies(cutoff=cutoff, style=False)
    assert Vote.objects.filter(flagged_invalid=True).count() == 8
    assert _tallied(at_once) == _tallied(before) == _tallied(in_turn)
    assert at_once.category("overall").excluded["flagged_invalid"] == 0


@on_postgresql
def test_a_snapshot_that_cannot_be_shared_says_which_setting_to_turn_off(transactional_db):
    # What a read behind a transaction-mode pooler meets: a snapshot id its connection
    # does not know.
    refused = pytest.raises(ConcurrentReadsError, match="ARENA_RECOMPUTE_CONCURRENT_READS")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        snapshot_import(cursor, "00000003-0000001B-1")


def test_the_reads_run_in_turn_inside_an_enclosing_transaction(db):
    with ConsistentReads() as reads:
        assert not reads.concurrent
