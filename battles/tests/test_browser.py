"""The battle as a visitor sees it, in real headless Chromium against the arena on uvicorn.

Runs in both modes: embedded (thread pool, in-memory hub) and service mode (Celery worker
process, Redis Streams), like the rest of the battle tests.
"""

import re

import pytest
from playwright.sync_api import expect

from battles.tests.browser import (
    battle_on_page,
    csp_violations,
    finished,
    pane,
    sample,
    start_battle,
    stream_lengths,
    wait_turn_done,
)
from battles.tests.conftest import wait_turn_finished
from llm_providers.testing.server import generate_text

pytestmark = pytest.mark.browser

SLOW = "ttft=0.2&tps=15&tokens=60"  # about 4 s per answer: slow enough to watch it stream
STEADY = "ttft=0.1&tps=30&tokens=40"  # over a second: long enough to see a turn in progress
FAST = "ttft=0.05&tps=400&tokens=40"


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    # Every test here starts battles from 127.0.0.1 within seconds; the limits have their own
    # tests, and the one below that wants a limit sets it.
    settings.ARENA_RATE_START = settings.ARENA_RATE_FOLLOW_UP = settings.ARENA_RATE_VOTE = None


@pytest.fixture
def fast_models(make_model):
    return make_model("Alpha", knobs=FAST), make_model("Bravo", knobs=FAST)


@pytest.fixture
def steady_models(make_model):
    return make_model("Alpha", knobs=STEADY), make_model("Bravo", knobs=STEADY)


@pytest.fixture
def slow_models(make_model):
    return make_model("Alpha", knobs=SLOW), make_model("Bravo", knobs=SLOW)


def test_both_panes_stream_side_by_side_then_show_rendered_markdown_and_stats(
    arena_server, page, slow_models
):
    prompt = "Tell me about arenas"
    start_battle(page, arena_server, prompt)
    for side in "ab":
        expect(pane(page, side).locator(".typing")).to_be_visible()
    final = min(len(generate_text(name, prompt, 60)) for name in ("alpha", "bravo"))

    seen = sample(page, stream_lengths, until=finished)

    # Both panes were partly written at the same moment, and each grew over several samples.
    streaming = [(a, b) for a, b, live in seen if live == 2]
    assert any(0 < a < final * 0.8 and 0 < b < final * 0.8 for a, b in streaming), seen
    for side in (0, 1):
        growth = sorted({lengths[side] for lengths in streaming if lengths[side]})
        assert len(growth) >= 5, f"pane {'ab'[side]} did not grow gradually: {growth}"
    wait_turn_done(page)
    for side in "ab":
        body = pane(page, side).locator(".reply-body")
        expect(body.locator("strong").first).to_be_visible()
        expect(body.locator("li").first).to_be_visible()
        expect(body).not_to_contain_text("**")
        expect(pane(page, side).locator(".typing")).to_have_count(0)
        expect(pane(page, side).locator(".stats")).to_have_text(
            re.compile(r"first token \d+ ms\s+·\s+[\d.]+ tok/s")
        )


def test_a_reload_mid_stream_shows_the_text_so_far_and_finishes_without_repeats(
    arena_server, page, slow_models
):
    prompt = "Explain the tides"
    battle = start_battle(page, arena_server, prompt)
    expected = {
        side: generate_text(model.model.split("?")[0], prompt, 60)
        for side, model in (("a", battle.model_a), ("b", battle.model_b))
    }
    sample(page, stream_lengths, until=lambda lengths: min(lengths[:2]) >= 40)

    page.reload()

    def stream_texts(page):
        return page.evaluate(
            """() => ['a', 'b'].map(side => {
                const el = document.querySelector('.pane-' + side + ' .stream-text');
                return el ? el.textContent : null;
            })"""
        )

    seen = sample(page, stream_texts, until=lambda texts: None in texts, every=0.03)
    # Right after the reload both panes catch up with what was already written; while they
    # keep streaming, each holds a prefix of its answer: nothing lost, nothing repeated.
    streamed = [texts for texts in seen if None not in texts]
    assert any(len(a) >= 40 and len(b) >= 40 for a, b in streamed[:10]), streamed[:10]
    assert any(len(a) < len(expected["a"]) - 40 for a, _ in streamed), "finished too soon"
    for texts in streamed:
        for side, text in zip("ab", texts, strict=True):
            assert expected[side].startswith(text), (side, text, expected[side])
    wait_turn_done(page)
    for reply in wait_turn_finished(battle):
        assert reply.text == expected[reply.side]
        shown = pane(page, reply.side).locator(".reply-body").inner_text()
        assert _words(shown) == _words(reply.text.replace("**", "").replace("\n- ", "\n"))


def _words(text: str) -> list[str]:
    return text.split()


