"""Bad input from visitors: every answer is a clear message or status, and nothing changes.

Property-based where the input space is large (prompts, vote values, titles, ids); plain
examples for cookies, CSRF and methods.
"""

import time
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.core import signing
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from battles.models import Battle, Conversation, Vote
from battles.tests.factories import make_battle
from core.visitors import COOKIE, COOKIE_MAX_AGE, COOKIE_SALT

LIMIT = 40  # a small prompt limit, so generated text falls on both sides of it
PROPERTY = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text as a browser could send it: any character, plus the awkward ones more often.
awkward = st.sampled_from(["\x00", " ", "\t", "\n", "\r", "\u00a0", "\u200b", "é", "😀", "<"])
visitor_text = st.text(st.characters(exclude_categories=["Cs"]) | awkward, max_size=LIMIT + 15)


@pytest.fixture
def arena(settings, visitor, make_model):
    """A visitor and two models; no rate limits (hypothesis sends many requests on purpose)."""
    settings.ARENA_RATE_START = settings.ARENA_RATE_VOTE = settings.ARENA_RATE_FOLLOW_UP = None
    settings.ARENA_PROMPT_MAX_CHARS = LIMIT
    return visitor, make_model("Alpha"), make_model("Bravo")


def expected_prompt_error(text: str) -> str | None:
    prompt = text.strip()
    if not prompt:
        return "Type a prompt first"
    if "\x00" in prompt:
        return "NUL character"
    if not any(ch.isprintable() and not ch.isspace() for ch in prompt):
        return "Type a prompt first"
    if len(prompt) > LIMIT:
        return f"the limit is {LIMIT}"
    return None


@PROPERTY
@given(text=visitor_text)
def test_a_prompt_starts_a_battle_exactly_when_it_is_valid_and_says_why_otherwise(arena, text):
    visitor, *_ = arena
    battles = Battle.objects.count()
    response = visitor.post("/battle/", {"prompt": text})
    problem = expected_prompt_error(text)
    if problem is None:
        assert response.status_code == 302
        assert Battle.objects.count() == battles + 1
        assert Battle.objects.latest("pk").turns.get().prompt == text.strip()
    else:
        assert response.status_code == 400
        assert problem in response.content.decode()
        assert Battle.objects.count() == battles


def test_the_limit_counts_characters_not_bytes_and_a_huge_body_is_refused(arena, settings):
    visitor, *_ = arena
    settings.ARENA_PROMPT_MAX_CHARS = 10_000
    # 40,000 bytes of UTF-8 in 10,000 characters: at the limit, so accepted.
    assert visitor.post("/battle/", {"prompt": "😀" * 10_000}).status_code == 302
    over = visitor.post("/battle/", {"prompt": "😀" * 10_001})
    assert over.status_code == 400 and "10,001 characters long" in over.content.decode()
    battles = Battle.objects.count()
    huge = visitor.post("/battle/", {"prompt": "x" * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE)})
    assert huge.status_code == 400 and "Traceback" not in huge.content.decode()
    assert Battle.objects.count() == battles


def test_a_very_long_single_word_is_a_prompt_and_its_session_title_is_cut(arena, settings):
    visitor, *_ = arena
    settings.ARENA_PROMPT_MAX_CHARS = 10_000
    word = "supercalifragilistic" * 250
    assert visitor.post("/battle/", {"prompt": word}).status_code == 302
    assert Battle.objects.latest("pk").turns.get().prompt == word
    assert Conversation.objects.latest("pk").title == word[:57] + "…"


def test_a_form_body_that_is_not_utf8_is_read_as_latin1_not_refused_with_an_error(arena):
    # Django decodes a form body that is not valid UTF-8 as ISO-8859-1 as a whole. Browsers
    # always send UTF-8 for this site's pages, so only a hand-made client sees the mojibake.
    visitor, *_ = arena
    response = visitor.post(
        "/battle/", b"prompt=caf\xe9+ol\xff\xfe", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 302
    assert Battle.objects.latest("pk").turns.get().prompt == "café olÿþ"


@PROPERTY
@given(choice=visitor_text.filter(lambda c: c not in ("a", "b", "tie", "bothbad")))
def test_any_other_vote_value_is_refused_with_the_choices_and_stores_nothing(arena, choice):
    visitor, alpha, bravo = arena
    battle = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    response = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": choice})
    assert response.status_code == 400
    assert "Choose A, B, tie or both bad" in response.content.decode()
    assert not Vote.objects.filter(battle=battle).exists()
    battle.refresh_from_db()
    assert battle.status == "open"


@PROPERTY
@given(title=visitor_text | st.text(min_size=115, max_size=130))
def test_a_session_title_is_saved_tidied_or_refused_and_left_as_it_was(arena, title):
    visitor, alpha, bravo = arena
    conversation = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Old", finished=True
    ).conversation
    response = visitor.post(f"/c/{conversation.uuid}/rename/", {"title": title})
    conversation.refresh_from_db()
    stripped = title.strip()
    tidy = " ".join(stripped.split())
    if tidy and "\x00" not in stripped and len(stripped) <= 120:
        assert response.status_code == 302
        assert conversation.title == tidy
    else:
        assert response.status_code == 400
        assert conversation.title == "Old"


