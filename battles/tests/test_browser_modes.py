"""Side by side and chat in real headless Chromium against the arena on uvicorn (both modes of
the suite, like the battle's own browser tests)."""

import re

import pytest
from playwright.sync_api import expect

from battles import services
from battles.models import Battle, NamedVote, Reply, Vote
from battles.tests.browser import TIMEOUT_MS, battle_on_page, pane, sample, stream_lengths
from battles.tests.conftest import wait_turn_finished
from battles.tests.factories import make_battle
from leaderboard.recompute import ratings_recompute

pytestmark = pytest.mark.browser

STEADY = "ttft=0.1&tps=30&tokens=40"  # over a second: long enough to see a turn in progress
SLOW = "ttft=0.1&tps=8&tokens=200"  # long enough to stop halfway


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    settings.ARENA_RATE_START = settings.ARENA_RATE_FOLLOW_UP = settings.ARENA_RATE_VOTE = None


def wait_panes_done(page, sides: str) -> None:
    for side in sides:
        expect(pane(page, side).locator(".stats")).to_be_visible(timeout=TIMEOUT_MS)


def test_side_by_side_picks_two_models_streams_follows_up_and_keeps_the_vote_off_the_board(
    arena_server, page, make_model, settings
):
    alpha = make_model("Alpha", knobs=STEADY)
    bravo = make_model("Bravo", knobs=STEADY)
    make_model("Charlie", knobs=STEADY)
    page.goto(arena_server + "/compare/")
    # The choice is a filterable list of the active models: type, or pick.
    options = page.locator("datalist#active-models option")
    expect(options).to_have_count(3)
    page.get_by_label("Model A").fill("Charlie")
    page.get_by_label("Model B").fill("Alpha")
    page.get_by_role("button", name="Swap the two models").click()
    expect(page.get_by_label("Model A")).to_have_value("Alpha")
    expect(page.get_by_label("Model B")).to_have_value("Charlie")
    box = page.get_by_role("textbox", name="Your prompt")
    box.fill("Name a colour")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    battle = battle_on_page(page)
    assert (battle.mode, battle.model_a.name, battle.model_b.name) == ("named", "Alpha", "Charlie")

    # The names show at once, while both sides stream.
    expect(page.locator(".reveal-a")).to_contain_text("Alpha")
    expect(page.locator(".reveal-b")).to_contain_text("Charlie")
    seen = sample(page, stream_lengths, until=lambda lengths: lengths[2] == 0)
    assert any(live == 2 and a > 0 and b > 0 for a, b, live in seen), seen
    wait_panes_done(page, "ab")
    expect(pane(page, "a").locator(".pane-model")).to_have_text("Alpha")

    follow = page.get_by_placeholder("Ask both models a follow-up…")
    follow.fill("And another one?")
    follow.press("Enter")
    expect(page.locator(".turn")).to_have_count(2)
    for side in "ab":
        expect(pane(page, side, turn=1).locator(".stream-text")).not_to_be_empty()
    wait_panes_done(page, "ab")
    expect(page.locator(".vote-form")).to_contain_text("left out of the leaderboard")

    page.get_by_role("button", name="B is better").click()
    expect(page.locator(".reveal-vote")).to_contain_text("B is better")
    expect(page.get_by_role("link", name="Compare these two again")).to_be_visible()
    named = NamedVote.objects.get(battle=battle)
    assert (named.choice, named.turns) == ("b", 2)
    assert not Vote.objects.exists()

    # The sidebar marks the session; the public board counts only the blind vote.
    sidebar = page.locator("#sidebar-items")
    expect(sidebar.get_by_role("link", name="named Name a colour")).to_be_visible()
    blind = make_battle(
        owner_key="v:someone", model_a=alpha, model_b=bravo, prompt="Blind", finished=True
    )
    services.vote_cast(battle=blind, choice="a")
    settings.ARENA_MIN_VOTES_TO_SHOW = 1
    snapshot = ratings_recompute()
    assert snapshot.vote_count == 1
    assert set(snapshot.rows.values_list("model__name", flat=True)) == {"Alpha", "Bravo"}
    page.goto(arena_server + "/leaderboard/")
    board = page.locator("table.board")
    expect(board).to_contain_text("Alpha")
    expect(board).not_to_contain_text("Charlie")
    assert page.log.console_errors == [] and page.log.page_errors == []


def test_a_chat_streams_one_model_follows_up_stops_and_regenerates(arena_server, page, make_model):
    make_model("Alpha", knobs=SLOW)
    make_model("Bravo", knobs=STEADY)
    page.goto(arena_server + "/chat/?model=Alpha")
    expect(page.get_by_label("A model")).to_have_value("Alpha")
    page.get_by_label("A model").fill("Bravo")
    box = page.get_by_role("textbox", name="Your prompt")
    box.fill("Say hello")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    battle = battle_on_page(page)
    assert (battle.mode, battle.model_a.name, battle.model_b) == ("chat", "Bravo", None)
    expect(page.locator(".pane")).to_have_count(1)
    expect(pane(page, "a").locator(".stream-text")).not_to_be_empty()
    wait_panes_done(page, "a")
    expect(page.locator(".vote-form")).to_have_count(0)
    expect(page.locator(".reveal")).to_contain_text("Bravo")

    follow = page.get_by_placeholder("Ask a follow-up…")
    follow.fill("Once more")
    follow.press("Enter")
    expect(page.locator(".turn")).to_have_count(2)
    wait_panes_done(page, "a")
    replies = wait_turn_finished(battle)
    assert [(r.turn.index, r.side, r.status) for r in replies] == [
        (0, "a", Reply.Status.DONE),
        (1, "a", Reply.Status.DONE),
    ]
    expect(page.get_by_text("8 follow-ups left in this chat")).to_be_visible()

    # Stop a slow answer halfway, then have it written again.
    page.goto(arena_server + "/chat/")
    page.get_by_label("A model").fill("Alpha")
    box = page.get_by_role("textbox", name="Your prompt")
    box.fill("Tell me a long story")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    slow = battle_on_page(page)
    sample(page, stream_lengths, until=lambda lengths: lengths[0] >= 20)
    page.get_by_role("button", name="Stop").click()
    expect(pane(page, "a").locator(".stats")).to_contain_text("stopped")
    (stopped,) = wait_turn_finished(slow)
    assert stopped.status == Reply.Status.STOPPED
    page.get_by_role("button", name="Regenerate").click()
    expect(pane(page, "a").locator(".typing")).to_be_visible()
    page.get_by_role("button", name="Stop").click()
    expect(pane(page, "a").locator(".stats")).to_contain_text("stopped")
    (again,) = wait_turn_finished(slow)
    assert again.attempt == 2

    sidebar = page.locator("#sidebar-items")
    expect(sidebar.get_by_role("link", name="chat Say hello")).to_be_visible()
    assert Battle.objects.filter(mode="chat").count() == 2
    assert not Vote.objects.exists() and not NamedVote.objects.exists()
    assert page.log.console_errors == [] and page.log.page_errors == []
