"""Votes that can be trusted: the daily cap, login to vote, moderation, and the staff stats."""

import json
import socket
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from battles.features import prompt_fingerprint
from battles.models import (
    Battle,
    Conversation,
    ModerationEvent,
    Reply,
    Turn,
    Vote,
)
from battles.tests.factories import make_battle
from core.visitors import salted_hash

FLAG_WORD = "forbidden-marker"


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    # Rate limits stay out of the way here (arena/tests/test_ratelimit.py covers them); in
    # service mode the cache is Redis shared with the hub, so only the memory cache is cleared.
    if django_settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        cache.clear()
    settings.RATELIMIT_CACHE_PREFIX = f"rl:test-{uuid.uuid4().hex}:"
    settings.ARENA_RATE_START = None
    settings.ARENA_RATE_FOLLOW_UP = None
    settings.ARENA_RATE_VOTE = None


def finished_battle(owner_key: str, model_a, model_b, *, ip: str = "", prompt="Compare") -> Battle:
    return make_battle(
        owner_key=owner_key, model_a=model_a, model_b=model_b, prompt=prompt, finished=True, ip=ip
    )


def vote(client, battle, choice="a", **extra):
    return client.post(f"/b/{battle.uuid}/vote/", {"choice": choice}, **extra)


# --- the daily vote cap -------------------------------------------------------------------------


def test_the_daily_cap_per_visitor_refuses_with_429_and_keeps_the_battle_open(
    settings, visitor, two_models
):
    settings.ARENA_DAILY_VOTE_CAP_VISITOR = 2
    battles = [finished_battle(visitor.key, *two_models) for _ in range(3)]
    assert vote(visitor, battles[0]).status_code == 302
    assert vote(visitor, battles[1]).status_code == 302
    response = vote(visitor, battles[2])
    assert response.status_code == 429
    assert "Daily vote limit reached" in response.content.decode()
    retry = int(response["Retry-After"])
    assert 24 * 3600 - 60 < retry <= 24 * 3600 + 1
    assert Vote.objects.count() == 2
    battles[2].refresh_from_db()
    assert battles[2].status == Battle.Status.OPEN


def test_the_daily_cap_per_ip_counts_every_visitor_on_that_address(
    settings, visitor, other_visitor, two_models
):
    settings.ARENA_DAILY_VOTE_CAP_IP = 1
    mine = finished_battle(visitor.key, *two_models, ip="198.51.100.5")
    theirs = finished_battle(other_visitor.key, *two_models, ip="198.51.100.5")
    elsewhere = finished_battle(other_visitor.key, *two_models, ip="198.51.100.6")
    assert vote(visitor, mine).status_code == 302
    response = vote(other_visitor, theirs, HTTP_HX_REQUEST="true")
    assert response.status_code == 429
    assert "from your network" in response.content.decode()
    assert vote(other_visitor, elsewhere).status_code == 302
    assert Vote.objects.count() == 2


def test_votes_older_than_a_day_do_not_count_and_zero_means_no_cap(settings, visitor, two_models):
    settings.ARENA_DAILY_VOTE_CAP_VISITOR = 1
    first = finished_battle(visitor.key, *two_models)
    assert vote(visitor, first).status_code == 302
    Vote.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert vote(visitor, finished_battle(visitor.key, *two_models)).status_code == 302
    settings.ARENA_DAILY_VOTE_CAP_VISITOR = 0
    assert vote(visitor, finished_battle(visitor.key, *two_models)).status_code == 302
    assert Vote.objects.count() == 3


def test_a_vote_stores_the_hash_of_its_prompts(visitor, two_models):
    battle = finished_battle(visitor.key, *two_models, prompt="  Hello   WORLD ")
    vote(visitor, battle)
    assert Vote.objects.get().prompt_hash == prompt_fingerprint(["hello world"])


# --- login required to vote ---------------------------------------------------------------------


@pytest.fixture
def member(db):
    return get_user_model().objects.create_user("member", "m@example.com", "pw-member-123")


