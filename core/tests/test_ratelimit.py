"""Rate limits per visitor and per IP, and which address counts as the client's."""

import uuid

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from battles.models import Battle, Conversation, Reply, Turn, Vote
from core.visitors import client_ip, salted_hash


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    """Each test counts from zero.

    The memory cache is cleared outright. In service mode the cache is the Redis database the
    hub and the worker's broker also use, so instead of flushing it each test counts under
    its own key prefix.
    """
    if django_settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        cache.clear()
    settings.RATELIMIT_CACHE_PREFIX = f"rl:test-{uuid.uuid4().hex}:"
    settings.ARENA_RATE_START = "2/m"
    settings.ARENA_RATE_FOLLOW_UP = "2/m"
    settings.ARENA_RATE_VOTE = "2/m"
    settings.ARENA_TRUSTED_PROXIES = []


def finished_battle(visitor, model_a, model_b, *, ip: str = "") -> Battle:
    """A battle owned by this visitor whose replies are done, so it can take a vote."""
    conversation = Conversation.objects.create(owner_key=visitor.key, title="Test")
    battle = Battle.objects.create(
        conversation=conversation,
        owner_key=visitor.key,
        model_a=model_a,
        model_b=model_b,
        pair_probability=0.5,
        visitor_hash=salted_hash(visitor.key),
        ip_hash=salted_hash(f"ip:{ip}") if ip else "",
        turn_count=1,
    )
    turn = Turn.objects.create(battle=battle, index=0, prompt="Compare these")
    for side, model in (("a", model_a), ("b", model_b)):
        Reply.objects.create(
            turn=turn, side=side, model=model, status=Reply.Status.DONE, text="An answer."
        )
    return battle


def start(visitor, ip: str, **extra):
    return visitor.post("/battle/", {"prompt": "Tell me about arenas"}, REMOTE_ADDR=ip, **extra)


def assert_slow_down(response):
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert "Slow down: try again in" in response.content.decode()


def test_it_limits_one_visitor_even_when_they_rotate_ip_addresses(visitor, two_models):
    assert start(visitor, "10.0.0.1").status_code == 302
    assert start(visitor, "10.0.0.2").status_code == 302
    response = start(visitor, "10.0.0.3")
    assert_slow_down(response)
    assert Battle.objects.count() == 2


def test_it_limits_two_visitors_behind_one_ip_address(visitor, other_visitor, two_models):
    assert start(visitor, "10.0.0.9").status_code == 302
    assert start(other_visitor, "10.0.0.9").status_code == 302
    response = start(other_visitor, "10.0.0.9")  # second for this visitor, third for the IP
    assert_slow_down(response)
    assert Battle.objects.count() == 2
    # The first visitor, from another address, still has budget left.
    assert start(visitor, "10.0.0.10").status_code == 302


def test_the_full_page_explains_and_the_htmx_fragment_is_small(visitor, two_models):
    start(visitor, "10.0.0.1")
    start(visitor, "10.0.0.1")
    page = start(visitor, "10.0.0.1")
    assert_slow_down(page)
    assert "<html" in page.content.decode()
    fragment = start(visitor, "10.0.0.1", HTTP_HX_REQUEST="true")
    assert_slow_down(fragment)
    body = fragment.content.decode()
    assert "<html" not in body and 'id="rate-limited"' in body
    assert fragment["HX-Reswap"] == "beforebegin"


def test_continuing_a_session_shares_the_start_limit(visitor, two_models):
    assert start(visitor, "10.0.0.1").status_code == 302
    conversation = Conversation.objects.get()
    url = f"/c/{conversation.uuid}/continue/"
    assert visitor.post(url, {"prompt": "Next"}, REMOTE_ADDR="10.0.0.1").status_code == 302
    assert_slow_down(visitor.post(url, {"prompt": "Again"}, REMOTE_ADDR="10.0.0.1"))
    assert Battle.objects.count() == 2


