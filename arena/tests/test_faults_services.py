"""Backing services going away and coming back, with the arena run as in production.

Each test starts its own Redis or PostgreSQL (the machine's are shared), serves the arena from
a separate process with DEBUG off, and drives it over HTTP the way a browser would.
"""

import re
import time

import httpx2
import pytest
from django.conf import settings
from django.http import HttpRequest

from arena.tests.servers import (
    ArenaProcess,
    CeleryWorker,
    PostgresCluster,
    RedisServer,
    arena_env,
    collect_static,
    manage,
)
from battles.models import Battle, Vote
from battles.tests.conftest import wait_turn_finished
from battles.tests.factories import make_battle
from conftest import SERVICE_MODE
from core.visitors import COOKIE, visitor_from_request

UNAVAILABLE = "temporarily unavailable"
FAST = "ttft=0&tps=400&tokens=12"


def production_env(static_root, data_dir, **extra: str) -> dict[str, str]:
    return arena_env(
        **{
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": "faults-test-secret-key-" + "k" * 40,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_COOKIES": "false",
            "STATIC_ROOT": str(static_root),
            "ARENA_DATA_DIR": str(data_dir),
        }
        | extra
    )


def service_database_url() -> str:
    """The test database, for an arena process of its own."""
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    collect_static(production_env(root, tmp_path_factory.mktemp("data")))
    return root


@pytest.fixture
def browser():
    """browser(base_url): an HTTP client with a visitor's cookies, closed after the test."""
    clients: list[httpx2.Client] = []

    def open_at(base_url: str) -> httpx2.Client:
        client = httpx2.Client(base_url=base_url, timeout=30, follow_redirects=False)
        clients.append(client)
        assert client.get("/").status_code == 200  # visitor and CSRF cookies
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        return client

    yield open_at
    for client in clients:
        client.close()


def conversation_of(response: httpx2.Response) -> str:
    assert response.status_code == 302, response.text[:500]
    return re.search(r"/c/([0-9a-f-]+)/", response.headers["location"]).group(1)


def assert_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert UNAVAILABLE in response.text
    assert "Traceback" not in response.text and "OperationalError" not in response.text


@pytest.mark.worker
def test_with_redis_down_pages_still_render_a_new_battle_is_refused_and_work_resumes_after(
    transactional_db, make_model, static_root, tmp_path, browser
):
    make_model("Alpha", knobs=FAST)
    make_model("Bravo", knobs=FAST)
    redis = RedisServer()
    env = production_env(
        static_root, tmp_path, DATABASE_URL=service_database_url(), REDIS_URL=redis.url
    )
    worker = CeleryWorker(env, tmp_path)
    arena = ArenaProcess(env, log_dir=tmp_path)
    try:
        redis.start()
        worker.start()
        arena.start()
        http = browser(arena.url)
        first = Battle.objects.get(
            conversation__uuid=conversation_of(http.post("/battle/", data={"prompt": "Hello"}))
        )
        wait_turn_finished(first)

        redis.stop()

        for url in ("/", f"/c/{first.conversation.uuid}/", "/leaderboard/"):
            assert http.get(url).status_code == 200, url
        battles = Battle.objects.count()
        asked = time.monotonic()
        assert_unavailable(http.post("/battle/", data={"prompt": "Are you there?"}))
        assert time.monotonic() - asked < 10, "the refusal must come quickly"
        assert Battle.objects.count() == battles, "a refused battle left rows behind"
        # The stream ends (the browser reconnects by itself) instead of failing or hanging.
        asked = time.monotonic()
        with http.stream("GET", f"/b/{first.uuid}/turns/0/events/") as stream:
            assert stream.status_code == 200
            stream.read()
        assert time.monotonic() - asked < 15

        redis.start()

        deadline = time.monotonic() + 30
        while (response := http.post("/battle/", data={"prompt": "Back again"})).status_code != 302:
            assert_unavailable(response)
            assert time.monotonic() < deadline, "the arena did not take battles again"
            time.sleep(0.5)
        again = Battle.objects.get(conversation__uuid=conversation_of(response))
        replies = wait_turn_finished(again, timeout=60)
        assert [r.status for r in replies] == ["done", "done"]
    finally:
        arena.stop()
        worker.stop()
        redis.stop()
    # Failures are logged as warnings; none reached Django as an unhandled server error.
    assert "Internal Server Error" not in arena.log(), arena.log()


