"""Helpers for the real-browser tests: one headless Chromium, a fresh context per test.

The Debian `chromium` binary is used as is (no browser download); the flags keep it from
phoning home, so a test run never reaches the internet.
"""

import re
import time
from dataclasses import dataclass, field

from playwright.sync_api import Page, expect

from battles.models import Battle

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

# Runs before any page script: records CSP violations, which the page cannot hide.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
    window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@dataclass
class PageLog:
    """What the page said on its own: console errors, uncaught exceptions, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("response", self._on_response)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("dialog", self._on_dialog)

    def _on_response(self, response) -> None:
        if response.status >= 400:
            request = response.request
            self.failed_responses.append(f"{response.status} {request.method} {request.url}")

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def csp_violations(page: Page) -> list[str]:
    return page.evaluate("() => window.__cspViolations || []")


def start_battle(page: Page, base_url: str, prompt: str) -> Battle:
    """Type the prompt on the home page, press Enter, land on the session page."""
    page.goto(base_url + "/")
    box = page.get_by_role("textbox", name="Your prompt")
    box.fill(prompt)
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"), timeout=TIMEOUT_MS)
    return battle_on_page(page)


def battle_on_page(page: Page) -> Battle:
    """The last battle shown on the page (its section id is `b-<uuid>`)."""
    section_id = page.locator("section.battle").last.get_attribute("id")
    return Battle.objects.select_related("model_a", "model_b").get(uuid=section_id[2:])


def pane(page: Page, side: str, turn: int = -1):
    """Pane A or B of a turn (the last turn by default)."""
    turns = page.locator(".turn")
    chosen = turns.last if turn == -1 else turns.nth(turn)
    return chosen.locator(f".pane-{side}")


def wait_turn_done(page: Page, timeout: int = TIMEOUT_MS) -> None:
    """Both panes of the last turn show a finished answer, and the vote form is offered."""
    for side in "ab":
        expect(pane(page, side).locator(".stats")).to_be_visible(timeout=timeout)
    expect(page.locator(".vote-form")).to_be_visible(timeout=timeout)


def stream_lengths(page: Page) -> list[int]:
    """Length of the text in pane A and pane B of the last turn, and how many still stream."""
    return page.evaluate(
        """() => {
            const turns = document.querySelectorAll('.turn');
            const last = turns[turns.length - 1];
            const lengths = ['a', 'b'].map(side => {
                const body = last && last.querySelector('.pane-' + side + ' .reply-body');
                return body ? body.textContent.length : 0;
            });
            return lengths.concat([last ? last.querySelectorAll('.typing').length : 2]);
        }"""
    )


def finished(lengths: list[int]) -> bool:
    return lengths[2] == 0


def sample(page: Page, probe, *, until, timeout: float = 30.0, every: float = 0.05) -> list:
    """Call probe(page) every few ms until until(value) holds; return all the values seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe(page)
        seen.append(value)
        if until(value):
            return seen
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout} s; last values: {seen[-5:]}")