def test_a_follow_up_adds_a_second_turn_that_streams_and_counts_down(
    arena_server, page, steady_models
):
    start_battle(page, arena_server, "Name a colour")
    wait_turn_done(page)
    expect(page.locator(".follow-up")).to_contain_text("9 follow-ups left")

    box = page.get_by_placeholder("Ask both models a follow-up…")
    box.fill("And another one?")
    box.press("Enter")

    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".turn").last.locator(".prompt-bubble")).to_have_text("And another one?")
    for side in "ab":
        expect(pane(page, side, turn=1).locator(".typing")).to_be_visible()
        expect(pane(page, side, turn=1).locator(".stream-text")).not_to_be_empty()
    expect(page.locator(".vote-form")).to_have_count(0)
    wait_turn_done(page)
    for side in "ab":
        expect(pane(page, side, turn=1).locator(".reply-body p").first).to_be_visible()
        expect(pane(page, side, turn=0).locator(".reply-body p").first).to_be_visible()
    expect(page.locator(".follow-up")).to_contain_text("8 follow-ups left")
    assert page.log.console_errors == [] and page.log.page_errors == []


def test_a_vote_by_keyboard_reveals_both_names_and_files_the_session_under_today(
    arena_server, page, fast_models
):
    prompt = "Which is heavier, a kilo of feathers or a kilo of lead?"
    start_battle(page, arena_server, prompt)
    wait_turn_done(page)

    page.keyboard.press("1")

    reveal = page.locator(".reveal")
    expect(reveal).to_be_visible()
    battle = battle_on_page(page)
    expect(reveal.locator(".reveal-side").first).to_contain_text(battle.model_a.name)
    expect(reveal.locator(".reveal-side").last).to_contain_text(battle.model_b.name)
    assert {battle.model_a.name, battle.model_b.name} == {"Alpha", "Bravo"}
    expect(reveal).to_contain_text("A is better")
    expect(page.get_by_role("link", name="New round", exact=True)).to_be_visible()
    expect(page.locator(".vote-form")).to_have_count(0)
    today = page.locator(".sidebar-group", has=page.get_by_role("heading", name="Today"))
    expect(today.get_by_role("link", name=prompt)).to_be_visible()
    battle.refresh_from_db()
    assert battle.vote.choice == "a"


def test_a_second_vote_from_another_tab_says_the_first_one_counted(
    arena_server, new_page, fast_models
):
    first = new_page()
    start_battle(first, arena_server, "Pick a number")
    wait_turn_done(first)
    second = first.context.new_page()
    second.goto(first.url)
    expect(second.locator(".vote-form")).to_be_visible()

    first.keyboard.press("1")
    expect(first.locator(".reveal")).to_contain_text("A is better")
    second.get_by_role("button", name="B is better").click()

    expect(second.get_by_role("alert")).to_have_text("This battle already has your vote.")
    expect(second.locator(".reveal")).to_contain_text("A is better")
    assert battle_on_page(second).vote.choice == "a"


def test_too_many_follow_ups_get_a_slow_down_notice_and_the_form_stays_usable(
    arena_server, page, fast_models, settings
):
    settings.ARENA_RATE_FOLLOW_UP = "1/m"
    start_battle(page, arena_server, "Say hello")
    wait_turn_done(page)
    box = page.get_by_placeholder("Ask both models a follow-up…")
    box.fill("Once more")
    box.press("Enter")
    expect(page.locator(".turn")).to_have_count(2)
    wait_turn_done(page)

    box.fill("And again")
    box.press("Enter")

    expect(page.get_by_role("alert")).to_contain_text("Slow down: try again in")
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.get_by_role("button", name="Send follow-up")).to_be_enabled()
    expect(page.get_by_role("button", name="Tie")).to_be_enabled()