def test_it_limits_follow_ups_and_writes_nothing_when_limited(visitor, two_models):
    battle = finished_battle(visitor, *two_models)
    url = f"/b/{battle.uuid}/follow-up/"
    for _ in range(2):
        visitor.post(url, {"prompt": "And then?"}, REMOTE_ADDR="10.0.0.1")
    turns = Turn.objects.filter(battle=battle).count()
    assert_slow_down(visitor.post(url, {"prompt": "And then?"}, REMOTE_ADDR="10.0.0.1"))
    assert Turn.objects.filter(battle=battle).count() == turns


def test_it_limits_votes_and_writes_nothing_when_limited(visitor, two_models):
    battles = [finished_battle(visitor, *two_models) for _ in range(3)]
    for battle in battles[:2]:
        response = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}, REMOTE_ADDR="10.0.0.1")
        assert response.status_code == 302
    response = visitor.post(f"/b/{battles[2].uuid}/vote/", {"choice": "a"}, REMOTE_ADDR="10.0.0.1")
    assert_slow_down(response)
    assert Vote.objects.count() == 2
    battles[2].refresh_from_db()
    assert battles[2].status == Battle.Status.OPEN


def test_a_limit_set_to_off_does_not_limit(settings, visitor, two_models):
    settings.ARENA_RATE_START = None
    for i in range(4):
        assert start(visitor, f"10.0.1.{i}").status_code == 302


def test_a_malformed_rate_stops_start_up(monkeypatch):
    from config.settings import _env_rate

    for bad in ("10", "ten/m", "10/x", "0/m", "10/0m", "10/m/s"):
        monkeypatch.setenv("ARENA_RATE_VOTE", bad)
        with pytest.raises(ImproperlyConfigured, match="ARENA_RATE_VOTE"):
            _env_rate("ARENA_RATE_VOTE", "30/m")
    monkeypatch.setenv("ARENA_RATE_VOTE", "100/5m")
    assert _env_rate("ARENA_RATE_VOTE", "30/m") == "100/5m"
    monkeypatch.setenv("ARENA_RATE_VOTE", "off")
    assert _env_rate("ARENA_RATE_VOTE", "30/m") is None


# --- which address is the client's --------------------------------------------------------------


def request_from(remote: str, forwarded: str | None = None):
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **headers)


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(settings):
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1"]
    assert client_ip(request_from("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


def test_x_forwarded_for_is_ignored_when_no_proxy_is_trusted(settings):
    assert client_ip(request_from("10.0.0.1", "198.51.100.1")) == "10.0.0.1"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client(settings):
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1", "10.0.0.2"]
    # The client may put anything on the left; only what our proxies appended is believed.
    forwarded = "1.1.1.1, 198.51.100.1, 10.0.0.2"
    assert client_ip(request_from("10.0.0.1", forwarded)) == "198.51.100.1"


def test_behind_a_trusted_proxy_without_a_header_the_peer_is_the_client(settings):
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1"]
    assert client_ip(request_from("10.0.0.1")) == "10.0.0.1"


def test_a_spoofed_header_does_not_escape_the_ip_limit(visitor, other_visitor, two_models):
    # No trusted proxy: a visitor who invents X-Forwarded-For still counts as their peer.
    for i, client in enumerate((visitor, other_visitor)):
        response = start(client, "203.0.113.7", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
        assert response.status_code == 302
    assert_slow_down(start(other_visitor, "203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.9"))


def test_clients_behind_a_trusted_proxy_have_separate_ip_limits(
    settings, visitor, other_visitor, two_models
):
    settings.ARENA_TRUSTED_PROXIES = ["10.0.0.1"]
    for _ in range(2):
        assert start(visitor, "10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 302
    # Same proxy, another client: its own IP budget (and its own visitor budget).
    assert start(other_visitor, "10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 302
    battle = Battle.objects.latest("created_at")
    assert battle.ip_hash == salted_hash("ip:198.51.100.2")
