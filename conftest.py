"""Shared fixtures: visitors, staff, models on the test LLM server, a live arena, the worker.

Everything is real: the test LLM server speaks HTTP, the arena is served by uvicorn, and in
service mode (REDIS_URL set) a real Celery worker process runs the generation tasks against
the test database.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from core.hub import MemoryHub, get_hub
from core.serving import UVICORN_OPTIONS
from llm_providers.testing import running_server

ROOT = Path(__file__).resolve().parent
SERVICE_MODE = settings.ARENA_TASK_MODE == "celery"


def pytest_collection_modifyitems(config, items):
    if not SERVICE_MODE:
        skip = pytest.mark.skip(reason="needs the Celery worker: runs in the service-mode pass")
        for item in items:
            if "worker" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _memory_hub_emptied():
    """Embedded mode: SQLite hands a rolled-back turn's id to the next test's turn, so a stop
    flag or a stream an earlier test left in the process's memory hub (both keyed by the turn)
    could stop or feed a later test's replies. Each test leaves the hub empty. (PostgreSQL
    never reuses an id, and the Redis hub's keys carry the run's own prefix.)"""
    yield
    hub = get_hub()
    if isinstance(hub, MemoryHub):
        with hub._lock:
            streams, flags = list(hub._streams), list(hub._flags)
        for stream in streams:
            hub.discard(stream)
        for key in flags:
            hub.clear_flag(key)


def pytest_unconfigure(config):
    # The metric samples this run's processes wrote (config/test_settings.py).
    shutil.rmtree(settings.ARENA_METRICS_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def llm_server():
    """Base URL of the project's test LLM server (http://127.0.0.1:<port>/v1)."""
    with running_server() as base_url:
        yield base_url


@pytest.fixture
def make_model(db, llm_server):
    from llm_providers.models import LLMModel

    def make(name: str | None = None, *, knobs: str = "", **fields):
        name = name or f"model-{uuid.uuid4().hex[:6]}"
        upstream = f"{name.lower()}?{knobs}" if knobs else name.lower()
        defaults = {
            "slug": name.lower().replace(" ", "-"),
            "name": name,
            "organization": fields.pop("organization", f"{name} Labs"),
            "license": "test",
            "base_url": llm_server,
            "model": upstream,
            "status": LLMModel.Status.ACTIVE,
        }
        return LLMModel.objects.create(**(defaults | fields))

    return make


@pytest.fixture
def two_models(make_model):
    """Two active models on the test server, fast enough for browser tests."""
    return (
        make_model("Alpha", knobs="ttft=0.05&tps=200&tokens=30"),
        make_model("Bravo", knobs="ttft=0.05&tps=200&tokens=30"),
    )


class _VisitorClient:
    """A Django test client that is one anonymous visitor (its own signed cookie)."""

    def __init__(self):
        from django.test import Client

        self.client = Client()
        self.client.get("/")  # receive the visitor cookie

    def __getattr__(self, name):
        return getattr(self.client, name)

    @property
    def key(self) -> str:
        from django.http import HttpRequest

        from core.visitors import visitor_from_request

        request = HttpRequest()
        request.COOKIES = {k: v.value for k, v in self.client.cookies.items()}
        return visitor_from_request(request).key


@pytest.fixture
def visitor(db):
    return _VisitorClient()


@pytest.fixture
def other_visitor(db):
    return _VisitorClient()


@pytest.fixture
def staff(db, client):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(
        "staff", "staff@example.com", "pw-staff-123", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    client.user = user
    return client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _ErrorRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def arena_server(transactional_db, celery_worker):
    """The arena served by uvicorn (ASGI, so SSE streams) on a free port; yields its URL.

    A test fails if the server logged an error meanwhile (a 5xx, an exception in the app, a
    warning raised there): a browser may retry and hide it, the log does not."""
    import uvicorn

    from config.asgi import application

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            **UVICORN_OPTIONS,
        )
    )
    errors = _ErrorRecords()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "django.request")]
    for logger in loggers:
        logger.addHandler(errors)
    thread = threading.Thread(target=server.run, daemon=True, name="arena-uvicorn")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    for logger in loggers:
        logger.removeHandler(errors)
    formatter = logging.Formatter("%(name)s: %(message)s")
    assert not errors.records, "the arena logged errors:\n" + "\n".join(
        formatter.format(record) for record in errors.records
    )


class WorkerProcess:
    """A real `celery worker` process on the test database (service mode)."""

    def __init__(self, database_name: str):
        db = settings.DATABASES["default"]
        self.env = os.environ | {
            "DJANGO_SETTINGS_MODULE": "config.test_settings",
            "DATABASE_URL": (
                f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{database_name}"
            ),
            # The worker must share this run's namespace (test_settings derives it from the pid).
            "ARENA_REDIS_PREFIX": settings.ARENA_REDIS_PREFIX,
            "ARENA_QUEUE_LLM": settings.ARENA_QUEUE_LLM,
            "ARENA_QUEUE_DEFAULT": settings.ARENA_QUEUE_DEFAULT,
        }
        self.process: subprocess.Popen | None = None
        self.log_path = ROOT / "var" / f"test-worker-{os.getpid()}.log"

    def start(self) -> None:
        from config.celery import app

        self.name = f"test-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                f"{settings.ARENA_QUEUE_LLM},{settings.ARENA_QUEUE_DEFAULT}",
                "-P",
                "threads",
                "-c",
                "16",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                self.name,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[self.name], timeout=0.5):
            assert self.process.poll() is None, f"the Celery worker exited; see {self.log_path}"
            assert time.monotonic() < deadline, "the Celery worker did not answer in 60 s"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()


@pytest.fixture(scope="session")
def _worker_process(django_db_setup, django_db_blocker):
    """Service mode: one real Celery worker process on the test database, for the session."""
    if not SERVICE_MODE:
        # The in-process executor runs in this process: load what it needs first, as the
        # embedded web server does at start (config/warmup.py), so the first reply of the
        # session does not wait for the SDK's import.
        from llm_providers.client import warm_up

        warm_up()
        yield None
        return
    worker = WorkerProcess(settings.DATABASES["default"]["NAME"])
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(_worker_process):
    if _worker_process is not None:
        _worker_process.ensure_running()
    return _worker_process


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; fail with the message after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or "condition not met in time")