@PROPERTY
@given(text=st.text(max_size=40) | st.uuids().map(str))
def test_any_malformed_or_unknown_id_is_not_found(arena, text):
    visitor, *_ = arena
    segment = quote(text, safe="")
    assert visitor.get(f"/c/{segment}/").status_code == 404
    assert visitor.get(f"/b/{segment}/actions/").status_code == 404
    assert visitor.post(f"/b/{segment}/vote/", {"choice": "a"}).status_code == 404


def expired_cookie(anonymous_id: str) -> str:
    class Yesterday(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - COOKIE_MAX_AGE - 60)

    key = b"django.http.cookies" + django_settings.SECRET_KEY.encode()
    return Yesterday(key=key, salt=COOKIE + COOKIE_SALT).sign(anonymous_id)


def test_an_expired_or_tampered_visitor_cookie_gets_a_fresh_identity_not_the_old_sessions(arena):
    visitor, alpha, bravo = arena
    conversation = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Mine", finished=True
    ).conversation
    assert visitor.get(f"/c/{conversation.uuid}/").status_code == 200
    anonymous_id = visitor.key.removeprefix("v:")
    for cookie in (expired_cookie(anonymous_id), anonymous_id, anonymous_id + ":forged"):
        stranger = Client()
        stranger.cookies[COOKIE] = cookie
        response = stranger.get(f"/c/{conversation.uuid}/")
        assert response.status_code == 404
        assert response.cookies[COOKIE].value != cookie  # a new identity was issued


def test_posts_with_a_missing_or_wrong_csrf_token_are_refused_even_from_htmx(arena):
    visitor, alpha, bravo = arena
    battle = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = visitor.cookies
    browser.get("/")
    token = browser.cookies["csrftoken"].value
    vote = f"/b/{battle.uuid}/vote/"
    refused = [
        browser.post(vote, {"choice": "a"}),
        browser.post(vote, {"choice": "a"}, headers={"HX-Request": "true"}),
        browser.post(vote, {"choice": "a"}, headers={"X-CSRFToken": "x" * len(token)}),
        browser.post(vote, {"choice": "a", "csrfmiddlewaretoken": token[::-1]}),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert all("CSRF verification failed" in r.content.decode() for r in refused)
    assert not Vote.objects.exists()
    accepted = browser.post(vote, {"choice": "a"}, headers={"X-CSRFToken": token})
    assert accepted.status_code == 302 and Vote.objects.count() == 1


def test_wrong_methods_are_refused_with_405(arena):
    visitor, alpha, bravo = arena
    battle = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    b, c = f"/b/{battle.uuid}", f"/c/{battle.conversation.uuid}"
    posts = [
        "/battle/",
        f"{b}/vote/",
        f"{b}/follow-up/",
        f"{b}/retry/a/",
        f"{b}/regenerate/",
        f"{b}/stop/",
        f"{c}/rename/",
        f"{c}/delete/",
        f"{c}/continue/",
    ]
    for url in posts:
        for method in ("get", "put", "patch", "delete"):
            assert getattr(visitor, method)(url).status_code == 405, (method, url)
    for url in (f"{c}/", f"{b}/actions/", "/sessions/"):
        assert visitor.post(url).status_code == 405, url
    assert not Vote.objects.exists()
    battle.refresh_from_db()
    assert battle.status == "open" and Conversation.objects.get().hidden_at is None


def test_the_event_stream_refuses_post(arena):
    visitor, alpha, bravo = arena
    battle = make_battle(
        owner_key=visitor.key, model_a=alpha, model_b=bravo, prompt="Q", finished=True
    )
    assert visitor.post(f"/b/{battle.uuid}/turns/0/events/").status_code == 405
