"""The sessions sidebar: grouped by day, newest first, paginated, private to each visitor."""

from datetime import timedelta

from django.utils import timezone

from battles.models import Conversation
from battles.tests.conftest import start_battle


def make_sessions(owner_key: str, ages_in_days: list[int]) -> list[Conversation]:
    now = timezone.now()
    made = []
    for n, days in enumerate(ages_in_days):
        conversation = Conversation.objects.create(owner_key=owner_key, title=f"Session {n}")
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=now - timedelta(days=days)
        )
        made.append(conversation)
    return made


def test_the_sidebar_groups_my_sessions_by_day_newest_first(visitor, other_visitor):
    make_sessions(visitor.key, [0, 1, 3, 30])
    make_sessions(other_visitor.key, [0])
    html = visitor.get("/").content.decode()
    positions = [html.index(label) for label in ("Today", "Yesterday", "Previous 7 days", "Older")]
    assert positions == sorted(positions)
    order = [html.index(f"Session {n}") for n in range(4)]
    assert order == sorted(order)
    assert html.count(">Session 0</a>") == 1  # the other visitor's "Session 0" is not listed


def test_the_sidebar_loads_more_beyond_thirty(visitor, django_assert_max_num_queries):
    make_sessions(visitor.key, list(range(35)))
    html = visitor.get("/").content.decode()
    assert "Session 29" in html and "Session 30" not in html
    assert "Load more" in html
    with django_assert_max_num_queries(4):
        more = visitor.get("/sessions/?offset=30", headers={"HX-Request": "true"})
    more = more.content.decode()
    assert "Session 30" in more and "Session 34" in more and "Load more" not in more
    assert "<html" not in more


def test_i_can_rename_and_delete_my_session_but_not_someone_elses(
    visitor, other_visitor, two_models
):
    battle = start_battle(
        visitor, "A prompt that becomes the title of this session, quite long indeed"
    )
    conversation = battle.conversation
    assert conversation.title.startswith("A prompt that becomes the title")
    assert len(conversation.title) <= 60
    assert (
        other_visitor.post(f"/c/{conversation.uuid}/rename/", {"title": "mine"}).status_code == 404
    )
    assert visitor.post(f"/c/{conversation.uuid}/rename/", {"title": "  "}).status_code == 400
    assert visitor.post(f"/c/{conversation.uuid}/rename/", {"title": "Renamed"}).status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Renamed"
    assert visitor.post(f"/c/{conversation.uuid}/delete/").status_code == 302
    assert visitor.get(f"/c/{conversation.uuid}/").status_code == 404
    assert "Renamed" not in visitor.get("/").content.decode()
    # Deleting hides the session from its owner; the battle and any vote stay for the ratings.
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_a_tampered_visitor_cookie_just_gets_a_fresh_identity(visitor):
    make_sessions(visitor.key, [0])
    visitor.cookies["arena_visitor"] = visitor.cookies["arena_visitor"].value + "x"
    response = visitor.get("/")
    assert response.status_code == 200
    assert "Session 0" not in response.content.decode()


def test_malformed_ids_are_not_found(visitor):
    for url in (
        "/c/not-a-uuid/",
        "/b/123/vote/",
        "/b/00000000-0000-0000-0000-000000000000/actions/",
    ):
        assert visitor.get(url).status_code == 404


def test_state_changing_endpoints_refuse_get(visitor):
    assert visitor.get("/battle/").status_code == 405
    assert visitor.get("/b/00000000-0000-0000-0000-000000000000/vote/").status_code == 405


def test_posts_without_a_csrf_token_are_refused(db):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.get("/")
    assert client.post("/battle/", {"prompt": "hi"}).status_code == 403
