"""The personal leaderboard: one's own blind votes, shrunk toward the public ratings; its
share link; and the side-by-side votes the public ratings never count."""

import json

import pytest

from battles import services
from battles.models import Battle, Conversation, NamedVote, Reply
from battles.tests.factories import make_battle
from core.visitors import Visitor
from leaderboard import dumps, sharing
from leaderboard.personal import personal_board
from leaderboard.recompute import ratings_recompute

ALICE = Visitor(key="v:alice", anonymous_id="alice", new_cookie=False)


def own_votes(owner_key: str, model_a, model_b, choice: str, count: int) -> None:
    for _ in range(count):
        battle = make_battle(
            owner_key=owner_key, model_a=model_a, model_b=model_b, prompt="Q", finished=True
        )
        services.vote_cast(battle=battle, choice=choice)


def named_vote(owner_key: str, model_a, model_b, choice: str) -> NamedVote:
    visitor = Visitor(key=owner_key, anonymous_id=owner_key[2:], new_cookie=False)
    battle = services.named_start(visitor=visitor, prompt="Q", model_a=model_a, model_b=model_b)
    Reply.objects.filter(turn__battle=battle).update(status=Reply.Status.DONE, text="An answer.")
    return services.vote_cast(battle=battle, choice=choice)


def ratings(board) -> dict[str, float]:
    return {row.model.name: row.rating for row in board.rows}


@pytest.fixture
def public(rated, settings):
    """The public board of `rated` (Alpha > Bravo > Charlie), every model shown."""
    settings.ARENA_MIN_VOTES_TO_SHOW = 1
    ratings_recompute()
    return rated


def test_without_votes_of_ones_own_the_board_is_the_public_one(public):
    board = personal_board(owner_key=ALICE.key)
    assert board.votes_used == 0 and board.prior_votes == 20
    for row in board.rows:
        assert row.public is not None
        assert abs(row.rating - row.public) < 1.0, row
        assert row.lower < row.rating < row.upper


def test_a_handful_of_votes_moves_it_a_little_and_hundreds_move_it_a_lot(public, settings):
    alpha, _, charlie = public
    public_gap = ratings(personal_board(owner_key=ALICE.key))
    own_votes(ALICE.key, charlie, alpha, "a", 3)
    few = ratings(personal_board(owner_key=ALICE.key))
    own_votes(ALICE.key, charlie, alpha, "a", 150)
    many = personal_board(owner_key=ALICE.key)
    assert many.votes_used == 153
    gap = {
        name: board["Alpha"] - board["Charlie"]
        for name, board in (("public", public_gap), ("few", few), ("many", ratings(many)))
    }
    # Alpha leads publicly; three votes for Charlie narrow the gap a little; 153 reverse it.
    assert gap["public"] > 0
    assert 0 < gap["public"] - gap["few"] < gap["public"] * 0.6
    assert gap["many"] < 0
    assert many.rows[0].model.name == "Charlie"


def test_with_no_prior_a_few_votes_alone_decide(public, settings):
    alpha, _, charlie = public
    settings.ARENA_PERSONAL_PRIOR_VOTES = 0
    own_votes(ALICE.key, charlie, alpha, "a", 3)
    alone = personal_board(owner_key=ALICE.key)
    assert alone.prior_votes == 0
    assert ratings(alone)["Charlie"] > ratings(alone)["Alpha"] + 200


def test_it_names_where_the_visitor_parts_with_the_crowd(public):
    alpha, bravo, charlie = public
    own_votes(ALICE.key, charlie, alpha, "a", 4)
    own_votes(ALICE.key, alpha, charlie, "b", 1)
    own_votes(ALICE.key, alpha, bravo, "a", 3)  # agrees with the crowd
    board = personal_board(owner_key=ALICE.key)
    (disagreement,) = board.disagreements
    assert (disagreement.preferred, disagreement.other) == (charlie, alpha)
    assert (disagreement.wins, disagreement.votes) == (5, 5)
    assert disagreement.crowd < 0.5


def test_only_the_owners_blind_counted_votes_are_used(public):
    alpha, bravo, _ = public
    own_votes(ALICE.key, alpha, bravo, "b", 2)
    named_vote(ALICE.key, alpha, bravo, "b")
    own_votes("v:bob", alpha, bravo, "b", 5)
    leak = make_battle(owner_key=ALICE.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True)
    Battle.objects.filter(pk=leak.pk).update(identity_leak=True)
    leak.refresh_from_db()
    services.vote_cast(battle=leak, choice="b")
    board = personal_board(owner_key=ALICE.key)
    assert (board.votes_used, board.votes_left_out) == (2, 1)
    assert {row.model.name: row.votes for row in board.rows}["Bravo"] == 2


def test_side_by_side_votes_never_reach_the_public_ratings_and_export_as_not_anonymous(
    public, settings
):
    alpha, _, charlie = public
    before = ratings_recompute()
    for _ in range(20):
        named_vote("v:carol", charlie, alpha, "a")
    after = ratings_recompute()
    assert after.vote_count == before.vote_count
    assert after.fingerprint == before.fingerprint
    assert sum(after.excluded.values()) == sum(before.excluded.values())
    lines = []
    dumps.battles_export(write=lines.append)
    assert all(json.loads(line)["anony"] is True for line in lines)
    assert len(lines) == before.vote_count
    lines.clear()
    dumps.battles_export(write=lines.append, include_named=True)
    named = [json.loads(line) for line in lines if not json.loads(line)["anony"]]
    assert len(named) == 20
    assert {(n["model_a"], n["model_b"], n["winner"]) for n in named} == {
        ("Charlie", "Alpha", "model_a")
    }
    # Our own import leaves them out, as FastChat's rating does.
    report = dumps.battles_import(lines=iter(lines))
    assert report.not_anonymous == 20


def test_the_page_is_the_visitors_own_and_the_share_link_works_until_revoked(
    public, visitor, other_visitor
):
    alpha, bravo, _ = public
    own_votes(visitor.key, bravo, alpha, "a", 3)
    mine = visitor.get("/leaderboard/me/").content.decode()
    assert 'data-votes-used="3"' in mine and "Make a share link" in mine
    theirs = other_visitor.get("/leaderboard/me/").content.decode()
    assert 'data-votes-used="0"' in theirs
    assert visitor.post("/leaderboard/me/share/").status_code == 302
    token = sharing.share_token(owner_key=visitor.key)
    shared = other_visitor.get(f"/leaderboard/shared/{token}/")
    assert shared.status_code == 200
    text = shared.content.decode()
    assert 'data-votes-used="3"' in text and "Stop sharing" not in text
    assert other_visitor.get(f"/leaderboard/shared/{token[:-2]}xx/").status_code == 404
    assert visitor.post("/leaderboard/me/unshare/").status_code == 302
    assert other_visitor.get(f"/leaderboard/shared/{token}/").status_code == 404
    assert not Conversation.objects.filter(owner_key=other_visitor.key).exists()
