"""The battle rules, at the service level: no worker, no waiting, no browser.

Each battle is built in the state a rule is about (battles/tests/factories.py) and the
services are called as the views call them. The page reads the same state (BattleState), so
each test also checks that what the page offers agrees with what the service enforces.
"""

import re

import pytest
from django.http import Http404

from battles import selectors, services
from battles.errors import AlreadyVotedError, BattleError, NotEnoughModelsError
from battles.features import prompt_fingerprint, style_features
from battles.models import Battle, Conversation, Reply, Turn, Vote
from battles.state import BattleState
from battles.tests.factories import add_turn, make_battle, set_sides
from core.visitors import Visitor

PENDING, STREAMING, DONE, STOPPED, FAILED = (
    Reply.Status.PENDING,
    Reply.Status.STREAMING,
    Reply.Status.DONE,
    Reply.Status.STOPPED,
    Reply.Status.FAILED,
)
ALICE = Visitor(key="v:alice", anonymous_id="alice", new_cookie=False)
MALLORY = Visitor(key="v:mallory", anonymous_id="mallory", new_cookie=False)


@pytest.fixture
def battle(two_models) -> Battle:
    """Alice's battle: one turn, both sides answered."""
    alpha, bravo = two_models
    return make_battle(
        owner_key=ALICE.key, model_a=alpha, model_b=bravo, prompt="Compare", finished=True
    )


def state_of(battle: Battle) -> BattleState:
    """The state the page shows for the battle (read through the owner's selector)."""
    return selectors.battle_get_for_visitor(visitor=ALICE, uuid=battle.uuid).state


def refused(message: str, error: type[BattleError] = BattleError):
    """The action raises `error` with exactly this message to show."""
    return pytest.raises(error, match=re.escape(message))


def replies_of(battle: Battle) -> dict[str, Reply]:
    last = battle.turns.order_by("-index").first()
    return {reply.side: reply for reply in last.replies.all()}


# --- the rules at a glance --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voted", "a", "b", "turns", "may"),
    [
        # Both answered, turns left: vote, follow up, regenerate.
        (False, DONE, DONE, 1, {"vote", "follow_up", "regenerate"}),
        # A stopped answer counts as finished.
        (False, STOPPED, DONE, 1, {"vote", "follow_up", "regenerate"}),
        # At the turn cap: vote or regenerate, no follow-up.
        (False, DONE, DONE, 3, {"vote", "regenerate"}),
        # Still answering: only stop.
        (False, PENDING, DONE, 1, {"stop"}),
        (False, STREAMING, STREAMING, 1, {"stop"}),
        # One side failed: retry it, or regenerate both; no vote, no follow-up.
        (False, FAILED, DONE, 1, {"retry_a", "regenerate"}),
        # One failed while the other still answers: retry it, or stop the other.
        (False, FAILED, STREAMING, 1, {"retry_a", "stop"}),
        # Voted: nothing more.
        (True, DONE, DONE, 1, set()),
    ],
)
def test_what_the_visitor_may_do_follows_from_the_replies_the_vote_and_the_turn_cap(
    voted, a, b, turns, may
):
    state = BattleState(voted=voted, statuses={"a": a, "b": b}, turns_taken=turns, max_turns=3)
    allowed = {
        "vote": state.may_vote,
        "follow_up": state.may_follow_up,
        "regenerate": state.may_regenerate,
        "stop": state.may_stop,
        "retry_a": "a" in state.retryable_sides,
        "retry_b": "b" in state.retryable_sides,
    }
    assert {action for action, yes in allowed.items() if yes} == may
    assert state.names_revealed == voted


# --- the vote ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [PENDING, STREAMING, FAILED])
def test_a_vote_waits_until_both_sides_have_answered(battle, status):
    set_sides(battle, b=status)
    assert not state_of(battle).may_vote
    with refused("Both answers must finish before you vote"):
        services.vote_cast(battle=battle, choice="a")
    assert not Vote.objects.exists()
    battle.refresh_from_db()
    assert battle.status == Battle.Status.OPEN


def test_a_stopped_side_counts_as_answered_and_the_vote_closes_the_battle(battle):
    set_sides(battle, a=STOPPED)
    assert state_of(battle).may_vote
    vote = services.vote_cast(battle=battle, choice="b")
    battle.refresh_from_db()
    assert battle.status == Battle.Status.VOTED and battle.voted_at is not None
    assert (vote.choice, vote.model_a_id, vote.model_b_id) == (
        "b",
        battle.model_a_id,
        battle.model_b_id,
    )
    assert not state_of(battle).may_vote


def test_a_battle_takes_one_vote_and_the_second_is_told_it_already_has_one(battle):
    services.vote_cast(battle=battle, choice="a")
    with refused("This battle already has your vote.", AlreadyVotedError):
        services.vote_cast(battle=battle, choice="b")
    assert list(Vote.objects.values_list("choice", flat=True)) == ["a"]


