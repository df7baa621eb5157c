"""Every page fits its window, from a phone to a wide screen, in real headless Chromium.

The widest content the site has: a leaderboard of many models with long names (a wide table
and wide matrices), the reveal naming them after a vote, the phone drawer and session menu.
Admin pages are Django's own and are left out.
"""

import itertools
import re
import uuid
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from playwright.sync_api import Page, expect

from battles.models import Battle, Conversation, Vote
from battles.tests.browser import battle_on_page, csp_violations, pane, start_battle, wait_turn_done
from leaderboard import recompute

pytestmark = pytest.mark.browser

WIDTHS = [390, 768, 1280, 1920]
PHONE = 390
FAST = "ttft=0.05&tps=400&tokens=40"
# The one font the install script puts on a bare machine (fonts-dejavu-core): a label made of
# characters outside it shows as empty boxes there.
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FAMILIES = [
    "Meta Llama 3.1",
    "Mistral Large",
    "Qwen 2.5",
    "Gemma 3",
    "Phi 4",
    "DeepSeek V3",
    "Command R Plus",
    "Granite 3.1",
]

# What the page measures: its own width against the window's, the boxes that must stay inside
# it, and every chart label that must stay inside its chart.
MEASURE = """(width) => {
    // A phone zooms out to show a page wider than itself (innerWidth grows): measure against
    // the window the page was given.
    const inner = Math.min(window.innerWidth, width);
    const out = [];
    const right = (el) => el.getBoundingClientRect().right;
    for (const el of document.querySelectorAll('.topbar, .board-wrap, svg.plot, .reveal, .pane')) {
        if (el.getClientRects().length && right(el) > inner + 0.5) {
            out.push(`${el.getAttribute('class')} ends at ${right(el)}`);
        }
    }
    for (const icon of document.querySelectorAll('.icon')) {
        const box = icon.getBoundingClientRect();
        if (icon.getClientRects().length
            && (box.width < 8 || getComputedStyle(icon).maskImage === 'none')) {
            out.push(`icon ${icon.getAttribute('class')} is not drawn`);
        }
    }
    for (const svg of document.querySelectorAll('svg.plot')) {
        const box = svg.getBoundingClientRect();
        for (const text of svg.querySelectorAll('text')) {
            const r = text.getBoundingClientRect();
            if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
                || r.bottom > box.bottom + 1) {
                out.push(`label "${text.textContent}" clipped in ${svg.getAttribute('class')}`);
            }
        }
    }
    return {
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: inner,
        outside: out,
    };
}"""

# The visible text of every control, with what CSS adds before and after it.
CONTROL_LABELS = """() => {
    const labels = [];
    const pseudo = (el, which) => {
        const content = getComputedStyle(el, which).content;
        return content && content !== 'none' && content !== 'normal'
            ? content.replace(/^"|"$/g, '') : '';
    };
    for (const el of document.querySelectorAll('button, a, summary, label, [role=button]')) {
        if (!el.getClientRects().length) continue;
        labels.push(pseudo(el, '::before') + el.innerText + pseudo(el, '::after'));
    }
    return labels;
}"""


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    settings.ARENA_RATE_START = settings.ARENA_RATE_FOLLOW_UP = settings.ARENA_RATE_VOTE = None


def _vote(model_a, model_b, choice: str, length: int) -> None:
    owner = f"v:{uuid.uuid4()}"
    conversation = Conversation.objects.create(owner_key=owner, title="Crowd")
    battle = Battle.objects.create(
        conversation=conversation,
        owner_key=owner,
        model_a=model_a,
        model_b=model_b,
        status=Battle.Status.VOTED,
        pair_probability=0.5,
        visitor_hash=uuid.uuid4().hex,
    )
    style = {"length": length, "headers": length % 3, "lists": 1, "bold": length % 2}
    Vote.objects.create(
        battle=battle,
        choice=choice,
        model_a=model_a,
        model_b=model_b,
        visitor_hash=battle.visitor_hash,
        style={"a": style, "b": style | {"length": 300}},
    )


@pytest.fixture
def crowded_board(make_model):
    """Sixteen models with long names, all active and fast, rated over two snapshots."""
    models = [
        make_model(
            f"{family} {size} Instruct Extended Context Preview",
            knobs=FAST,
            slug=f"crowd-{k}",
            organization="Northwind Research Laboratories International",
            license="Community License Agreement v2",
        )
        for k, (family, size) in enumerate(itertools.product(FAMILIES, ["70B", "8B"]))
    ]
    lengths = itertools.count(100, 7)
    for round_ in range(2):
        for i, j in itertools.combinations(range(len(models)), 2):
            choices = ["a", "a", "b"] if i < j - 3 else ["b", "tie", "a"]
            for choice in choices[: 2 + round_]:
                _vote(models[i], models[j], choice, next(lengths))
        recompute.ratings_recompute()
    return models


def _problems(page: Page, where: str, covered: set[int]) -> list[str]:
    found = page.evaluate(MEASURE, page.viewport_size["width"])
    problems = [f"{where}: {problem}" for problem in found["outside"]]
    if found["scrollWidth"] > found["innerWidth"]:
        problems.append(
            f"{where}: the page is {found['scrollWidth']} px wide in a "
            f"{found['innerWidth']} px window"
        )
    for label in page.evaluate(CONTROL_LABELS):
        missing = sorted({ch for ch in label if not ch.isspace() and ord(ch) not in covered})
        if missing:
            problems.append(f"{where}: control {label.strip()!r} needs a font for {missing}")
    return problems


