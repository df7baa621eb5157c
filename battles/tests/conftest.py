import re

import pytest

from battles.models import Battle, Reply
from conftest import wait_for


@pytest.fixture
def live(transactional_db, celery_worker):
    """Committed data and a running task executor (thread pool, or the Celery worker)."""
    return celery_worker


def start_battle(visitor, prompt: str = "Tell me about arenas") -> Battle:
    response = visitor.post("/battle/", {"prompt": prompt})
    assert response.status_code == 302, response.content[:500]
    conversation = re.search(r"/c/([0-9a-f-]+)/", response["Location"]).group(1)
    return Battle.objects.filter(conversation__uuid=conversation).latest("created_at")


def wait_turn_finished(battle: Battle, timeout: float = 30.0) -> list[Reply]:
    def finished():
        replies = list(Reply.objects.filter(turn__battle=battle).order_by("turn__index", "side"))
        busy = [r for r in replies if r.status in (Reply.Status.PENDING, Reply.Status.STREAMING)]
        return replies if replies and not busy else None

    return wait_for(finished, timeout=timeout, message="the replies did not finish in time")
