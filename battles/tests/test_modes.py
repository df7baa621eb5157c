"""Side by side (models chosen by name) and chat (one model): the rules, the pages, the flow.

The flow tests run generation for real (the test LLM server over HTTP) in both modes of the
suite; the rules are checked at the service level, as the views call them.
"""

import json
import re
import uuid

import pytest

from battles import selectors, services
from battles.errors import BattleError, ModelUnavailableError
from battles.models import Battle, Conversation, Mode, ModerationEvent, NamedVote, Reply, Vote
from battles.state import BattleState
from battles.tests.conftest import wait_turn_finished
from battles.tests.test_integrity import FLAG_WORD, moderation_server  # noqa: F401 (fixture)
from core.visitors import Visitor
from llm_providers.models import LLMModel

ALICE = Visitor(key="v:alice", anonymous_id="alice", new_cookie=False)
FAST = "ttft=0&tps=1000&tokens=12"


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    # Each test counts in its own rate-limit space; the one about the limit sets it.
    settings.RATELIMIT_CACHE_PREFIX = f"rl:test-{uuid.uuid4().hex}:"
    settings.ARENA_RATE_START = settings.ARENA_RATE_FOLLOW_UP = settings.ARENA_RATE_VOTE = None


def session_battle(response) -> Battle:
    assert response.status_code == 302, response.content[:800]
    conversation = re.search(r"/c/([0-9a-f-]+)/", response["Location"]).group(1)
    return Battle.objects.filter(conversation__uuid=conversation).latest("created_at")


def finished_named(two_models) -> Battle:
    alpha, bravo = two_models
    battle = services.named_start(visitor=ALICE, prompt="Compare", model_a=alpha, model_b=bravo)
    Reply.objects.filter(turn__battle=battle).update(status=Reply.Status.DONE, text="An answer.")
    battle.refresh_from_db()
    return battle


# --- the rules --------------------------------------------------------------------------------


def test_a_chat_offers_no_vote_and_counts_its_turns_like_a_battle():
    state = BattleState(
        voted=False, statuses={"a": Reply.Status.DONE}, turns_taken=1, max_turns=2, mode="chat"
    )
    assert state.finished and state.may_follow_up and state.may_regenerate
    assert not state.may_vote and state.names_revealed
    assert state.vote_refusal().message == "A chat has no vote."
    capped = BattleState(
        voted=False, statuses={"a": Reply.Status.DONE}, turns_taken=2, max_turns=2, mode="chat"
    )
    assert "This chat has reached its limit of 2 turns" in capped.follow_up_refusal().message
    failed = BattleState(
        voted=False, statuses={"a": Reply.Status.FAILED}, turns_taken=1, max_turns=2, mode="chat"
    )
    assert failed.retryable_sides == ["a"] and not failed.may_follow_up


def test_names_show_from_the_start_side_by_side_and_only_after_the_vote_when_blind():
    running = {"a": Reply.Status.STREAMING, "b": Reply.Status.STREAMING}
    blind = BattleState(voted=False, statuses=running, turns_taken=1, max_turns=3)
    named = BattleState(voted=False, statuses=running, turns_taken=1, max_turns=3, mode="named")
    assert not blind.names_revealed and named.names_revealed


def test_a_side_by_side_vote_is_stored_as_named_and_never_as_a_rated_vote(db, two_models):
    battle = finished_named(two_models)
    vote = services.vote_cast(battle=battle, choice="b")
    assert isinstance(vote, NamedVote) and vote.choice == "b"
    assert (vote.model_a_id, vote.model_b_id) == (battle.model_a_id, battle.model_b_id)
    assert not Vote.objects.exists()
    view = selectors.battle_get_for_visitor(visitor=ALICE, uuid=battle.uuid)
    assert view.vote == vote and view.state.voted
    with pytest.raises(BattleError, match="already has your vote"):
        services.vote_cast(battle=battle, choice="a")


