"""200 votes at once over real HTTP: one vote per battle, a clear refusal for every other one.

The embedded default is served the way `make run` serves it (one process, generation threads
writing to the same SQLite file); service mode the way production does (several web processes
on PostgreSQL), so votes on one battle really race in the database.
"""

import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from django.http import HttpRequest

from arena.tests.servers import ArenaProcess, arena_env
from battles.models import Battle, Reply, Vote
from battles.tests.conftest import wait_turn_finished
from battles.tests.factories import make_battle
from conftest import SERVICE_MODE
from core.dispatch import enqueue_now
from core.visitors import COOKIE, visitor_from_request

BATTLES = 50
THREADS = 32


@pytest.fixture
def vote_server(request, transactional_db, celery_worker, settings, tmp_path):
    """The arena's URL; rate limits off (they would refuse most of this storm by design)."""
    if not SERVICE_MODE:
        settings.ARENA_RATE_VOTE = None
        yield request.getfixturevalue("arena_server")
        return
    db = settings.DATABASES["default"]
    server = ArenaProcess(
        arena_env(
            DATABASE_URL=(
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
            ),
            REDIS_URL=settings.REDIS_URL,
            ARENA_RATE_VOTE="off",
        ),
        workers=4,
        log_dir=tmp_path,
    )
    server.start()
    yield server.url
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def new_visitor(base_url: str) -> tuple[str, str]:
    """(cookie value, visitor key) of a fresh anonymous visitor."""
    cookie = httpx2.get(f"{base_url}/", timeout=30).cookies[COOKIE]
    request = HttpRequest()
    request.COOKIES = {COOKIE: cookie}
    return cookie, visitor_from_request(request).key


def test_200_concurrent_votes_on_50_battles_store_exactly_one_vote_each_and_refuse_the_rest(
    vote_server, make_model
):
    alpha = make_model("Alpha", knobs="ttft=0&tps=40&tokens=80")
    bravo = make_model("Bravo", knobs="ttft=0&tps=40&tokens=80")
    csrf = httpx2.get(f"{vote_server}/", timeout=30).cookies["csrftoken"]
    owners = [new_visitor(vote_server) for _ in range(BATTLES)]
    stranger, _ = new_visitor(vote_server)
    battles = [
        make_battle(owner_key=key, model_a=alpha, model_b=bravo, prompt=f"Q{i}", finished=True)
        for i, (_, key) in enumerate(owners)
    ]
    # Per battle: the vote, a double click, a change of mind, and someone else's attempt.
    attempts = [
        (battle, cookie, choice)
        for battle, (cookie, _) in zip(battles, owners, strict=True)
        for cookie, choice in ((cookie, "a"), (cookie, "a"), (cookie, "b"), (stranger, "tie"))
    ]
    random.shuffle(attempts)
    # Other writers at the same time: both sides of ten battles streaming and checkpointing.
    busy = [
        make_battle(
            owner_key="v:busy", model_a=alpha, model_b=bravo, prompt=f"B{i}", finished=False
        )
        for i in range(10)
    ]
    for reply in Reply.objects.filter(turn__battle__in=busy):
        enqueue_now("battles.tasks.reply_generate_task", reply.pk)

    def vote(battle: Battle, cookie: str, choice: str) -> tuple[Battle, str, str, int, str]:
        response = client.post(
            f"/b/{battle.uuid}/vote/",
            data={"choice": choice},
            headers={"Cookie": f"{COOKIE}={cookie}; csrftoken={csrf}", "X-CSRFToken": csrf},
        )
        return battle, cookie, choice, response.status_code, response.text

    limits = httpx2.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with (
        httpx2.Client(base_url=vote_server, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        results = list(pool.map(lambda attempt: vote(*attempt), attempts))

    statuses = Counter(status for *_, status, _ in results)
    assert statuses == {302: BATTLES, 409: 2 * BATTLES, 404: BATTLES}, statuses
    accepted = defaultdict(list)
    for battle, cookie, choice, status, text in results:
        if cookie == stranger:
            assert status == 404
        elif status == 409:
            assert "already has your vote" in text
        else:
            accepted[battle.pk].append(choice)
    stored = dict(Vote.objects.values_list("battle_id", "choice"))
    assert stored == {pk: choices[0] for pk, choices in accepted.items()}
    assert set(stored) == {b.pk for b in battles}
    assert not Battle.objects.filter(pk__in=stored).exclude(status="voted").exists()
    for battle in busy:  # the other writers were not hurt either
        assert [r.status for r in wait_turn_finished(battle)] == ["done", "done"]


CAP = 3


@pytest.fixture
def capped_vote_server(request, transactional_db, celery_worker, settings, tmp_path):
    """The arena's URL with a daily cap of CAP votes per visitor (no per-minute limit)."""
    if not SERVICE_MODE:
        settings.ARENA_RATE_VOTE = None
        settings.ARENA_DAILY_VOTE_CAP_VISITOR = CAP
        yield request.getfixturevalue("arena_server")
        return
    db = settings.DATABASES["default"]
    server = ArenaProcess(
        arena_env(
            DATABASE_URL=(
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
            ),
            REDIS_URL=settings.REDIS_URL,
            ARENA_RATE_VOTE="off",
            ARENA_DAILY_VOTE_CAP_VISITOR=str(CAP),
        ),
        workers=4,
        log_dir=tmp_path,
    )
    server.start()
    yield server.url
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_votes_arriving_together_at_the_daily_cap_store_exactly_the_cap(
    capped_vote_server, make_model
):
    alpha = make_model("Alpha", knobs="ttft=0&tps=40&tokens=80")
    bravo = make_model("Bravo", knobs="ttft=0&tps=40&tokens=80")
    csrf = httpx2.get(f"{capped_vote_server}/", timeout=30).cookies["csrftoken"]
    cookie, key = new_visitor(capped_vote_server)
    battles = [
        make_battle(owner_key=key, model_a=alpha, model_b=bravo, prompt=f"Q{i}", finished=True)
        for i in range(4 * CAP)
    ]
    headers = {"Cookie": f"{COOKIE}={cookie}; csrftoken={csrf}", "X-CSRFToken": csrf}
    limits = httpx2.Limits(max_connections=len(battles), max_keepalive_connections=len(battles))
    with (
        httpx2.Client(base_url=capped_vote_server, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(len(battles)) as pool,
    ):
        statuses = Counter(
            pool.map(
                lambda battle: (
                    client.post(
                        f"/b/{battle.uuid}/vote/", data={"choice": "a"}, headers=headers
                    ).status_code
                ),
                battles,
            )
        )
    assert statuses == {302: CAP, 429: len(battles) - CAP}, statuses
    assert Vote.objects.filter(battle__in=battles).count() == CAP
