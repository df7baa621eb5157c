"""Pages, static files and live streams on one keep-alive connection, with the arena served as
`make run` serves it (`runarena`: uvicorn) and as the image and compose serve it (gunicorn
with uvicorn workers, DEBUG off).

A browser sends its next request as soon as it has read a response: right after the headers
of a 304, for instance. If that response is not finished on the server yet, uvicorn starts
the next request from inside it, so it used to inherit the previous request's context and a
stream connect answered 500 (`ThreadSensitiveContext has exited`; see core/asgi.py).
"""

import http.client
import re
import socket
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest

from arena.tests.servers import ArenaProcess, arena_env, collect_static, manage
from arena.tests.test_deploy_files import image_command

pytestmark = pytest.mark.slow

ROUNDS = 5
FAST = "ttft=0&tps=400&tokens=12"
PYTHON_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ", re.MULTILINE)


@pytest.fixture(scope="module")
def arena_data(tmp_path_factory, llm_server) -> Path:
    """A database with two models on the test LLM server, shared by the servers below."""
    data = tmp_path_factory.mktemp("data")
    catalog = data / "models.yaml"
    catalog.write_text(
        "models:\n"
        + "".join(
            textwrap.dedent(f"""\
              - id: {name}
                name: {name.title()}
                model: {name}?{FAST}
                base_url: {llm_server}
                api_key_env: null
                organization: {name.title()} Labs
                license: test
                status: active
            """)
            for name in ("alpha", "bravo")
        )
    )
    env = arena_env(ARENA_DATA_DIR=str(data))
    manage(env, "migrate", "--noinput")
    manage(env, "load_models", str(catalog))
    return data


def runarena(data: Path, tmp_path: Path) -> ArenaProcess:
    """`make run` without its llama.cpp servers (the models are the test server's)."""
    command = [sys.executable, "manage.py", "runarena", "--no-local-model", "--port", "{port}"]
    return ArenaProcess(arena_env(ARENA_DATA_DIR=str(data)), log_dir=tmp_path, command=command)


def gunicorn(data: Path, tmp_path: Path) -> ArenaProcess:
    """The image's command line (what compose runs), with one worker, DEBUG off."""
    static_root = tmp_path / "static"
    env = arena_env(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY="keep-alive-test-secret-key-" + "k" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        STATIC_ROOT=str(static_root),
        ARENA_DATA_DIR=str(data),
        WEB_CONCURRENCY="1",
    )
    collect_static(env)
    command = image_command()
    assert command[0] == "gunicorn"
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        *("127.0.0.1:{port}" if arg == "0.0.0.0:8000" else arg for arg in command[1:]),
    ]
    return ArenaProcess(env, log_dir=tmp_path, command=command)


class _Borrowed:
    """Given to HTTPResponse as its socket: each response reads from the connection's one
    buffered reader (pipelined responses follow each other in it) and leaves it open."""

    def __init__(self, reader):
        self._reader = reader

    def makefile(self, *_args):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._reader, name)


class KeepAliveConnection:
    """One HTTP/1.1 connection: requests sent one at a time, or several at once (pipelined)."""

    def __init__(self, port: int, cookie: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.cookie = cookie

    def send(self, *requests: tuple[str, dict[str, str]]) -> None:
        self.sock.sendall(b"".join(self._encode(path, headers) for path, headers in requests))

    def receive(self) -> tuple[int, http.client.HTTPMessage, bytes]:
        response = http.client.HTTPResponse(_Borrowed(self.reader), method="GET")
        response.begin()
        body = response.read()
        return response.status, response.headers, body

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def _encode(self, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", f"Cookie: {self.cookie}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def finished_battle(base_url: str) -> tuple[str, str, str]:
    """Start a battle as a visitor and let it finish: (cookie header, page path, stream path)."""
    with httpx2.Client(base_url=base_url, timeout=30) as client:
        assert client.get("/").status_code == 200  # the visitor and CSRF cookies
        started = client.post(
            "/battle/",
            data={"prompt": "Explain a hash table in two sentences."},
            headers={"X-CSRFToken": client.cookies["csrftoken"]},
        )
        assert started.status_code == 302, started.text[:500]
        page = started.headers["location"]
        battle = re.search(r'id="b-([0-9a-f-]{36})"', client.get(page).text).group(1)
        stream = f"/b/{battle}/turns/0/events/"
        with client.stream("GET", stream) as events:  # ends with the turn
            assert events.status_code == 200
            assert "turn-end" in events.read().decode()
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return cookie, page, stream


@pytest.mark.parametrize("serve", [runarena, gunicorn], ids=["runarena", "gunicorn"])
def test_pages_revalidated_static_files_and_streams_on_one_connection_never_answer_500(
    serve, arena_data, tmp_path
):
    arena = serve(arena_data, tmp_path)
    try:
        arena.start()
        cookie, page, stream = finished_battle(arena.url)
        connection = KeepAliveConnection(arena.port, cookie)
        connection.send((page, {}))
        status, _, html = connection.receive()
        assert status == 200
        # The page's scripts, styles and icon, revalidated as a browser with a cache does.
        assets = []
        for path in dict.fromkeys(re.findall(r'(?:src|href)="(/static/[^"]+)"', html.decode())):
            connection.send((path, {}))
            status, headers, _ = connection.receive()
            assert status == 200, path
            assets.append((path, {"If-None-Match": headers["ETag"]}))
        one_round = [(page, {}), *assets, (stream, {"Accept": "text/event-stream"})]
        expected = [200, *[304] * len(assets), 200]

        seen = []

        def exchange(*requests):
            connection.send(*requests)
            for path, _ in requests:
                status, _, body = connection.receive()
                assert status < 500, f"{path}: {status} (request {len(seen)})\n{arena.log()}"
                seen.append((status, body))

        for _ in range(ROUNDS):  # one request at a time, each sent once the last is read
            for request in one_round:
                exchange(request)
        for _ in range(ROUNDS):  # pipelined: a round's requests written at once
            exchange(*one_round)
        connection.close()
    finally:
        arena.stop()

    log = arena.log()
    assert [status for status, _ in seen] == expected * ROUNDS * 2, log
    assert all(b"turn-end" in body for _, body in seen[len(one_round) - 1 :: len(one_round)])
    assert "Traceback" not in log, log
    assert not PYTHON_WARNING.search(log), log
