import re

import pytest
from playwright.sync_api import expect, sync_playwright

from battles.models import Battle, Reply
from battles.tests.browser import (
    CHROMIUM,
    LAUNCH_ARGS,
    RECORD_CSP_VIOLATIONS,
    TIMEOUT_MS,
    PageLog,
)
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


@pytest.fixture
def _orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an asyncio loop running on the test thread, so Django would
    # refuse the test's own ORM calls (and the test database teardown) as "async-unsafe".
    # They are plain synchronous calls; allow them in browser tests.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def browser():
    # A loaded CI machine can be slow to answer; a user would wait that long too.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, _orm_beside_playwright):
    """A page factory: each page gets a fresh context (its own cookies, so its own visitor)."""
    contexts = []

    def make(**options):
        context = browser.new_context(**({"color_scheme": "light"} | options))
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        contexts.append(context)
        page = context.new_page()
        page.log = PageLog()
        page.log.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()
