"""The personal leaderboard in real headless Chromium: it changes with one's own blind votes,
other visitors do not see it, and the share link shows it read-only until it is revoked."""

import pytest
from playwright.sync_api import expect

from battles.tests.browser import battle_on_page, start_battle, wait_turn_done
from leaderboard.recompute import ratings_recompute

pytestmark = pytest.mark.browser

FAST = "ttft=0.05&tps=400&tokens=20"


def score(on, name: str) -> float:
    cell = on.locator(f'tr[data-model="{name}"] .personal-score')
    return float(cell.inner_text())


def test_the_personal_board_moves_with_ones_votes_stays_private_and_shares_until_revoked(
    arena_server,
    new_page,
    make_model,
    make_votes,
    settings,
):
    settings.ARENA_RATE_START = settings.ARENA_RATE_VOTE = None
    settings.ARENA_MIN_VOTES_TO_SHOW = 1
    alpha = make_model("Alpha", knobs=FAST)
    bravo = make_model("Bravo", knobs=FAST)
    make_votes(alpha, bravo, "a", 6)
    make_votes(alpha, bravo, "b", 4)
    ratings_recompute()

    owner = new_page()
    owner.goto(arena_server + "/leaderboard/me/")
    expect(owner.locator(".personal-meta")).to_contain_text("0 of your votes used")
    before = {name: score(owner, name) for name in ("Alpha", "Bravo")}
    assert before["Alpha"] > before["Bravo"]

    start_battle(owner, arena_server, "Which one is better?")
    wait_turn_done(owner)
    battle = battle_on_page(owner)
    owner.keyboard.press("1")  # A is better
    expect(owner.locator(".reveal")).to_be_visible()
    owner.goto(arena_server + "/leaderboard/me/")
    expect(owner.locator(".personal-meta")).to_contain_text("1 of your votes used")
    winner, loser = battle.model_a.name, battle.model_b.name
    assert score(owner, winner) > before[winner]
    assert score(owner, loser) < before[loser]

    stranger = new_page()
    stranger.goto(arena_server + "/leaderboard/me/")
    expect(stranger.locator(".personal-meta")).to_contain_text("0 of your votes used")

    owner.get_by_role("button", name="Make a share link").click()
    link = owner.get_by_label("Share link").input_value()
    assert "/leaderboard/shared/" in link
    stranger.goto(link)
    expect(stranger.get_by_role("heading", name="A shared leaderboard")).to_be_visible()
    expect(stranger.locator(".personal-meta")).to_contain_text("1 of their votes used")
    expect(stranger.get_by_role("button", name="Make a share link")).to_have_count(0)
    assert score(stranger, winner) == score(owner, winner)

    owner.get_by_role("button", name="Stop sharing (the link stops working)").click()
    expect(owner.get_by_role("button", name="Make a share link")).to_be_visible()
    response = stranger.goto(link)
    assert response.status == 404