def visit_every_page(page: Page, base_url: str, seen) -> None:
    """Walk the site as a visitor does, calling seen(name) on each page worth measuring."""
    page.goto(base_url + "/")
    seen("home")
    start_battle(page, base_url, "Compare two sorting algorithms in a short table")
    wait_turn_done(page)
    seen("battle")
    if page.viewport_size["width"] <= PHONE:
        menu = page.locator(".session-menu summary")
        menu.click()
        expect(page.locator("#rename-title")).to_be_visible()
        # The rename field shows a useful part of the title, not its first few letters.
        assert page.locator("#rename-title").bounding_box()["width"] >= 200
        seen("session-menu")
        menu.click()
        page.get_by_role("button", name="Show sessions").click()
        expect(page.locator(".sidebar")).to_be_visible()
        # The drawer starts right under the top bar: no strip of the page shows between them.
        bar, drawer = (
            page.locator(".topbar").bounding_box(),
            page.locator(".sidebar").bounding_box(),
        )
        assert abs(drawer["y"] - (bar["y"] + bar["height"])) < 1, (bar, drawer)
        seen("drawer")
        page.get_by_role("button", name="Show sessions").click()
    page.get_by_role("button", name="A is better").click()
    expect(page.locator(".reveal")).to_be_visible()
    seen("voted")
    page.goto(base_url + "/leaderboard/")
    expect(page.locator("svg.plot-heatmap").first).to_be_visible()
    seen("leaderboard")
    page.locator("table.board tbody a").first.click()
    expect(page).to_have_url(re.compile(r"/leaderboard/m/crowd-\d+/$"))
    expect(page.locator("svg.plot-history")).to_be_visible()
    seen("model")


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_its_window_and_its_controls_need_no_extra_font(
    arena_server, new_page, crowded_board, width
):
    covered = set(TTFont(FONT).getBestCmap())
    phone = {"is_mobile": True, "has_touch": True} if width <= PHONE else {}
    page = new_page(viewport={"width": width, "height": 900}, **phone)
    problems: list[str] = []

    visit_every_page(
        page, arena_server, lambda where: problems.extend(_problems(page, where, covered))
    )

    assert not problems, "\n".join(problems)
    assert page.log.failed_responses == []
    assert csp_violations(page) == []


def test_the_board_table_scrolls_inside_its_box_on_a_phone(arena_server, new_page, crowded_board):
    page = new_page(viewport={"width": PHONE, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(arena_server + "/leaderboard/")
    wrap = page.locator(".board-wrap").first
    last_header = page.get_by_role("columnheader", name="Style-controlled rank")

    assert wrap.evaluate("el => el.scrollWidth > el.clientWidth")
    wrap.evaluate("el => { el.scrollLeft = el.scrollWidth; }")

    box, header = wrap.bounding_box(), last_header.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE
    assert box["x"] <= header["x"] and header["x"] + header["width"] <= box["x"] + box["width"]


def test_the_transparency_table_keeps_its_model_names_in_view_as_it_scrolls(
    arena_server, new_page, crowded_board
):
    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(arena_server + "/leaderboard/transparency/")
    wrap = page.locator(".board-wrap")
    name = page.locator("table.report td.model a").first
    last_header = page.get_by_role("columnheader", name="outlier voter")

    assert wrap.evaluate("el => el.scrollWidth > el.clientWidth")
    # The window down to the table (elementFromPoint sees only the window), then the table to
    # its last column.
    wrap.evaluate("el => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY)")
    wrap.evaluate("el => { el.scrollLeft = el.scrollWidth; }")

    box, link, header = wrap.bounding_box(), name.bounding_box(), last_header.bounding_box()
    assert box["x"] <= link["x"] and link["x"] + link["width"] <= header["x"]
    assert header["x"] + header["width"] <= box["x"] + box["width"]
    # The name's cell is on top, not under the columns scrolled beneath it.
    centre = (link["x"] + link["width"] / 2, link["y"] + link["height"] / 2)
    on_top = "(a, [x, y]) => a.closest('td').contains(document.elementFromPoint(x, y))"
    assert name.evaluate(on_top, centre)


def test_after_the_vote_each_pane_names_its_model(arena_server, new_page, crowded_board):
    page = new_page(viewport={"width": PHONE, "height": 844}, is_mobile=True, has_touch=True)
    start_battle(page, arena_server, "Name a colour")
    wait_turn_done(page)
    battle = battle_on_page(page)
    for side in "ab":
        expect(pane(page, side).locator(".pane-model")).to_have_count(0)

    page.get_by_role("button", name="Tie").click()

    for side, model in (("a", battle.model_a), ("b", battle.model_b)):
        expect(pane(page, side).locator(".pane-model")).to_have_text(model.name)
        reveal_side = page.locator(f".reveal-{side}")
        expect(reveal_side.locator(".reveal-name")).to_have_text(model.name)
        name = reveal_side.locator(".reveal-name").bounding_box()
        label = reveal_side.locator(".reveal-label").bounding_box()
        # The label stays whole on its own line; the name starts at its own line's left edge.
        assert label["height"] < 30 and name["y"] >= label["y"] + label["height"] - 1


def test_admin_lists_keep_every_column_in_view_and_pages_have_an_icon(
    arena_server, new_page, crowded_board, django_user_model
):
    django_user_model.objects.create_user(
        "boss", password="pw-boss-123", is_staff=True, is_superuser=True
    )
    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(arena_server + "/admin/login/")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill("pw-boss-123")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Replies", exact=True)).to_be_visible()

    page.goto(arena_server + "/admin/llm_providers/llmmodel/")

    filters = page.locator("#changelist-filter").bounding_box()
    for header in page.locator("#result_list thead th").all():
        box = header.bounding_box()
        assert box["x"] + box["width"] <= filters["x"], (header.inner_text(), box, filters)
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(arena_server + icon).status == 200