def test_a_side_by_side_vote_does_not_count_against_the_daily_cap(db, two_models, settings):
    settings.ARENA_DAILY_VOTE_CAP_VISITOR = 1
    services.vote_cast(battle=finished_named(two_models), choice="a")
    services.vote_cast(battle=finished_named(two_models), choice="tie")
    assert NamedVote.objects.count() == 2


def test_a_chat_refuses_a_vote(db, make_model):
    alpha = make_model("Alpha", knobs=FAST)
    battle = services.chat_start(visitor=ALICE, prompt="Hi", model=alpha)
    Reply.objects.filter(turn__battle=battle).update(status=Reply.Status.DONE, text="Hello.")
    with pytest.raises(BattleError, match=re.escape("A chat has no vote.")):
        services.vote_cast(battle=battle, choice="a")
    assert not Vote.objects.exists() and not NamedVote.objects.exists()


def test_the_same_model_twice_or_a_model_taken_out_is_refused_before_anything_is_written(
    db, two_models
):
    alpha, bravo = two_models
    with pytest.raises(BattleError, match="Choose two different models") as same:
        services.named_start(visitor=ALICE, prompt="Hi", model_a=alpha, model_b=alpha)
    assert same.value.status == 400
    LLMModel.objects.filter(pk=bravo.pk).update(status=LLMModel.Status.INACTIVE)
    with pytest.raises(ModelUnavailableError, match="Bravo is no longer available"):
        services.named_start(visitor=ALICE, prompt="Hi", model_a=alpha, model_b=bravo)
    with pytest.raises(ModelUnavailableError):
        services.chat_start(visitor=ALICE, prompt="Hi", model=bravo)
    assert not Battle.objects.exists() and not Conversation.objects.exists()


def test_a_side_by_side_session_takes_no_new_blind_pair(db, two_models):
    battle = finished_named(two_models)
    with pytest.raises(BattleError, match="blind session only"):
        services.battle_start(visitor=ALICE, prompt="Next", conversation=battle.conversation)
    assert Battle.objects.count() == 1


# --- the pages ----------------------------------------------------------------------------------