def test_an_unknown_choice_is_refused_by_the_service_too(battle):
    with refused("Choose A, B, tie or both bad") as refusal:
        services.vote_cast(battle=battle, choice="c")
    assert refusal.value.status == 400
    assert not Vote.objects.exists()


def test_a_vote_records_what_the_ratings_need_from_every_turn(battle):
    add_turn(battle, prompt="And then?")
    add_turn(battle, prompt="Finally?")
    vote = services.vote_cast(battle=battle, choice="tie")
    text_a = "\n".join(
        Reply.objects.filter(turn__battle=battle, side="a")
        .order_by("turn__index")
        .values_list("text", flat=True)
    )
    assert vote.turns == 3
    assert vote.prompt_chars == len("Compare")
    assert vote.prompt_hash == prompt_fingerprint(["Compare", "And then?", "Finally?"])
    assert vote.style["a"] == style_features(text_a)
    assert vote.visitor_hash == battle.visitor_hash


# --- follow-ups -------------------------------------------------------------------------------


def test_a_follow_up_adds_a_turn_that_both_sides_answer(battle):
    turn = services.turn_add(battle=battle, prompt="And then?")
    assert turn.index == 1
    assert sorted(turn.replies.values_list("side", "status")) == [("a", PENDING), ("b", PENDING)]
    battle.refresh_from_db()
    assert battle.turn_count == 2
    state = state_of(battle)
    assert state.running and not state.may_vote and not state.may_follow_up


@pytest.mark.parametrize("status", [PENDING, STREAMING, FAILED])
def test_a_follow_up_waits_until_both_sides_have_answered(battle, status):
    set_sides(battle, a=status)
    with refused("Wait until both answers are finished"):
        services.turn_add(battle=battle, prompt="Too soon")
    assert battle.turns.count() == 1


def test_follow_ups_stop_at_the_turn_limit_and_the_page_counts_down(settings, battle):
    settings.ARENA_MAX_TURNS = 2
    assert (state_of(battle).turns_left, state_of(battle).may_follow_up) == (1, True)
    services.turn_add(battle=battle, prompt="Two")
    set_sides(battle, a=DONE, b=DONE)
    state = state_of(battle)
    assert (state.turns_left, state.may_follow_up, state.may_vote) == (0, False, True)
    with refused("reached its limit of 2 turns"):
        services.turn_add(battle=battle, prompt="Three")
    assert battle.turns.count() == 2


def test_after_the_vote_the_battle_takes_no_follow_up_retry_or_regenerate(battle):
    services.vote_cast(battle=battle, choice="a")
    set_sides(battle, a=FAILED)
    with refused("This battle is closed. Start a new round"):
        services.turn_add(battle=battle, prompt="More?")
    with refused("This battle is closed."):
        services.reply_retry(battle=battle, side="a")
    with refused("This battle is closed."):
        services.turn_regenerate(battle=battle)
    assert battle.turns.count() == 1
    assert replies_of(battle)["a"].attempt == 1


# --- retry, regenerate, stop --------------------------------------------------------------------


def test_only_a_failed_side_is_retried_and_the_other_keeps_its_answer(battle):
    with refused("Only a failed answer can be retried."):
        services.reply_retry(battle=battle, side="a")
    Reply.objects.filter(turn__battle=battle, side="a").update(
        status=FAILED,
        text="half an ans",
        text_html="<p>half an ans</p>",
        error_code="server_error",
        error_message="It broke.",
    )
    assert state_of(battle).retryable_sides == ["a"]
    with refused("Only a failed answer can be retried."):
        services.reply_retry(battle=battle, side="b")
    services.reply_retry(battle=battle, side="a")
    replies = replies_of(battle)
    assert (replies["a"].status, replies["a"].attempt, replies["a"].text) == (PENDING, 2, "")
    assert replies["a"].error_message == "" and replies["a"].text_html == ""
    assert (replies["b"].status, replies["b"].attempt) == (DONE, 1)
    assert replies["b"].text == "A finished answer."


@pytest.mark.parametrize("status", [PENDING, STREAMING])
def test_regenerate_waits_until_nothing_is_running(battle, status):
    set_sides(battle, b=status)
    assert not state_of(battle).may_regenerate
    with refused("Wait until both answers are finished"):
        services.turn_regenerate(battle=battle)
    assert [r.attempt for r in replies_of(battle).values()] == [1, 1]


def test_regenerate_runs_both_sides_of_the_last_turn_again(battle):
    add_turn(battle, prompt="Second")
    set_sides(battle, b=FAILED)
    services.turn_regenerate(battle=battle)
    replies = replies_of(battle)
    assert [(r.status, r.attempt, r.text) for r in replies.values()] == [(PENDING, 2, "")] * 2
    first = Reply.objects.filter(turn__battle=battle, turn__index=0)
    assert {(r.status, r.attempt) for r in first} == {(DONE, 1)}