def test_with_login_required_an_anonymous_vote_gets_403_and_a_login_link(
    settings, visitor, two_models
):
    settings.ARENA_VOTE_REQUIRES_LOGIN = True
    battle = finished_battle(visitor.key, *two_models)
    response = vote(visitor, battle)
    assert response.status_code == 403
    body = response.content.decode()
    assert "Log in" in body and "/accounts/login/?next=%2Fc%2F" in body
    fragment = vote(visitor, battle, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 403 and "<html" not in fragment.content.decode()
    assert not Vote.objects.exists()


def test_after_logging_in_the_visitor_votes_on_the_battle_they_started(
    settings, visitor, two_models, member
):
    settings.ARENA_VOTE_REQUIRES_LOGIN = True
    battle = finished_battle(visitor.key, *two_models)
    login = visitor.post(
        "/accounts/login/", {"username": "member", "password": "pw-member-123", "next": "/"}
    )
    assert login.status_code == 302
    assert vote(visitor, battle).status_code == 302
    stored = Vote.objects.get()
    assert stored.visitor_hash == salted_hash(f"u:{member.pk}")
    battle.refresh_from_db()
    assert battle.owner_key == f"u:{member.pk}"


def test_without_login_required_anonymous_votes_count(visitor, two_models):
    assert vote(visitor, finished_battle(visitor.key, *two_models)).status_code == 302


def test_the_login_page_renders_and_logout_works(visitor, member):
    assert visitor.get("/accounts/login/").status_code == 200
    visitor.post("/accounts/login/", {"username": "member", "password": "pw-member-123"})
    assert visitor.post("/accounts/logout/").status_code == 302


# --- moderation ---------------------------------------------------------------------------------

CATEGORIES = ["harassment", "hate", "illicit", "self-harm", "sexual", "violence"]


class _ModerationHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        text = body["input"] if isinstance(body["input"], str) else " ".join(body["input"])
        flagged = FLAG_WORD in text
        payload = {
            "id": "modr-test",
            "model": body.get("model", ""),
            "results": [
                {
                    "flagged": flagged,
                    "categories": {c: flagged and c == "violence" for c in CATEGORIES},
                    "category_scores": {c: 0.9 if flagged else 0.01 for c in CATEGORIES},
                    "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                }
            ],
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        """Keep the test output quiet."""


@pytest.fixture
def moderation_server(settings, monkeypatch):
    """A real HTTP moderation endpoint in OpenAI's response shape; flags FLAG_WORD."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModerationHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TEST_MODERATION_KEY", "sk-moderation-test")
    settings.ARENA_MODERATION_URL = f"http://127.0.0.1:{server.server_address[1]}/v1"
    settings.ARENA_MODERATION_MODEL = "omni-moderation-latest"
    settings.ARENA_MODERATION_API_KEY_ENV = "TEST_MODERATION_KEY"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def moderation_down(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.ARENA_MODERATION_URL = f"http://127.0.0.1:{port}/v1"  # nothing listens
    settings.ARENA_MODERATION_TIMEOUT = 2.0


def test_a_clean_prompt_passes_the_check_and_starts_a_battle(
    visitor, two_models, moderation_server
):
    response = visitor.post("/battle/", {"prompt": "Tell me about arenas"})
    assert response.status_code == 302
    assert Battle.objects.count() == 1
    [request] = moderation_server.received
    assert request["path"] == "/v1/moderations"
    assert request["body"] == {"input": "Tell me about arenas", "model": "omni-moderation-latest"}
    assert request["auth"] == "Bearer sk-moderation-test"
    assert not ModerationEvent.objects.exists()


def test_a_flagged_prompt_is_refused_nothing_is_written_and_staff_see_it(
    visitor, two_models, moderation_server
):
    response = visitor.post("/battle/", {"prompt": f"Please {FLAG_WORD} now"})
    assert response.status_code == 422
    assert "our content check flagged it" in response.content.decode()
    assert not Battle.objects.exists() and not Conversation.objects.exists()
    event = ModerationEvent.objects.get()
    assert event.outcome == ModerationEvent.Outcome.REFUSED
    assert event.action == "start"
    assert event.categories == ["violence"]
    assert event.visitor_hash == salted_hash(visitor.key)


def test_a_flagged_follow_up_or_continue_is_refused_too(visitor, two_models, moderation_server):
    battle = finished_battle(visitor.key, *two_models)
    response = visitor.post(
        f"/b/{battle.uuid}/follow-up/", {"prompt": FLAG_WORD}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422
    assert "our content check flagged it" in response.content.decode()
    assert Turn.objects.filter(battle=battle).count() == 1
    response = visitor.post(f"/c/{battle.conversation.uuid}/continue/", {"prompt": FLAG_WORD})
    assert response.status_code == 422
    assert Battle.objects.count() == 1
    assert list(ModerationEvent.objects.values_list("action", flat=True).order_by("pk")) == [
        "follow_up",
        "continue",
    ]


def test_with_the_endpoint_down_it_fails_open_by_default_and_records_it(
    visitor, two_models, moderation_down
):
    assert visitor.post("/battle/", {"prompt": "Tell me about arenas"}).status_code == 302
    assert Battle.objects.count() == 1
    assert ModerationEvent.objects.get().outcome == ModerationEvent.Outcome.ERROR_ALLOWED


def test_with_the_endpoint_down_and_fail_closed_the_prompt_is_refused(
    settings, visitor, two_models, moderation_down
):
    settings.ARENA_MODERATION_FAIL_CLOSED = True
    response = visitor.post("/battle/", {"prompt": "Tell me about arenas"})
    assert response.status_code == 422
    assert "could not check this prompt" in response.content.decode()
    assert not Battle.objects.exists()
    assert ModerationEvent.objects.get().outcome == ModerationEvent.Outcome.ERROR_REFUSED


def test_moderation_is_off_unless_configured(visitor, two_models):
    assert visitor.post("/battle/", {"prompt": f"{FLAG_WORD}"}).status_code == 302
    assert not ModerationEvent.objects.exists()


# --- staff statistics ---------------------------------------------------------------------------

STATS_URL = "/admin/battles/vote/stats/"


def test_the_stats_page_is_for_staff_only(client, visitor, member):
    anonymous = client.get(STATS_URL)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    visitor.force_login(member)
    not_staff = visitor.get(STATS_URL)
    assert not_staff.status_code == 302 and "/admin/login/" in not_staff["Location"]


def test_the_stats_page_shows_votes_per_voter_model_health_and_where_flagged_voters_are(
    staff, visitor, other_visitor, two_models
):
    alpha, bravo = two_models
    for _ in range(3):
        vote(visitor, finished_battle(visitor.key, alpha, bravo, ip="198.51.100.5"))
    vote(other_visitor, finished_battle(other_visitor.key, alpha, bravo, ip="198.51.100.5"))
    # Alpha: 4 done replies (one leaked) + 1 failed; latency 100 and 300 ms on two of them.
    replies = list(Reply.objects.filter(model=alpha).order_by("pk"))
    Reply.objects.filter(pk=replies[0].pk).update(identity_leak=True, latency_ms=100)
    Reply.objects.filter(pk=replies[1].pk).update(latency_ms=300)
    extra = finished_battle(visitor.key, alpha, bravo)
    Reply.objects.filter(turn__battle=extra, model=alpha).update(status=Reply.Status.FAILED)

    response = staff.get(STATS_URL)
    assert response.status_code == 200
    context = response.context
    by_visitor = {row["visitor_hash"]: row["votes"] for row in context["by_visitor"]}
    assert by_visitor == {salted_hash(visitor.key): 3, salted_hash(other_visitor.key): 1}
    assert [row["votes"] for row in context["by_ip"]] == [4]
    health = {row.model.name: row for row in context["models"]}
    assert (health["Alpha"].replies, health["Alpha"].failed, health["Alpha"].leaked) == (5, 1, 1)
    assert health["Alpha"].error_rate == pytest.approx(1 / 5)
    assert health["Alpha"].leak_rate == pytest.approx(1 / 4)
    assert health["Alpha"].avg_latency_ms == pytest.approx(200)
    assert health["Bravo"].failed == 0
    body = response.content.decode()
    # Flagged voters are the leaderboard's (leaderboard/tests/test_admin.py): a link to them.
    assert 'href="/admin/leaderboard/flaggedvoter/"' in body
    assert "20%" in body and "25%" in body