def test_a_failed_side_shows_a_plain_error_and_its_retry_streams_an_answer(
    arena_server, page, llm_server, make_model
):
    make_model("Alpha", knobs=FAST)
    # Bravo takes a second to start: the retried answer cannot be over before the page looks.
    make_model("Bravo", knobs="ttft=1&tps=100&tokens=40")
    prompt = "[[llmtest model=bravo fault=500 fail_times=3]] Why is the sky blue?"
    battle = start_battle(page, arena_server, prompt)
    failed = "a" if battle.model_a.name == "Bravo" else "b"
    ok = "b" if failed == "a" else "a"

    error = pane(page, failed).locator(".pane-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("This side failed.")
    for leak in ("Traceback", "Error(", "status=", "request_id", llm_server, "bravo"):
        assert leak not in error.inner_text(), leak
    expect(pane(page, ok).locator(".reply-body p").first).to_be_visible()
    retry = page.get_by_role("button", name=f"Retry model {failed.upper()}")
    expect(retry).to_be_visible()
    expect(page.locator(".vote-form")).to_have_count(0)
    page.keyboard.press("1")  # the shortcut must not vote either
    expect(page.locator(".reveal")).to_have_count(0)

    retry.click()

    expect(pane(page, failed).locator(".typing")).to_be_visible()
    wait_turn_done(page, timeout=10_000)
    expect(pane(page, failed).locator(".reply-body p").first).to_be_visible()
    page.get_by_role("button", name="B is better").click()
    expect(page.locator(".reveal")).to_contain_text("B is better")
    assert battle_on_page(page).vote.choice == "b"
    assert page.log.console_errors == [] and page.log.page_errors == []


def test_the_page_never_names_the_models_before_the_vote(
    arena_server, page, llm_server, steady_models
):
    battle = start_battle(page, arena_server, "Describe a quiet morning")
    secrets = {llm_server, llm_server.split("//")[1].split("/")[0]}
    for model in (battle.model_a, battle.model_b):
        secrets |= {
            model.name,
            model.organization,
            model.model,
            model.model.split("?")[0],
            model.slug,
        }

    def assert_blind():
        html = page.content().lower()
        for secret in secrets:
            assert secret.lower() not in html, secret
            assert secret.lower() not in page.title().lower(), secret
            assert secret.lower() not in page.url.lower(), secret

    sample(page, stream_lengths, until=lambda lengths: min(lengths[:2]) >= 20)
    assert_blind()  # while streaming
    wait_turn_done(page)
    assert_blind()  # finished, not voted
    page.reload()
    expect(page.locator(".vote-form")).to_be_visible()
    assert_blind()  # the server-rendered page

    page.get_by_role("button", name="Tie").click()
    expect(page.locator(".reveal")).to_contain_text("Alpha")


def test_script_in_a_prompt_or_a_reply_never_runs(arena_server, page, make_model):
    make_model("Alpha", knobs="echo=1&ttft=0.05&tps=30")
    make_model("Bravo", knobs="echo=1&ttft=0.05&tps=30")
    prompt = (
        "<img src=x onerror=alert(1)> <script>alert(2)</script> "
        "[click me](javascript:alert(3)) <a href=javascript:alert(4)>y</a>"
    )
    start_battle(page, arena_server, prompt)
    # The models echo the prompt back as their own text, streamed token by token.
    sample(page, stream_lengths, until=lambda lengths: min(lengths[:2]) >= 60)
    wait_turn_done(page)
    for side in "ab":
        expect(pane(page, side).locator(".reply-body")).to_contain_text("onerror=alert(1)")
        expect(pane(page, side).locator(".reply-body")).to_contain_text("click me")
    pane(page, "a").get_by_text("click me").first.click()  # a defanged link: nothing happens
    page.keyboard.press("4")
    expect(page.locator(".reveal")).to_be_visible()

    assert page.log.dialogs == []
    assert page.log.console_errors == [] and page.log.page_errors == []
    scripts = page.eval_on_selector_all("script", "els => els.map(e => e.getAttribute('src'))")
    assert scripts and all(src and src.startswith("/static/") for src in scripts), scripts
    assert page.locator("img").count() == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator('a[href^="javascript" i]').count() == 0
    assert csp_violations(page) == []


def test_the_battle_page_logs_no_errors_and_breaks_no_content_policy(
    arena_server, page, fast_models
):
    start_battle(page, arena_server, "Write a haiku about code")
    wait_turn_done(page)
    page.get_by_placeholder("Ask both models a follow-up…").fill("Another")
    page.get_by_role("button", name="Send follow-up").click()
    expect(page.locator(".turn")).to_have_count(2)
    wait_turn_done(page)
    page.get_by_role("button", name="Tie").click()
    expect(page.locator(".reveal")).to_be_visible()
    page.reload()
    expect(page.locator(".reveal")).to_be_visible()

    assert page.log.console_errors == []
    assert page.log.page_errors == []
    assert page.log.failed_responses == []
    assert csp_violations(page) == []


def test_on_a_phone_the_panes_stack_and_nothing_overflows(arena_server, new_page, fast_models):
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    start_battle(page, arena_server, "Tell me about arenas")
    wait_turn_done(page)

    a = pane(page, "a").bounding_box()
    b = pane(page, "b").bounding_box()
    assert b["y"] >= a["y"] + a["height"], (a, b)
    assert abs(a["x"] - b["x"]) < 1 and abs(a["width"] - b["width"]) < 1
    assert a["x"] >= 0 and a["x"] + a["width"] <= 390
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    expect(page.locator(".sidebar")).to_be_hidden()
    page.get_by_role("button", name="Show sessions").click()
    expect(page.locator(".sidebar")).to_be_visible()


def test_the_theme_toggle_switches_and_survives_a_reload(arena_server, page, fast_models):
    page.goto(arena_server + "/")
    root = page.locator("html")
    expect(root).to_have_attribute("data-theme", "auto")
    light_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")

    page.get_by_role("button", name="Switch theme").click()

    expect(root).to_have_attribute("data-theme", "dark")
    dark_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert dark_bg != light_bg
    page.reload()
    expect(root).to_have_attribute("data-theme", "dark")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == dark_bg
    page.get_by_role("button", name="Switch theme").click()
    expect(root).to_have_attribute("data-theme", "light")
    page.reload()
    expect(root).to_have_attribute("data-theme", "light")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == light_bg