def test_the_compare_page_offers_the_active_models_and_fills_in_a_pair_from_the_link(
    visitor, make_model
):
    make_model("Alpha", knobs=FAST)
    make_model("Bravo", knobs=FAST)
    make_model("Retired One", status=LLMModel.Status.RETIRED)
    page = visitor.get("/compare/?model_a=Bravo&model_b=Alpha")
    assert page.status_code == 200
    text = page.content.decode()
    assert '<option value="Alpha">' in text and '<option value="Bravo">' in text
    assert "Retired One" not in text
    assert re.search(r'name="model_a"[^>]*value="Bravo"', text)
    assert re.search(r'name="model_b"[^>]*value="Alpha"', text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model_a": "Alpha", "model_b": "Alpha", "prompt": "Hi"}, "Choose two different"),
        ({"model_a": "Alpha", "model_b": "Nobody", "prompt": "Hi"}, "No active model has that"),
        ({"model_a": "Alpha", "model_b": "Bravo", "prompt": "  "}, "cannot be empty"),
    ],
)
def test_a_bad_choice_gets_the_page_again_with_its_error_and_writes_nothing(
    visitor, two_models, data, message
):
    response = visitor.post("/compare/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert re.search(r'name="model_a"[^>]*value="Alpha"', response.content.decode())
    assert not Battle.objects.exists()


def test_starting_a_comparison_counts_against_the_start_rate_limit(visitor, two_models, settings):
    settings.ARENA_RATE_START = "1/m"
    data = {"model_a": "Alpha", "model_b": "Bravo", "prompt": "Hi"}
    assert visitor.post("/compare/", data).status_code == 302
    limited = visitor.post("/compare/", data)
    assert limited.status_code == 429 and "Retry-After" in limited
    assert visitor.post("/chat/", {"model": "Alpha", "prompt": "Hi"}).status_code == 429
    assert Battle.objects.count() == 1


@pytest.mark.usefixtures("moderation_server")
def test_a_flagged_prompt_is_refused_on_both_pages_and_nothing_is_written(visitor, two_models):
    flagged = f"Please {FLAG_WORD} now"
    chat = visitor.post("/chat/", {"model": "Alpha", "prompt": flagged})
    compare = visitor.post("/compare/", {"model_a": "Alpha", "model_b": "Bravo", "prompt": flagged})
    for response in (chat, compare):
        assert response.status_code == 422
        assert "our content check flagged it" in response.content.decode()
    assert not Battle.objects.exists() and not Conversation.objects.exists()
    assert ModerationEvent.objects.count() == 2


def test_the_sidebar_marks_side_by_side_and_chat_sessions(visitor, two_models):
    session_battle(
        visitor.post("/compare/", {"model_a": "Alpha", "model_b": "Bravo", "prompt": "Pair"})
    )
    session_battle(visitor.post("/chat/", {"model": "Bravo", "prompt": "Solo"}))
    page = visitor.get("/sessions/").content.decode()
    assert re.search(r'class="mode-mark"[^>]*>named</span> Pair', page)
    assert re.search(r'class="mode-mark"[^>]*>chat</span> Solo', page)


def test_someone_elses_side_by_side_session_is_not_found(visitor, other_visitor, two_models):
    battle = session_battle(
        visitor.post("/compare/", {"model_a": "Alpha", "model_b": "Bravo", "prompt": "Mine"})
    )
    assert other_visitor.get(f"/c/{battle.conversation.uuid}/").status_code == 404
    vote = other_visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"})
    assert vote.status_code == 404


# --- the flow, generation included ----------------------------------------------------------------


def test_side_by_side_models_each_see_only_their_own_history(live, visitor, make_model):
    # A system prompt on one side makes the two answers differ.
    make_model("Echo1", knobs="ttft=0&tps=1000&echo=1", system_prompt="You are Echo one.")
    make_model("Echo2", knobs="ttft=0&tps=1000&echo=1")
    make_model("Bystander", knobs=FAST)
    battle = session_battle(
        visitor.post("/compare/", {"model_a": "Echo2", "model_b": "Echo1", "prompt": "first"})
    )
    assert (battle.mode, battle.model_a.name, battle.model_b.name) == ("named", "Echo2", "Echo1")
    first = {r.side: r.text for r in wait_turn_finished(battle)}
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    assert "Echo1" in page and "Echo2" in page
    assert visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": "second"}).status_code == 302
    for reply in (r for r in wait_turn_finished(battle) if r.turn.index == 1):
        contents = [m["content"] for m in json.loads(reply.text)]
        assert contents[-3:] == ["first", first[reply.side], "second"]
        assert first["b" if reply.side == "a" else "a"] not in contents
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}).status_code == 302
    assert NamedVote.objects.get(battle=battle).choice == "a"
    assert not Vote.objects.exists()


def test_a_chat_streams_one_side_follows_up_and_retries_a_failure(live, visitor, make_model):
    make_model("Echo1", knobs="ttft=0&tps=1000&echo=1")
    make_model("Other", knobs=FAST)
    battle = session_battle(visitor.post("/chat/", {"model": "Echo1", "prompt": "hello"}))
    assert (battle.mode, battle.model_b_id) == (Mode.CHAT, None)
    (first,) = wait_turn_finished(battle)
    assert first.side == "a" and first.status == Reply.Status.DONE
    prompt = "[[llmtest fault=401 fail_times=1]] again"
    assert visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": prompt}).status_code == 302
    failed = [r for r in wait_turn_finished(battle) if r.turn.index == 1]
    assert [r.status for r in failed] == [Reply.Status.FAILED]
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    assert "The answer failed." in page and 'data-retry="a"' in page and "vote-form" not in page
    assert visitor.post(f"/b/{battle.uuid}/retry/a/").status_code == 302
    (retried,) = [r for r in wait_turn_finished(battle) if r.turn.index == 1]
    assert retried.status == Reply.Status.DONE and retried.attempt == 2
    contents = [m["content"] for m in json.loads(retried.text)]
    assert contents == ["hello", first.text, prompt]
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}).status_code == 409