@pytest.mark.skipif(
    not SERVICE_MODE, reason="PostgreSQL is the service-mode database: runs in that pass"
)
def test_while_postgresql_restarts_requests_fail_cleanly_and_later_ones_succeed_without_a_restart(
    llm_server, static_root, tmp_path, browser
):
    cluster = PostgresCluster()
    env = production_env(static_root, tmp_path, DATABASE_URL=cluster.url)
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        "models:\n"
        + "".join(
            f"  - {{id: {name}, name: {name.title()}, model: '{name}?{FAST}', "
            f"base_url: '{llm_server}', status: active}}\n"
            for name in ("alpha", "bravo")
        )
    )
    arena = ArenaProcess(env, log_dir=tmp_path)
    try:
        cluster.create()
        manage(env, "migrate", "--noinput")
        manage(env, "load_models", str(catalog))
        arena.start()
        http = browser(arena.url)
        conversation = conversation_of(http.post("/battle/", data={"prompt": "Hello"}))
        page = f"/c/{conversation}/"
        deadline = time.monotonic() + 30
        while http.get(page).text.count("status-done") < 2:
            assert time.monotonic() < deadline, "the first battle did not finish"
            time.sleep(0.2)

        cluster.stop()

        for url in ("/", page, "/leaderboard/"):
            assert_unavailable(http.get(url))
        assert_unavailable(http.post("/battle/", data={"prompt": "Anyone home?"}))
        assert http.get("/healthz").json()["database"] == "unavailable"

        cluster.start()

        # Requests soon work again without a restart: the connection pool drops its dead
        # connections and reconnects (with a short back-off while the server comes up).
        deadline = time.monotonic() + 30
        while http.get(page).status_code != 200:
            assert time.monotonic() < deadline, "the arena did not recover after the restart"
            time.sleep(0.5)
        assert http.get(page).text.count("status-done") == 2
        assert http.get("/").status_code == 200
        second = conversation_of(http.post("/battle/", data={"prompt": "Still there?"}))
        deadline = time.monotonic() + 30
        while http.get(f"/c/{second}/").text.count("status-done") < 2:
            assert time.monotonic() < deadline, "a battle after the restart did not finish"
            time.sleep(0.2)
    finally:
        arena.stop()
        cluster.destroy()
    # Failures are logged as warnings; none reached Django as an unhandled server error.
    assert "Internal Server Error" not in arena.log(), arena.log()


@pytest.mark.skipif(
    not SERVICE_MODE, reason="PostgreSQL is the service-mode database: runs in that pass"
)
def test_with_redis_down_votes_still_count_under_their_daily_cap_and_starts_get_the_503_page(
    transactional_db, make_model, static_root, tmp_path, browser
):
    alpha, bravo = make_model("Alpha", knobs=FAST), make_model("Bravo", knobs=FAST)
    redis = RedisServer()
    env = production_env(
        static_root,
        tmp_path,
        # The test's own key, so the visitor cookie the arena signs names a visitor here too.
        SECRET_KEY=settings.SECRET_KEY,
        DATABASE_URL=service_database_url(),
        REDIS_URL=redis.url,
        ARENA_RATE_VOTE="30/m",
        ARENA_DAILY_VOTE_CAP_VISITOR="2",
    )
    arena = ArenaProcess(env, log_dir=tmp_path)
    try:
        redis.start()
        arena.start()
        http = browser(arena.url)
        request = HttpRequest()
        request.COOKIES = {COOKIE: http.cookies[COOKIE]}
        owner = visitor_from_request(request).key
        battles = [
            make_battle(
                owner_key=owner, model_a=alpha, model_b=bravo, prompt=f"Q{i}", finished=True
            )
            for i in range(3)
        ]

        redis.stop()

        for battle in battles[:2]:
            asked = time.monotonic()
            response = http.post(f"/b/{battle.uuid}/vote/", data={"choice": "a"})
            assert response.status_code == 302, response.text[:500]
            assert time.monotonic() - asked < 10, "the vote must not wait for Redis"
        # The daily cap is counted in the database, so it still holds.
        capped = http.post(f"/b/{battles[2].uuid}/vote/", data={"choice": "b"})
        assert capped.status_code == 429, capped.text[:500]
        assert "Daily vote limit reached" in capped.text
        assert int(capped.headers["Retry-After"]) > 0
        assert set(Vote.objects.values_list("battle_id", flat=True)) == {
            battles[0].pk,
            battles[1].pk,
        }
        assert Battle.objects.get(pk=battles[2].pk).status == Battle.Status.OPEN
        # A start needs the broker: the plain 503 page, nothing written.
        count = Battle.objects.count()
        assert_unavailable(http.post("/battle/", data={"prompt": "Are you there?"}))
        assert Battle.objects.count() == count
    finally:
        arena.stop()
        redis.stop()
    assert "Internal Server Error" not in arena.log(), arena.log()
    assert "vote rate limit not counted, the cache is unreachable" in arena.log()
