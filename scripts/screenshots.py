"""Screenshots of the leaderboard (with rank fragility) and the transparency report, for the docs.

    make screenshots        # or: .venv/bin/python scripts/screenshots.py [--out DIR]

Builds a throwaway embedded arena in a temporary ARENA_DATA_DIR (SQLite, tasks in process;
DATABASE_URL, REDIS_URL and every ARENA_* variable of the caller are dropped, so no real
database is touched), fills it, serves it with uvicorn and photographs two pages, full page
and 1280 px wide, with Playwright driving Debian's Chromium (the transparency table, wider than
the page's column, scrolled to its left-out votes):

- eight fictional models from a catalog YAML (`load_models`), with known strengths;
- 3,000 votes of the past two months from a generated FastChat dump (`import_battles`) and
  1,500 blind arena battles with their votes (written with the ORM: a dump has no battles),
  drawn from the strengths with 30% ties (a sixth of them both bad);
- something for every column of the report: identity leaks and staff-invalidated votes, one
  prompt asked 40 times (down-sampled), one voter who always picks the weaker model (the
  outlier test), and one model retired afterwards (`load_models` again, with another model's
  weight changed) whose votes are left out (ARENA_RATINGS_EXCLUDE_STATUSES=retired);
- `recompute_ratings`, which also computes the rank fragility.

Seeded, so the figures are the same on every run (the dates follow the day it runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 17
IMPORTED_VOTES = 3_000
ARENA_BATTLES = 1_500
HOT_PROMPT_VOTES = 40
CONTRARIAN_VOTES = 30
VOTERS = 300
RETIRED = "falcon-classic"
REWEIGHTED = "orca-mini"
# slug, public name, organisation, license, true strength on the board's scale (mean ~1000).
MODELS = [
    ("aurora-70b", "Aurora 70B", "Northwind AI", "proprietary", 1135),
    ("nimbus-pro", "Nimbus Pro", "Cirrus Labs", "proprietary", 1122),
    ("kestrel-32b", "Kestrel 32B", "Fjord Research", "Apache-2.0", 1062),
    ("orca-mini", "Orca Mini 14B", "Tidewater", "MIT", 1050),
    ("tern-8b", "Tern 8B", "Fjord Research", "Apache-2.0", 990),
    ("falcon-classic", "Falcon Classic", "Northwind AI", "proprietary", 970),
    ("puffin-chat", "Puffin Chat 7B", "Open Shore", "Apache-2.0", 955),
    ("wren-3b", "Wren 3B", "Open Shore", "MIT", 880),
]
STRENGTH = {slug: strength for slug, *_, strength in MODELS}
NAME = {slug: name for slug, name, *_ in MODELS}
LANGUAGES = ["English"] * 6 + ["Chinese", "German", "Spanish", "French"]
WIDTH = 1280
# name, path, whether to scroll the page's table to its right end first: the transparency table
# is wider than the content column, and its last columns are the left-out votes.
SHOTS = [
    ("leaderboard", "/leaderboard/", False),
    ("transparency", "/leaderboard/transparency/", True),
]


def catalog_yaml(*, retire: bool) -> str:
    """The catalog; with `retire`, one model retired and another's weight changed (as staff
    would), so the report's change list and its retired column have something to show."""
    entries = []
    for slug, name, organization, license_, _ in MODELS:
        entry = {
            "id": slug,
            "name": name,
            "model": slug,
            # Never called: the script only votes and reads the board.
            "base_url": "http://127.0.0.1:9/v1",
            "organization": organization,
            "license": license_,
            "status": "retired" if retire and slug == RETIRED else "active",
        }
        if retire and slug == REWEIGHTED:
            entry["weight"] = 2.0
        entries.append(entry)
    return json.dumps({"models": entries}, indent=2)  # JSON is YAML


def outcome(rng: random.Random, a: str, b: str) -> str:
    """A vote on a against b: 25% tie, 5% both bad, otherwise Bradley-Terry on the strengths."""
    draw = rng.random()
    if draw < 0.25:
        return "tie"
    if draw < 0.30:
        return "bothbad"
    p_a = 1 / (1 + 10 ** ((STRENGTH[b] - STRENGTH[a]) / 400))
    return "a" if rng.random() < p_a else "b"


def style(rng: random.Random, slug: str) -> dict:
    """Reply length and markdown counts: stronger models write a little longer."""
    return {
        "length": max(80, int(rng.gauss(1100 + 2 * (STRENGTH[slug] - 1000), 350))),
        "headers": rng.randint(0, 3),
        "lists": rng.randint(0, 6),
        "bold": rng.randint(0, 4),
    }


def dump_lines(rng: random.Random, slugs: list[str]) -> list[str]:
    """IMPORTED_VOTES lines of FastChat's clean_battle format over the past 60 days."""
    winners = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
    now = time.time()
    lines = []
    for i in range(IMPORTED_VOTES):
        a, b = rng.sample(slugs, 2)
        metadata = {"first_prompt_chars": rng.randint(20, 1500)}
        for side, slug in (("a", a), ("b", b)):
            features = style(rng, slug)
            metadata |= {
                f"sum_assistant_{side}_chars": features["length"],
                f"header_count_{side}": features["headers"],
                f"list_count_{side}": features["lists"],
                f"bold_count_{side}": features["bold"],
            }
        line = {
            "question_id": f"screenshot-{i}",
            "model_a": NAME[a],
            "model_b": NAME[b],
            "winner": winners[outcome(rng, a, b)],
            "judge": f"judge-{rng.randrange(VOTERS)}",
            "turn": rng.choice([1, 1, 1, 2]),
            "anony": True,
            "language": rng.choice(LANGUAGES),
            "tstamp": now - rng.uniform(1, 60) * 86400,
            "is_code": rng.random() < 0.2,
            "conv_metadata": metadata,
        }
        lines.append(json.dumps(line) + "\n")
    return lines


