"""Throwaway services for fault tests: a Redis, a PostgreSQL cluster, the arena in a process.

The machine's own PostgreSQL and Redis are shared with other test runs, so tests that stop a
service start their own copy on a free port and stop only that. Everything listens on
127.0.0.1, every wait is bounded, and every process is ended by its own id.
"""

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
# The settings the arena process must not inherit from the test run's environment.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "ARENA_TASK_MODE", "ARENA_HUB")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _end(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def _wait_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.settimeout(0.5)
            sock.connect(("127.0.0.1", port))
            return
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{what} did not listen on {port} in {timeout} s"
        time.sleep(0.05)


class RedisServer:
    """A redis-server of our own, without persistence; stop() and start() keep the port."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.port, self.process, "redis-server")

    def stop(self) -> None:
        if self.process is not None:
            _end(self.process)


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory (initdb runs as `postgres`)."""

    def __init__(self):
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert binaries, "PostgreSQL's initdb is not installed"
        self.bin = Path(binaries[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="arena-pg-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def create(self) -> None:
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            "stop",
        )

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def arena_env(**overrides: str) -> dict[str, str]:
    """The test run's environment without its service settings, plus the overrides."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    return (
        env
        | {"DJANGO_SETTINGS_MODULE": "config.test_settings", "PYTHONUNBUFFERED": "1"}
        | (overrides)
    )


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class ArenaProcess:
    """The arena under uvicorn in its own process (or processes, with workers > 1), or under
    another server's command line (`{port}` in it is replaced by the port)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 1,
        log_dir: Path | None = None,
        command: list[str] | None = None,
    ):
        self.env = env
        self.workers = workers
        self.command = command
        self.port = free_port()
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="arena-log-"))) / "arena.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("a") as log:
            command = [arg.replace("{port}", str(self.port)) for arg in self.command or []]
            self.process = subprocess.Popen(
                command
                or [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--lifespan",
                    "off",
                    # As every server the arena starts (core/serving.py): the client address
                    # is core.visitors.client_ip's to decide.
                    "--no-proxy-headers",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port(self.port, self.process, "the arena", timeout=60)
        # With several workers the port answers before every worker has loaded Django; under
        # gunicorn it is open before any worker has (the first request waits for one).
        deadline = time.monotonic() + 60
        while (
            httpx2.get(f"{self.url}/healthz", timeout=max(1.0, deadline - time.monotonic()))
        ).status_code >= 500:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            _end(self.process)


class CeleryWorker:
    """A `celery worker` process on the given environment's database and broker."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_path = log_dir / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # The queues the arena publishes to under this environment (see config/settings.py).
        queues = ",".join(
            (self.env.get("ARENA_QUEUE_LLM", "llm"), self.env.get("ARENA_QUEUE_DEFAULT", "default"))
        )
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    queues,
                    "-P",
                    "threads",
                    "-c",
                    "4",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"faults-{free_port()}@%h",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while " ready." not in self.log_path.read_text():
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "the Celery worker was not ready in 60 s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            _end(self.process)


def collect_static(env: dict[str, str]) -> None:
    """Production settings serve hashed static names: build the manifest they need."""
    manage(env, "collectstatic", "--noinput", timeout=180)
