"""The battle views over the test client: what each answers, as a page and as an HTMX
fragment. Battles are built by the factories in the state a test is about, so nothing waits
for a model (the flow from prompt to reveal is in test_battle_flow.py)."""

import threading

import pytest
from django.test import Client

from battles.models import Battle, Reply, Vote
from battles.tests.conftest import start_battle
from battles.tests.factories import make_battle, set_sides

HX = {"HX-Request": "true"}


@pytest.fixture
def finished(visitor, two_models):
    """The visitor's battle with both sides answered."""
    alpha, bravo = two_models
    return make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Compare", finished=True
    )


@pytest.fixture
def answering(visitor, two_models):
    """The visitor's battle whose two replies have not ended yet."""
    alpha, bravo = two_models
    return make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Compare", finished=False
    )


# --- votes --------------------------------------------------------------------------------------


def test_a_vote_reveals_the_names_and_offers_a_new_round(visitor, finished):
    battle = finished
    response = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}, headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert battle.model_a.name in html and battle.model_b.name in html
    assert "New round" in html and "Continue with a new pair" in html
    assert "<html" not in html  # the battle's fragment, not the page
    battle.refresh_from_db()
    assert battle.status == "voted"
    vote = Vote.objects.get(battle=battle)
    assert (vote.choice, vote.model_a_id, vote.model_b_id) == (
        "a",
        battle.model_a_id,
        battle.model_b_id,
    )
    assert vote.style["a"]["length"] > 0 and vote.turns == 1


def test_it_rejects_a_second_vote_and_keeps_the_first(visitor, finished):
    battle = finished
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "tie"}).status_code == 302
    response = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "b"})
    assert response.status_code == 409
    assert "already has your vote" in response.content.decode()
    assert list(Vote.objects.values_list("choice", flat=True)) == ["tie"]


def test_it_refuses_a_vote_before_both_answers_finish(visitor, answering):
    response = visitor.post(f"/b/{answering.uuid}/vote/", {"choice": "a"})
    assert response.status_code == 409
    assert "must finish" in response.content.decode()
    assert not Vote.objects.exists()


@pytest.mark.parametrize("choice", ["", "c", "A", "tie (bothbad)", "x" * 5000])
def test_it_refuses_an_unknown_vote_value(visitor, finished, choice):
    response = visitor.post(f"/b/{finished.uuid}/vote/", {"choice": choice})
    assert response.status_code == 400
    assert "Choose A, B, tie or both bad" in response.content.decode()
    assert not Vote.objects.exists()


def test_two_concurrent_votes_on_one_battle_store_exactly_one(transactional_db, visitor, finished):
    battle = finished
    cookies = visitor.cookies
    statuses = []

    def cast(choice):
        client = Client()
        client.cookies = cookies
        statuses.append(client.post(f"/b/{battle.uuid}/vote/", {"choice": choice}).status_code)

    threads = [threading.Thread(target=cast, args=(c,)) for c in ("a", "b", "tie", "bothbad")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [302, 409, 409, 409]
    assert Vote.objects.filter(battle=battle).count() == 1


# --- follow-ups, retry ------------------------------------------------------------------------


def test_it_enforces_the_turn_limit_on_the_server(visitor, finished, settings):
    settings.ARENA_MAX_TURNS = 2
    battle = finished
    assert visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": "two"}).status_code == 302
    set_sides(battle, a=Reply.Status.DONE, b=Reply.Status.DONE)
    response = visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": "three"})
    assert response.status_code == 409
    assert "limit of 2 turns" in response.content.decode()
    assert battle.turns.count() == 2


def test_a_follow_up_waits_for_both_answers(visitor, answering):
    response = visitor.post(f"/b/{answering.uuid}/follow-up/", {"prompt": "too soon"})
    assert response.status_code == 409
    assert answering.turns.count() == 1


def test_a_follow_up_answers_the_battle_fragment_or_goes_back_to_the_page(visitor, finished):
    fragment = visitor.post(f"/b/{finished.uuid}/follow-up/", {"prompt": "two"}, headers=HX)
    html = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in html
    # The new turn streams on the page: one stream for both sides, and a Stop button.
    assert f"/b/{finished.uuid}/turns/1/events/" in html and "data-stop" in html
    set_sides(finished, a=Reply.Status.DONE, b=Reply.Status.DONE)
    page = visitor.post(f"/b/{finished.uuid}/follow-up/", {"prompt": "three"})
    assert page.status_code == 302
    assert page["Location"] == f"/c/{finished.conversation.uuid}/#b-{finished.uuid}"


def test_a_refusal_is_said_in_the_fragment_or_on_a_page_that_leads_back(visitor, answering):
    fragment = visitor.post(f"/b/{answering.uuid}/follow-up/", {"prompt": "x"}, headers=HX)
    assert fragment.status_code == 409
    assert 'role="alert">Wait until both answers are finished' in fragment.content.decode()
    assert "<html" not in fragment.content.decode()
    page = visitor.post(f"/b/{answering.uuid}/follow-up/", {"prompt": "x"})
    assert page.status_code == 409
    html = page.content.decode()
    assert "<html" in html and "Wait until both answers are finished" in html
    assert f'href="/c/{answering.conversation.uuid}/#b-{answering.uuid}"' in html


def test_only_a_failed_side_can_be_retried(visitor, finished):
    assert visitor.post(f"/b/{finished.uuid}/retry/a/").status_code == 409
    assert visitor.post(f"/b/{finished.uuid}/retry/c/").status_code == 404
    set_sides(finished, b=Reply.Status.FAILED)
    html = visitor.get(f"/c/{finished.conversation.uuid}/").content.decode()
    assert "Retry model B" in html and "Retry model A" not in html
    assert visitor.post(f"/b/{finished.uuid}/retry/b/").status_code == 302
    assert Reply.objects.get(turn__battle=finished, side="b").attempt == 2


# --- starting a battle --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "cannot be empty"),
        ("   \n\t  ", "cannot be empty"),
        ("x" * 10_001, "the limit is 10,000"),
        ("bad\x00byte", "NUL character"),
    ],
)
def test_it_refuses_a_bad_prompt_and_keeps_the_text(visitor, two_models, prompt, message):
    response = visitor.post("/battle/", {"prompt": prompt})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    if prompt.strip() and "\x00" not in prompt:
        assert prompt[:100] in html
    assert not Battle.objects.exists()


