"""With DEBUG off, pages name static files through collectstatic's manifest.

Outside Docker nothing else runs collectstatic: `make web` does, and a server started without
the manifest stops at once with one sentence instead of answering every page with a 500.
"""

import shlex
import subprocess
import time

import httpx2
import pytest

from arena.tests.servers import ROOT, _end, _wait_port, arena_env, free_port, manage
from core.checks import static_manifest

pytestmark = pytest.mark.slow

MESSAGE = "Static files have not been collected"


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    return arena_env(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY="static-test-secret-key-" + "k" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        STATIC_ROOT=str(tmp_path / "static"),
        ARENA_DATA_DIR=str(tmp_path / "var"),
        **extra,
    )


def make_web(env: dict[str, str], port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "--no-print-directory", "web", f"WEB_BIND=127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def test_the_check_is_silent_in_the_embedded_default_and_the_tests():
    assert static_manifest() == []


def test_a_production_start_without_collected_static_files_stops_with_one_sentence(tmp_path):
    env = production_env(tmp_path)
    check = subprocess.run(
        [".venv/bin/python", "manage.py", "check", "--deploy"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode != 0 and MESSAGE in check.stderr

    # gunicorn exactly as `make web` starts it, without the collectstatic step before it.
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "web", "WEB_BIND=127.0.0.1:1"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    gunicorn = next(line for line in recipe.stdout.splitlines() if "gunicorn" in line)
    port = free_port()
    started = subprocess.run(
        shlex.split(gunicorn.replace("127.0.0.1:1", f"127.0.0.1:{port}")),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode != 0
    assert MESSAGE in started.stderr and "manage.py collectstatic" in started.stderr
    assert "Traceback" not in started.stderr
    assert started.stderr.count(MESSAGE) == 1


def test_make_web_collects_static_files_and_serves_pages_with_debug_off(tmp_path):
    env = production_env(tmp_path)
    manage(env, "migrate", "--noinput")
    port = free_port()
    log_path = tmp_path / "web.log"
    with log_path.open("w") as log:
        web = make_web(env, port, log)
    try:
        _wait_port(port, web, "make web", timeout=180)
        deadline = time.monotonic() + 60
        while (page := httpx2.get(f"http://127.0.0.1:{port}/", timeout=90)).status_code >= 500:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert page.status_code == 200, log_path.read_text()
        favicon = next(
            part.split('"')[0] for part in page.text.split('href="')[1:] if "favicon" in part
        )
        assert "." in favicon.rsplit("/", 1)[-1].removesuffix(".svg")  # a hashed name
        assert httpx2.get(f"http://127.0.0.1:{port}{favicon}", timeout=10).status_code == 200
    finally:
        _end(web)
