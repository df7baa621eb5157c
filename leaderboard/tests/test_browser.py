"""The live board as a visitor sees it, in headless Chromium against the arena on uvicorn:
a vote cast in one tab shows on the board open in another, without a reload. Runs in both
modes: the refresh runs in the thread pool, or in the Celery worker process."""

import threading

import pytest
from playwright.sync_api import expect

from battles.tests.browser import start_battle, wait_turn_done
from core import scheduler
from leaderboard import refresh

pytestmark = pytest.mark.browser

FAST = "ttft=0.05&tps=400&tokens=40"
REFRESH_SECONDS = 1.0


@pytest.fixture
def short_refresh(settings):
    """The schedule with a 1 s refresh tick and 0.5 s polls, running for the test's length."""
    settings.ARENA_RATE_START = settings.ARENA_RATE_FOLLOW_UP = settings.ARENA_RATE_VOTE = None
    settings.ARENA_BOARD_POLL_SECONDS = 0.5
    settings.CELERY_BEAT_SCHEDULE = {
        "ratings-refresh": {
            "task": "leaderboard.tasks.ratings_refresh_task",
            "schedule": REFRESH_SECONDS,
            "args": (REFRESH_SECONDS,),
        }
    }
    stop = threading.Event()
    thread = scheduler.start(stop=stop)
    yield
    stop.set()
    thread.join(timeout=5)


def test_a_vote_shows_on_an_open_board_within_the_refresh_interval_without_a_reload(
    arena_server, new_page, make_model, make_votes, short_refresh
):
    alpha, bravo = make_model("Alpha", knobs=FAST), make_model("Bravo", knobs=FAST)
    make_votes(alpha, bravo, "a", 6)
    make_votes(bravo, alpha, "a", 4)
    refresh.ratings_refresh()

    board = new_page()
    board.goto(arena_server + "/leaderboard/")
    meta = board.locator(".board-meta")
    expect(meta).to_contain_text("from 10 votes")
    age = board.locator(".board-age")
    shown = age.inner_text()
    expect(age).not_to_have_text(shown)  # "Updated 3 s ago" keeps counting
    board.evaluate("() => { window.sameDocument = true; }")

    voter = new_page()
    start_battle(voter, arena_server, "Which is heavier, a kilo of feathers or of lead?")
    wait_turn_done(voter)
    voter.keyboard.press("1")
    expect(voter.locator(".reveal")).to_be_visible()

    # The tick (1 s), the recompute and the next poll (0.5 s): a few seconds on a busy machine.
    expect(meta).to_contain_text("from 11 votes", timeout=20_000)
    assert board.evaluate("() => window.sameDocument") is True, "the page was reloaded"
    expect(board.locator("table.board")).to_contain_text("Alpha")
    assert board.log.console_errors == [] and board.log.page_errors == []
    assert board.log.failed_responses == []