def test_a_bad_prompt_to_continue_a_session_says_why_and_leads_back(visitor, finished):
    url = f"/c/{finished.conversation.uuid}/"
    response = visitor.post(f"{url}continue/", {"prompt": "   "})
    assert response.status_code == 400
    html = response.content.decode()
    assert "cannot be empty" in html and f'href="{url}"' in html
    assert Battle.objects.count() == 1


def test_a_long_prompt_at_the_limit_is_accepted(visitor, two_models):
    battle = start_battle(visitor, "y" * 10_000)
    assert battle.turns.get().prompt == "y" * 10_000


def test_starting_and_continuing_land_on_the_session_page(visitor, finished):
    fresh = visitor.post("/battle/", {"prompt": "New one"}, headers=HX)
    new_battle = Battle.objects.exclude(pk=finished.pk).get()
    assert fresh.status_code == 200
    assert fresh["HX-Redirect"] == f"/c/{new_battle.conversation.uuid}/"
    url = f"/c/{finished.conversation.uuid}/"
    more = visitor.post(f"{url}continue/", {"prompt": "Next"})
    assert (more.status_code, more["Location"]) == (302, url)
    assert Battle.objects.filter(conversation=finished.conversation).count() == 2


def test_with_fewer_than_two_models_it_says_so_instead_of_failing(visitor, make_model, staff):
    make_model("Lonely")
    response = visitor.post("/battle/", {"prompt": "hello"})
    assert response.status_code == 503
    assert "at least two available models" in response.content.decode()
    staff_page = staff.post("/battle/", {"prompt": "hello"}).content.decode()
    assert "load_models" in staff_page
    assert not Battle.objects.exists()


# --- whose battle it is -------------------------------------------------------------------------


def test_another_visitor_cannot_see_or_vote_on_my_battle(
    transactional_db, visitor, other_visitor, finished
):
    # Committed rows (transactional_db): the event stream reads them from its own thread.
    battle = finished
    assert other_visitor.get(f"/c/{battle.conversation.uuid}/").status_code == 404
    assert other_visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}).status_code == 404
    assert other_visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": "hi"}).status_code == 404
    assert other_visitor.get(f"/b/{battle.uuid}/turns/0/events/").status_code == 404
    assert other_visitor.post(f"/c/{battle.conversation.uuid}/delete/").status_code == 404
    assert not Vote.objects.exists()
    assert other_visitor.get(f"/b/{battle.uuid}/actions/").status_code == 404
    for action in ("retry/a", "regenerate", "stop"):
        assert other_visitor.post(f"/b/{battle.uuid}/{action}/").status_code == 404
    continued = other_visitor.post(f"/c/{battle.conversation.uuid}/continue/", {"prompt": "x"})
    assert continued.status_code == 404
    assert Battle.objects.count() == 1


# --- the sessions list --------------------------------------------------------------------------


def test_the_sessions_list_is_a_page_of_its_own_without_javascript(visitor, finished):
    page = visitor.get("/sessions/")
    fragment = visitor.get("/sessions/", headers=HX)
    for response in (page, fragment):
        assert response.status_code == 200
        assert f'href="/c/{finished.conversation.uuid}/"' in response.content.decode()
    assert "<html" in page.content.decode() and "Your sessions" in page.content.decode()
    assert "<html" not in fragment.content.decode()
    for offset in ("-3", "x", ""):
        assert visitor.get(f"/sessions/?offset={offset}", headers=HX).status_code == 200
