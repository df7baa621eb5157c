"""One rule for the client address, whichever way the arena is served.

uvicorn, and gunicorn's uvicorn worker, used to take the client address from X-Forwarded-For
whenever the peer was 127.0.0.1, before the arena's own `client_ip` saw the request: anyone
on the host could invent an address per request and never meet the per-IP start limit. Each
server here is started the way the project starts it (`runarena`, the image's gunicorn
command, `make web`, the test servers) with ARENA_TRUSTED_PROXIES=127.0.0.2, and asked
over real connections from two loopback peers: 127.0.0.1, which the servers' old defaults
believed, and 127.0.0.2, the trusted proxy.
"""

import http.client
import re
import sys
import uuid
from pathlib import Path

import pytest

from arena.tests.servers import ArenaProcess, arena_env, collect_static, manage
from arena.tests.test_deploy_files import image_command

UNTRUSTED = "127.0.0.1"
PROXY = "127.0.0.2"
# An unusual window, so no other test's start counts share these counters.
RATE = "3/7m"
LIMIT = 3


def _request(
    port: int, method: str, *, source: str, headers: dict[str, str], body: str = ""
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    connection.request(method, "/" if method == "GET" else "/battle/", body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def csrf_token(port: int) -> str:
    response = _request(port, "GET", source=UNTRUSTED, headers={"Host": "127.0.0.1"})
    assert response.status == 200
    cookies = "\n".join(response.headers.get_all("Set-Cookie"))
    return re.search(r"csrftoken=([^;]+)", cookies).group(1)


def start_status(port: int, csrf: str, *, source: str, forwarded: str) -> int:
    """POST /battle/ as a new visitor (no visitor cookie) claiming to be `forwarded`.

    The start limit counts the request before the view runs, so an empty prompt (refused,
    nothing written) is enough to see which address the arena counted."""
    headers = {
        "Host": "127.0.0.1",
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"csrftoken={csrf}",
        "X-CSRFToken": csrf,
        "X-Forwarded-For": forwarded,
    }
    return _request(port, "POST", source=source, headers=headers, body="prompt=").status


def assert_one_rule(port: int) -> None:
    csrf = csrf_token(port)
    run = uuid.uuid4().int % 200
    # A forged header from an untrusted peer changes nothing: every request counts for the peer.
    forged = [
        start_status(port, csrf, source=UNTRUSTED, forwarded=f"198.51.100.{run + i}")
        for i in range(LIMIT + 2)
    ]
    assert [status == 429 for status in forged] == [False] * LIMIT + [True, True], forged
    # The trusted proxy's header is honoured: one client per forwarded address...
    clients = [
        start_status(port, csrf, source=PROXY, forwarded=f"203.0.113.{run + i}")
        for i in range(LIMIT + 2)
    ]
    assert 429 not in clients, clients
    # ...and that address has its own budget, spent by repeated requests through the proxy.
    repeated = [
        start_status(port, csrf, source=PROXY, forwarded=f"192.0.2.{run}, 10.9.8.7")
        for _ in range(LIMIT + 1)
    ]
    assert [status == 429 for status in repeated] == [False] * LIMIT + [True], repeated


def server_env(data: Path, **extra: str) -> dict[str, str]:
    return arena_env(
        ARENA_DATA_DIR=str(data),
        ARENA_TRUSTED_PROXIES=PROXY,
        ARENA_RATE_START=RATE,
        **extra,
    )


def production_env(data: Path, static_root: Path) -> dict[str, str]:
    return server_env(
        data,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY="client-address-test-secret-key-" + "k" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        STATIC_ROOT=str(static_root),
        WEB_CONCURRENCY="1",
    )


@pytest.fixture(scope="module")
def arena_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    manage(server_env(data), "migrate", "--noinput")
    return data


@pytest.fixture(scope="module")
def static_root(tmp_path_factory, arena_data) -> Path:
    root = tmp_path_factory.mktemp("static")
    collect_static(production_env(arena_data, root))
    return root


def runarena(data: Path, static_root: Path, tmp_path: Path) -> ArenaProcess:
    command = [sys.executable, "manage.py", "runarena", "--no-local-model", "--port", "{port}"]
    return ArenaProcess(server_env(data), log_dir=tmp_path, command=command)


def image(data: Path, static_root: Path, tmp_path: Path) -> ArenaProcess:
    """The image's CMD (what compose runs for web), DEBUG off."""
    command = image_command()
    assert command[0] == "gunicorn"
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        *("127.0.0.1:{port}" if arg == "0.0.0.0:8000" else arg for arg in command[1:]),
    ]
    return ArenaProcess(production_env(data, static_root), log_dir=tmp_path, command=command)


def make_web(data: Path, static_root: Path, tmp_path: Path) -> ArenaProcess:
    """`make web`, as written in the Makefile (it collects the static files itself)."""
    command = ["make", "--no-print-directory", "web", "WEB_BIND=127.0.0.1:{port}"]
    return ArenaProcess(production_env(data, static_root), log_dir=tmp_path, command=command)


def uvicorn_cli(data: Path, static_root: Path, tmp_path: Path) -> ArenaProcess:
    """The uvicorn command the fault and load tests start (arena/tests/servers.py)."""
    return ArenaProcess(server_env(data), log_dir=tmp_path)


@pytest.mark.parametrize(
    "serve",
    [runarena, image, make_web, uvicorn_cli],
    ids=["runarena", "image-gunicorn", "make-web", "test-servers"],
)
def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing_and_a_proxys_is_believed(
    serve, arena_data, static_root, tmp_path
):
    arena = serve(arena_data, static_root, tmp_path)
    try:
        arena.start()
        assert_one_rule(arena.port)
    finally:
        arena.stop()
    assert "Traceback" not in arena.log(), arena.log()


def test_the_in_process_test_server_follows_the_same_rule(arena_server, settings):
    settings.ARENA_TRUSTED_PROXIES = [PROXY]
    settings.ARENA_RATE_START = RATE
    assert_one_rule(int(arena_server.rsplit(":", 1)[1]))
