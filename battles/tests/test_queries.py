"""Pages that list things read a fixed number of queries, however much there is to list.

Each test renders a page small and large and asserts the same count, under a ceiling that
names what the page reads.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from battles import services
from battles.models import Conversation
from battles.tests.factories import add_turn, make_battle

HX = {"HX-Request": "true"}


def queries(request, *, status: int = 200) -> int:
    """The queries one request runs (answered with `status`)."""
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert response.status_code == status, response.content[:300]
    return len(captured)


@pytest.fixture
def battles_of(visitor, two_models):
    """`battles_of(n, turns=…, conversation=…)`: n finished battles of the visitor."""
    alpha, bravo = two_models

    def make(n: int, *, turns: int = 1, conversation: Conversation | None = None):
        made = []
        for i in range(n):
            battle = make_battle(
                owner_key=visitor.key,
                model_a=alpha,
                model_b=bravo,
                prompt=f"Question {i}",
                finished=True,
                conversation=conversation,
            )
            for t in range(1, turns):
                add_turn(battle, prompt=f"Follow-up {t}")
            made.append(battle)
        return made

    return make


def test_the_sidebar_reads_one_query_for_any_number_of_sessions(visitor, battles_of):
    battles_of(2)
    few = queries(lambda: visitor.get("/sessions/", headers=HX))
    battles_of(40)
    many = queries(lambda: visitor.get("/sessions/", headers=HX))
    later = queries(lambda: visitor.get("/sessions/?offset=30", headers=HX))
    assert few == many == later == 1  # the page of sessions


def test_the_session_page_reads_the_same_queries_for_one_battle_or_many_with_turns(
    visitor, battles_of
):
    [first] = battles_of(1)
    url = f"/c/{first.conversation.uuid}/"
    one = queries(lambda: visitor.get(url))
    for battle in battles_of(4, turns=3, conversation=first.conversation):
        services.vote_cast(battle=battle, choice="a")  # voted battles show names and the vote
    five = queries(lambda: visitor.get(url))
    html = visitor.get(url).content.decode()
    assert html.count('class="turn"') == 1 + 4 * 3
    assert html.count('class="reveal-name"') == 4 * 2
    # The session, its battles (with models and vote), their turns, their replies, the sidebar.
    assert one == five <= 5


def test_the_battle_fragment_reads_the_same_queries_for_one_turn_or_many(visitor, battles_of):
    [battle] = battles_of(1)
    counts = {}
    for turns in (1, 6):
        while battle.turn_count < turns:
            add_turn(battle, prompt=f"Follow-up {battle.turn_count}")
        counts[turns] = (
            queries(lambda: visitor.get(f"/b/{battle.uuid}/actions/", headers=HX)),
            # An action answers the whole battle (here a refused one, which changes nothing).
            queries(lambda: visitor.post(f"/b/{battle.uuid}/retry/a/", headers=HX), status=409),
        )
    assert counts[1] == counts[6]
    # The battle (with its session, models and vote), its turns, their replies.
    assert counts[1][0] <= 3


def test_the_home_page_reads_the_same_queries_for_a_new_visitor_or_a_busy_one(visitor, battles_of):
    new = queries(lambda: visitor.get("/"))
    battles_of(40, turns=2)
    busy = queries(lambda: visitor.get("/"))
    # The models on offer and the sidebar's sessions.
    assert new == busy <= 2