def arena_votes_write(rng: random.Random) -> None:
    """ARENA_BATTLES blind battles, each voted on by one of VOTERS visitors; the first
    HOT_PROMPT_VOTES share one prompt, the last CONTRARIAN_VOTES come from one voter who
    always picks the weaker model."""
    from django.utils import timezone

    from battles.models import Battle, Conversation, Mode, Vote
    from core.visitors import salted_hash
    from llm_providers.models import LLMModel

    models = LLMModel.objects.in_bulk(STRENGTH, field_name="slug")
    slugs = list(STRENGTH)
    draws = []
    for i in range(ARENA_BATTLES):
        a, b = rng.sample(slugs, 2)
        if i >= ARENA_BATTLES - CONTRARIAN_VOTES:
            visitor, choice = "contrarian", "a" if STRENGTH[a] < STRENGTH[b] else "b"
        else:
            visitor, choice = f"visitor-{rng.randrange(VOTERS)}", outcome(rng, a, b)
        prompt = "hello" if i < HOT_PROMPT_VOTES else f"question {i}"
        draws.append((a, b, salted_hash(visitor), choice, prompt))
    conversations = Conversation.objects.bulk_create(
        Conversation(owner_key=visitor, title=prompt) for _, _, visitor, _, prompt in draws
    )
    battles = Battle.objects.bulk_create(
        Battle(
            conversation=conversation,
            owner_key=visitor,
            mode=Mode.BLIND,
            model_a=models[a],
            model_b=models[b],
            status=Battle.Status.VOTED,
            pair_probability=1 / (len(slugs) * (len(slugs) - 1)),
            visitor_hash=visitor,
            turn_count=1,
            voted_at=timezone.now(),
        )
        for conversation, (a, b, visitor, _, _) in zip(conversations, draws, strict=True)
    )
    Vote.objects.bulk_create(
        Vote(
            battle=battle,
            choice=choice,
            model_a=models[a],
            model_b=models[b],
            prompt_chars=len(prompt),
            language="en",
            style={"a": style(rng, a), "b": style(rng, b)},
            visitor_hash=visitor,
            prompt_hash=hashlib.sha256(prompt.encode()).hexdigest(),
        )
        for battle, (a, b, visitor, choice, prompt) in zip(battles, draws, strict=True)
    )


def flags_mark(rng: random.Random) -> None:
    """A few votes of each table marked as the identity-leak detector and staff would."""
    from battles.models import Vote
    from leaderboard.models import ImportedVote

    for table in (Vote, ImportedVote):
        ids = list(table.objects.values_list("pk", flat=True))
        leaks, invalid = rng.sample(ids, 12), rng.sample(ids, 8)
        table.objects.filter(pk__in=leaks).update(identity_leak=True)
        table.objects.filter(pk__in=invalid).update(flagged_invalid=True)


def arena_fill(data_dir: Path) -> None:
    from django.core.management import call_command

    rng = random.Random(SEED)
    catalog = data_dir / "models.yaml"
    dump = data_dir / "battles.jsonl"
    call_command("migrate", verbosity=0)
    catalog.write_text(catalog_yaml(retire=False))
    call_command("load_models", str(catalog))
    dump.write_text("".join(dump_lines(rng, list(STRENGTH))))
    call_command("import_battles", str(dump))
    arena_votes_write(rng)
    flags_mark(rng)
    catalog.write_text(catalog_yaml(retire=True))
    call_command("load_models", str(catalog))
    call_command("recompute_ratings")


def arena_environment(data_dir: Path) -> None:
    """The embedded default in `data_dir`, whatever the caller's environment says."""
    for name in list(os.environ):
        if name.startswith(("ARENA_", "DJANGO_")) or name in (
            "DATABASE_URL",
            "REDIS_URL",
            "STATIC_ROOT",
            "SECRET_KEY",
            "DEBUG",
        ):
            del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ARENA_DATA_DIR=str(data_dir),
        STATIC_ROOT=str(data_dir / "static"),
        ARENA_RATINGS_EXCLUDE_STATUSES="retired",
        LOG_LEVEL="WARNING",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int, log: Path) -> subprocess.Popen:
    """uvicorn on the arena, as the tests start it; returns once /healthz answers."""
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--no-proxy-headers",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"uvicorn did not answer within 60 s:\n{log.read_text()}")


def photograph(base_url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from battles.tests.browser import CHROMIUM, LAUNCH_ARGS

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": 800}, color_scheme="light")
        for name, path, scroll_table in SHOTS:
            response = page.goto(base_url + path, wait_until="networkidle")
            if response is None or response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response and response.status}")
            if scroll_table:
                page.locator(".board-wrap").evaluate("box => { box.scrollLeft = box.scrollWidth; }")
            # A window as tall as the page: the sticky sidebar is one window high.
            height = page.evaluate("document.documentElement.scrollHeight")
            page.set_viewport_size({"width": WIDTH, "height": height})
            file = out / f"{name}.png"
            page.screenshot(path=file, full_page=True)
            page.set_viewport_size({"width": WIDTH, "height": 800})
            print(f"{file}: {file.stat().st_size // 1024} KB")
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arena-screenshots-") as tmp:
        data_dir = Path(tmp)
        arena_environment(data_dir)
        sys.path.insert(0, str(ROOT))
        import django
        from django.db import connections

        django.setup()
        arena_fill(data_dir)
        connections.close_all()
        port = free_port()
        server = serve(port, data_dir / "uvicorn.log")
        try:
            photograph(f"http://127.0.0.1:{port}", args.out.resolve())
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