def test_the_page_offers_stop_only_while_a_side_is_running(visitor, two_models):
    alpha, bravo = two_models
    running = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=False
    )
    done = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    for battle, offered in ((running, True), (done, False)):
        html = visitor.get(f"/b/{battle.uuid}/actions/", headers={"HX-Request": "true"})
        assert ("data-stop" in html.content.decode()) is offered
        # Pressing it anyway leaves the battle as it was.
        assert (
            visitor.post(f"/b/{battle.uuid}/stop/", headers={"HX-Request": "true"}).status_code
            == 204
        )
        expected = PENDING if offered else DONE
        assert {r.status for r in replies_of(battle).values()} == {expected}


# --- starting: one path for a new session and for "continue" ------------------------------------


def test_a_new_battle_starts_a_session_titled_by_its_prompt(two_models):
    battle = services.battle_start(visitor=ALICE, prompt="  Why is the sky   blue?  ")
    assert battle.conversation.title == "Why is the sky blue?"
    assert battle.conversation.owner_key == battle.owner_key == ALICE.key
    assert {battle.model_a_id, battle.model_b_id} == {m.pk for m in two_models}
    assert battle.turn_count == 1
    assert list(battle.turns.values_list("index", "prompt")) == [(0, "  Why is the sky   blue?  ")]
    assert state_of(battle).running


def test_continue_starts_a_new_blind_pair_in_the_same_session(battle):
    services.vote_cast(battle=battle, choice="a")
    second = services.battle_start(
        visitor=ALICE, prompt="Round two", conversation=battle.conversation
    )
    assert second.pk != battle.pk and second.conversation_id == battle.conversation_id
    assert Conversation.objects.count() == 1
    assert battle.conversation.title == "Compare"
    assert list(Turn.objects.filter(battle=second).values_list("index", "prompt")) == [
        (0, "Round two")
    ]
    assert state_of(second).running and not state_of(second).names_revealed


def test_with_fewer_than_two_models_nothing_is_written(make_model):
    make_model("Lonely")
    with pytest.raises(NotEnoughModelsError) as refusal:
        services.battle_start(visitor=ALICE, prompt="hello")
    assert refusal.value.status == 503
    assert not Battle.objects.exists() and not Conversation.objects.exists()


# --- what may be seen ---------------------------------------------------------------------------


def test_the_names_are_hidden_before_the_vote_and_shown_after(visitor, two_models):
    alpha, bravo = two_models
    battle = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    owner = Visitor(key=visitor.key, anonymous_id="", new_cookie=False)
    view = selectors.battle_get_for_visitor(visitor=owner, uuid=battle.uuid)
    assert view.revealed == [] and view.vote is None
    assert [pane.model for turn in view.turns for pane in turn.panes] == [None, None]
    pages = [
        visitor.get(f"/c/{battle.conversation.uuid}/"),
        visitor.get(f"/b/{battle.uuid}/actions/", headers={"HX-Request": "true"}),
    ]
    for page in pages:
        html = page.content.decode()
        assert "Alpha" not in html and "Bravo" not in html

    voted = visitor.post(
        f"/b/{battle.uuid}/vote/", {"choice": "tie"}, headers={"HX-Request": "true"}
    )

    view = selectors.battle_get_for_visitor(visitor=owner, uuid=battle.uuid)
    assert view.revealed == [("a", alpha), ("b", bravo)] and view.vote.choice == "tie"
    assert [pane.model for turn in view.turns for pane in turn.panes] == [alpha, bravo]
    for html in (
        voted.content.decode(),
        visitor.get(f"/c/{battle.conversation.uuid}/").content.decode(),
    ):
        assert '<strong class="reveal-name">Alpha</strong>' in html
        assert '<strong class="reveal-name">Bravo</strong>' in html
        assert '<span class="pane-model">Alpha</span>' in html
        assert '<span class="pane-model">Bravo</span>' in html


# --- whose battle it is -------------------------------------------------------------------------


def test_another_visitors_battle_or_session_does_not_exist_for_them(battle):
    assert selectors.battle_find_for_visitor(visitor=ALICE, uuid=battle.uuid) == battle
    assert selectors.battle_get_for_visitor(visitor=ALICE, uuid=battle.uuid).battle == battle
    for find in (selectors.battle_find_for_visitor, selectors.battle_get_for_visitor):
        with pytest.raises(Http404):
            find(visitor=MALLORY, uuid=battle.uuid)
    with pytest.raises(Http404):
        selectors.conversation_get_for_visitor(visitor=MALLORY, uuid=battle.conversation.uuid)
    assert (
        selectors.conversation_get_for_visitor(visitor=ALICE, uuid=battle.conversation.uuid)
        == battle.conversation
    )


def test_a_hidden_session_and_its_battles_are_gone_for_their_owner_too(battle):
    services.conversation_hide(conversation=battle.conversation)
    with pytest.raises(Http404):
        selectors.conversation_get_for_visitor(visitor=ALICE, uuid=battle.conversation.uuid)
    for find in (selectors.battle_find_for_visitor, selectors.battle_get_for_visitor):
        with pytest.raises(Http404):
            find(visitor=ALICE, uuid=battle.uuid)
    assert Battle.objects.filter(pk=battle.pk).exists()
