"""Load benchmark of the arena in service mode on this machine (see README.md beside this file).

Starts, on free ports on 127.0.0.1: the test LLM server, a throwaway PostgreSQL database
(`llmbattler_bench`, dropped at the end), gunicorn with uvicorn workers, and a Celery worker,
all in a dedicated Redis namespace; then runs locust headless for each visitor count, the
direct-client comparison, the 2,000,000-vote leaderboard and the idle-SSE test, and prints a
table. Every process it starts is in its own process group and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import synthetic
from benchmarks.synthetic import filler

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(sys.executable).parent
DB_NAME = "llmbattler_bench"
REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = "bench"
QUEUES = ("bench-llm", "bench-default")
TTFT, TPS, TOKENS = 0.3, 40.0, 120
# The slow model of issue 19: a 30-second answer, as hosted models often take.
SLOW_TPS, SLOW_TOKENS = 2.0, 60
# The hold check's answers last 90 s, so every reply of the burst streams at once however
# long the web takes to start them all (about 40 s for 500 battles here).
HOLD_TOKENS = 180
N_MODELS = 6
EVENTS_RE = re.compile(r'sse-connect="(/b/[0-9a-f-]{36}/turns/0/events/)"')


def knobs(ttft=TTFT, tps=TPS, tokens=TOKENS) -> str:
    return f"ttft={ttft}&tps={tps:g}&tokens={tokens}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def cpu_per_battle(samples: list[float], battles: int) -> float | None:
    """CPU milliseconds per completed battle: the samples are % of one core, one a second."""
    if not samples or not battles:
        return None
    return sum(samples) / 100 * 1000 / battles


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes -------------------------------------------------------------------------------


class Processes:
    """Every child in its own session (process group); stopped group by group, by pid."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)


def run(cmd: list[str], env: dict, timeout: float = 600) -> str:
    result = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if httpx2.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


# --- database and redis ------------------------------------------------------------------------


def redis_clear() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    patterns = [f"{PREFIX}:*", f":1:{PREFIX}*", f"{PREFIX}*", "_kombu.binding.bench-*"]
    patterns += [f"{q}*" for q in QUEUES]
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


def bench_sql(sql: str, params=None, fetch: bool = False):
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}", autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if fetch else None


# --- resource sampling -------------------------------------------------------------------------


@dataclass
class Samples:
    web_cpu: list[float] = field(default_factory=list)  # % of one core, all web workers
    worker_cpu: list[float] = field(default_factory=list)
    web_rss: list[float] = field(default_factory=list)  # MB, largest web worker
    worker_rss: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)  # the test server and locust


class Sampler(threading.Thread):
    def __init__(self, web: subprocess.Popen, workers, others):
        super().__init__(daemon=True)
        self.web, self.workers, self.others = web, workers, others
        self.samples = Samples()
        self.stopped = threading.Event()
        self._procs: dict[int, psutil.Process] = {}

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        # Keep Process objects so cpu_percent() measures since the previous sample.
        out = []
        for p in procs:
            out.append(self._procs.setdefault(p.pid, p))
        return out

    def _measure(self, procs, rss_of_children: bool):
        cpu, rss = 0.0, 0.0
        for i, p in enumerate(procs):
            try:
                cpu += p.cpu_percent(None)
                if not rss_of_children or i > 0:
                    rss = max(rss, p.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass
        return cpu, rss

    def reset(self) -> Samples:
        old, self.samples = self.samples, Samples()
        return old

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            web_cpu, web_rss = self._measure(self._tree(self.web.pid), rss_of_children=True)
            w_cpu, w_rss = 0.0, 0.0
            for worker in self.workers():
                cpu, rss = self._measure(self._tree(worker.pid), rss_of_children=False)
                w_cpu, w_rss = w_cpu + cpu, max(w_rss, rss)
            o_cpu = sum(self._measure(self._tree(p.pid), False)[0] for p in self.others())
            s = self.samples
            s.web_cpu.append(web_cpu)
            s.web_rss.append(web_rss)
            s.worker_cpu.append(w_cpu)
            s.worker_rss.append(w_rss)
            s.other_cpu.append(o_cpu)


# --- direct client (the physical limit of the pipeline) ----------------------------------------


class DirectProbe(threading.Thread):
    """Streams straight from the test server with the `openai` client while a step runs."""

    def __init__(self, base_url: str, concurrency: int):
        super().__init__(daemon=True)
        self.base_url, self.concurrency = base_url, concurrency
        self.ttft_overhead: list[float] = []
        self.rates: list[float] = []
        self.errors = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _one(self, client) -> None:
        t0 = time.perf_counter()
        first = last = None
        n = 0
        stream = await client.chat.completions.create(
            model=f"bench-direct?{knobs()}",
            messages=[{"role": "user", "content": "compare rivers and tides"}],
            stream=True,
        )
        first_n = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                words = len(chunk.choices[0].delta.content.split())
                if first is None:
                    first, first_n = now, words
                last = now
                n += words
        if first is not None:
            self.ttft_overhead.append((first - t0 - TTFT) * 1000)
            if n > first_n and last > first:
                self.rates.append((n - first_n) / (last - first))

    async def _loop(self, client) -> None:
        while not self.stopped.is_set():
            try:
                await self._one(client)
            except Exception:
                self.errors += 1
                await asyncio.sleep(0.5)

    async def _main(self) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key="bench", max_retries=0)
        await asyncio.gather(*(self._loop(client) for _ in range(self.concurrency)))
        await client.close()


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Step:
    users: int
    label: str
    seconds: float
    load: str = ""
    minutes: float = 0
    battles: int = 0
    votes_ok: int = 0
    votes_db: int = 0
    errors: int = 0
    streams_max: int = 0
    lat: dict = field(default_factory=dict)
    ttft: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    direct_ttft: list = field(default_factory=list)
    direct_rates: list = field(default_factory=list)
    direct_errors: int = 0
    res: Samples | None = None
    error_kinds: dict = field(default_factory=dict)
    queue_ms: list = field(default_factory=list)  # reply created -> claimed by a worker
    worker_ttft_ms: list = field(default_factory=list)  # claimed -> first token (worker's view)
    delivery_ms: list = field(default_factory=list)  # first delta published -> read by the client
    complete_ms: list = field(default_factory=list)  # POST -> the turn's turn-end on the page
    slow: bool = False  # a step on the slow model (SLOW_TPS), short journey


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="llmbattler-load-"))
        self.procs = Processes(self.tmp)
        self.llm_port, self.web_port = free_port(), free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.llm_url = f"http://127.0.0.1:{self.llm_port}/v1"
        self.env = self._env()
        self.steps: list[Step] = []
        self.extra: dict = {}
        self.locust: subprocess.Popen | None = None

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ARENA_"))}
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DEBUG="false",
            SECRET_KEY="".join(secrets.choice(alphabet) for _ in range(50)),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="false",
            SECURE_COOKIES="false",
            SECURE_HSTS_SECONDS="0",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
            REDIS_URL=REDIS_URL,
            ARENA_REDIS_PREFIX=PREFIX,
            ARENA_QUEUE_LLM=QUEUES[0],
            ARENA_QUEUE_DEFAULT=QUEUES[1],
            ARENA_DATA_DIR=str(self.tmp / "var"),
            STATIC_ROOT=str(self.tmp / "static"),
            LOG_LEVEL="WARNING",
            # Every visitor comes from 127.0.0.1: the per-IP limits would measure themselves.
            ARENA_RATE_START="off",
            ARENA_RATE_FOLLOW_UP="off",
            ARENA_RATE_VOTE="off",
            ARENA_DAILY_VOTE_CAP_VISITOR="0",
            ARENA_DAILY_VOTE_CAP_IP="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(dict(kv.split("=", 1) for kv in self.args.env))
        return env

    # setup ---------------------------------------------------------------------------------

    def _catalog(self, path: Path, active: str) -> None:
        """The catalog with only one kind of model active: `fast` (the steps), `crawl` (the
        slow model, 2 tokens/s) or `idle` (the idle-SSE test: the first token after 600 s)."""
        lines = ["models:"]
        kinds = {
            "fast": knobs(),
            "crawl": knobs(tps=SLOW_TPS, tokens=SLOW_TOKENS),
            "hold": knobs(tps=SLOW_TPS, tokens=HOLD_TOKENS),
            "idle": knobs(ttft=600, tokens=10),
        }
        for i in range(1, N_MODELS + 1):
            for kind, kn in kinds.items():
                status = "active" if kind == active else "inactive"
                # The idle kind keeps its older id, so runs stay comparable in the logs.
                slug = "slow" if kind == "idle" else kind
                lines += [
                    f"  - id: bench-{slug}-{i}",
                    f"    name: Bench {slug.title()} {i}",
                    f'    model: "m{i}?{kn}"',
                    f"    base_url: {self.llm_url}",
                    "    api_key_env: null",
                    "    organization: Zeta Labs",
                    "    license: MIT",
                    f"    status: {status}",
                ]
        path.write_text("\n".join(lines) + "\n")
        run([PY, "manage.py", "load_models", str(path)], self.env)

    def setup(self) -> None:
        log(f"logs in {self.tmp}; load average {load_average()}")
        synthetic.db_recreate(DB_NAME)
        redis_clear()
        run([PY, "manage.py", "migrate", "--noinput"], self.env)
        run([PY, "manage.py", "collectstatic", "--noinput"], self.env)
        self.procs.start(
            "llm", [PY, "-m", "llm_providers.testing", "--port", str(self.llm_port)], self.env
        )
        wait_http(f"http://127.0.0.1:{self.llm_port}/v1/models")
        self._catalog(self.tmp / "models.yaml", "fast")
        self.web = self.procs.start(
            "web",
            [
                str(BIN / "gunicorn"),
                "config.asgi:application",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-w",
                str(self.args.web_workers),
                "-b",
                f"127.0.0.1:{self.web_port}",
                "--graceful-timeout",
                "5",
                "--keep-alive",
                str(self.args.keep_alive),
            ],
            self.env,
        )
        self._workers_start()
        wait_http(f"{self.web_url}/healthz")
        self.sampler = Sampler(
            self.web,
            lambda: self.workers,
            lambda: [p for p in (self.procs.procs[0][1], self.locust) if p is not None],
        )
        self.sampler.start()
        self._smoke()

    def _workers_start(self) -> None:
        self.workers = [
            self.procs.start(
                f"worker{i}",
                [
                    str(BIN / "celery"),
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    ",".join(QUEUES),
                    "-P",
                    "threads",
                    "-c",
                    str(self.args.worker_concurrency),
                    "-n",
                    f"bench{i}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                ],
                self.env,
            )
            for i in range(self.args.worker_processes)
        ]
        names = [f"bench{i}@{socket.gethostname()}" for i in range(self.args.worker_processes)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                out = run(
                    [str(BIN / "celery"), "-A", "config", "inspect", "ping", "--timeout", "1"]
                    + [arg for name in names for arg in ("-d", name)],
                    self.env,
                    timeout=30,
                )
                if all(name in out for name in names):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the Celery workers did not answer in 60 s; see {self.tmp}")

    def _workers_reset(self) -> None:
        """A fresh start for the next section: what the last one left queued or streaming
        (a slow model outlasts a step) is failed and purged, and the workers restarted."""
        for worker in self.workers:
            self.procs.stop(worker, timeout=0)
        self.procs.procs = [(n, p) for n, p in self.procs.procs if p not in self.workers]
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for queue in QUEUES:
            keys = list(client.scan_iter(match=f"{queue}*", count=1000))
            if keys:
                client.delete(*keys)
        bench_sql(
            "UPDATE battles_reply SET status = 'failed', error_code = 'bench', "
            "finished_at = now() WHERE status IN ('pending', 'streaming')"
        )
        self._workers_start()

    def _smoke(self) -> None:
        """One battle end to end, so the worker is up and everything is warm."""
        step = self._locust(1, seconds=15, label="smoke", wait=(0.1, 0.2), probe=False)
        if step.battles < 1:
            raise RuntimeError(f"smoke battle did not complete: {step.error_kinds}; see {self.tmp}")

    # steps ----------------------------------------------------------------------------------

    def _locust(
        self, users, *, seconds, label, wait=None, probe=True, slow=False, sse_timeout=120
    ) -> Step:
        wait = wait or (self.args.wait_min, self.args.wait_max)
        out = self.tmp / f"locust-{label}.json"
        votes_before = bench_sql("SELECT count(*) FROM battles_vote", fetch=True)[0][0]
        replies_after = bench_sql("SELECT coalesce(max(id), 0) FROM battles_reply", fetch=True)[0][
            0
        ]
        env = self.env | {
            "LOAD_OUT": str(out),
            "LOAD_TTFT": str(TTFT),
            "LOAD_WAIT_MIN": str(wait[0]),
            "LOAD_WAIT_MAX": str(wait[1]),
            "LOAD_SSE_TIMEOUT": str(sse_timeout),
            "LOAD_JOURNEY": "short" if slow else "full",
        }
        step = Step(users=users, label=label, seconds=seconds, load=load_average(), slow=slow)
        direct = DirectProbe(self.llm_url, self.args.direct_concurrency) if probe else None
        self.sampler.reset()
        if direct:
            direct.start()
        started = time.monotonic()
        self.locust = self.procs.start(
            f"locust-{label}",
            [
                str(BIN / "locust"),
                "-f",
                str(ROOT / "benchmarks/load/locustfile.py"),
                "--headless",
                "-u",
                str(users),
                "-r",
                str(max(1, users // 5)),
                "--run-time",
                f"{int(seconds)}s",
                "--stop-timeout",
                "60",
                "--host",
                self.web_url,
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            env,
        )
        try:
            self.locust.wait(seconds + 90 + sse_timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(self.locust)
        step.minutes = (time.monotonic() - started) / 60
        res = self.sampler.reset()
        step.res = res
        self.locust = None
        if direct:
            direct.stopped.set()
            direct.join(30)
            step.direct_ttft, step.direct_rates = direct.ttft_overhead, direct.rates
            step.direct_errors = direct.errors
        data = json.loads(out.read_text()) if out.exists() else {"samples": {}, "counters": {}}
        samples, counters = data["samples"], data["counters"]
        step.battles = counters.get("battles completed", 0)
        step.votes_ok = counters.get("votes ok", 0)
        step.errors = counters.get("errors", 0) + (0 if out.exists() else 1)
        step.error_kinds = {k: v for k, v in counters.items() if k.startswith("error ")}
        step.streams_max = data.get("streams_max", 0)
        step.lat = {
            name: samples.get(key, [])
            for name, key in (
                ("home", "GET page home"),
                ("conversation", "GET page conversation"),
                ("leaderboard", "GET page leaderboard"),
                ("actions", "GET fragment actions"),
                ("start", "POST battle start"),
                ("follow-up", "POST battle follow-up"),
                ("vote", "POST battle vote"),
            )
        }
        step.ttft = samples.get("SSE ttft overhead", [])
        step.rates = samples.get("rate tokens/s", [])
        step.delivery_ms = samples.get("delivery ms", [])
        step.complete_ms = samples.get("turn complete ms", [])
        step.votes_db = (
            bench_sql("SELECT count(*) FROM battles_vote", fetch=True)[0][0] - votes_before
        )
        # Where the time to first token goes, from the rows: waiting in the queue, then the
        # worker's own time to the first token (the model's configured delay included).
        rows = bench_sql(
            "SELECT extract(epoch FROM started_at - created_at) * 1000, ttft_ms "
            "FROM battles_reply WHERE id > %s AND started_at IS NOT NULL",
            [replies_after],
            fetch=True,
        )
        step.queue_ms = [float(q) for q, _ in rows]
        step.worker_ttft_ms = [float(t) for _, t in rows if t is not None]
        if label != "smoke":
            self.steps.append(step)
        log(
            f"{label}: {users} visitors, {step.battles} battles, {step.errors} errors "
            f"{step.error_kinds or ''}, votes {step.votes_ok} ok / {step.votes_db} in DB, "
            f"load {step.load}"
        )
        return step

    def steps_run(self) -> None:
        for users in self.args.users:
            self._locust(users, seconds=self.args.step_seconds, label=f"u{users}")
            # Let the worker drain between steps so each starts from an idle arena.
            time.sleep(3)

    # slow model -------------------------------------------------------------------------------

    def slow_steps(self) -> None:
        """Issue 19's slow-model comparison: visitors start a battle, read both 30-s answers
        and vote; each step starts from an idle worker (the previous one's leftovers failed)."""
        self._catalog(self.tmp / "crawl.yaml", "crawl")
        for users in self.args.slow_users:
            self._workers_reset()
            self._locust(
                users,
                seconds=self.args.slow_step_seconds,
                label=f"u{users}-slow",
                probe=False,
                slow=True,
                sse_timeout=300,
            )

    def hold_check(self) -> None:
        """Can one worker process stream `--hold-replies` replies at once from the slow model?

        Starts half as many battles as fast as the web takes them, opens each battle's SSE
        stream as a browser would (page, then stream), and reads it until the turn ends or
        the window closes. Reports the most replies the database showed streaming at once,
        and the first token's overhead on the page (first delta minus the POST, minus the
        model's configured first-token delay).
        """
        import httpx2

        self._catalog(self.tmp / "hold.yaml", "hold")
        self._workers_reset()
        battles = self.args.hold_replies // 2
        window = self.args.hold_seconds
        first_id = bench_sql("SELECT coalesce(max(id), 0) FROM battles_reply", fetch=True)[0][0]
        log(f"hold: {battles} battles on the slow model, one worker; load {load_average()}")
        load_before = load_average()
        self.sampler.reset()

        async def main():
            limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
            timeout = httpx2.Timeout(window + 60, connect=30.0)
            overhead: list[float] = []
            seen_at: dict[tuple[int, str], float] = {}  # (battle, side) -> first delta, epoch
            published: dict[tuple[int, str], float] = {}  # ... -> its XADD, epoch
            errors: dict[str, int] = {}
            peak = {"streaming": 0, "at": 0.0}
            ended = [0]
            started = time.monotonic()
            stop_at = started + window
            async with httpx2.AsyncClient(
                base_url=self.web_url, limits=limits, timeout=timeout
            ) as client:
                await client.get("/")
                token = client.cookies.get("csrftoken", "")
                sem = asyncio.Semaphore(32)

                async def battle(i: int) -> None:
                    try:
                        async with sem:
                            t0 = time.perf_counter()
                            r = await client.post(
                                "/battle/",
                                data={"prompt": f"hold {i}"},
                                headers={"X-CSRFToken": token},
                            )
                            if r.status_code != 302:
                                raise RuntimeError(f"start status {r.status_code}")
                            page = await client.get(r.headers["location"])
                        match = EVENTS_RE.search(page.text)
                        if not match:
                            raise RuntimeError("no stream on the page")
                        first: set[str] = set()
                        async with client.stream("GET", match.group(1)) as response:
                            name = ""
                            event_id = ""
                            async for line in response.aiter_lines():
                                if line.startswith("id: "):
                                    event_id = line[4:]
                                elif line.startswith("event: "):
                                    name = line[7:]
                                    if name.startswith("delta-") and name not in first:
                                        first.add(name)
                                        seen_at[(i, name[6:])] = time.time()
                                        # A Redis stream id starts with the ms of its XADD.
                                        published_ms = event_id.partition("-")[0]
                                        if published_ms.isdigit():
                                            published[(i, name[6:])] = int(published_ms) / 1000
                                        overhead.append((time.perf_counter() - t0 - TTFT) * 1000)
                                    elif name == "turn-end":
                                        ended[0] += 1
                                        return
                                if time.monotonic() > stop_at:
                                    return
                    except Exception as exc:
                        kind = f"{type(exc).__name__}: {str(exc)[:60]}"
                        errors[kind] = errors.get(kind, 0) + 1

                async def watch() -> None:
                    while True:
                        streaming = (
                            await asyncio.to_thread(
                                bench_sql,
                                "SELECT count(*) FROM battles_reply WHERE id > %s "
                                "AND status = 'streaming'",
                                [first_id],
                                True,
                            )
                        )[0][0]
                        if streaming > peak["streaming"]:
                            peak.update(streaming=streaming, at=time.monotonic() - started)
                        await asyncio.sleep(0.5)

                watcher = asyncio.create_task(watch())
                tasks = [asyncio.create_task(battle(i)) for i in range(battles)]
                await asyncio.wait(tasks, timeout=window + 30)
                watcher.cancel()
            return overhead, seen_at, published, errors, peak, ended[0]

        overhead, seen_at, published, errors, peak, ended = asyncio.run(main())
        res = self.sampler.reset()
        rows = bench_sql(
            "SELECT extract(epoch FROM started_at - created_at) * 1000, ttft_ms "
            "FROM battles_reply WHERE id > %s AND started_at IS NOT NULL",
            [first_id],
            fetch=True,
        )
        # The model's first token as the worker received it (claim time + the call's own time
        # to first token; the hand-off from the claim to the call counts against the arena).
        model_first = bench_sql(
            "SELECT t.prompt, r.side, extract(epoch FROM r.started_at) + r.ttft_ms / 1000.0 "
            "FROM battles_reply r JOIN battles_turn t ON t.id = r.turn_id "
            "WHERE r.id > %s AND r.ttft_ms IS NOT NULL",
            [first_id],
            fetch=True,
        )
        read_at = {(int(prompt.split()[-1]), side): float(at) for prompt, side, at in model_first}
        to_page = [(seen_at[k] - at) * 1000 for k, at in read_at.items() if k in seen_at]
        to_hub = [(published[k] - at) * 1000 for k, at in read_at.items() if k in published]
        hub_to_page = [(seen_at[k] - published[k]) * 1000 for k in published if k in seen_at]
        self.extra["hold"] = {
            "replies": battles * 2,
            "window": window,
            "peak_streaming": peak["streaming"],
            "peak_at_s": peak["at"],
            "first_tokens": len(overhead),
            "turns_ended": ended,
            "overhead": overhead,
            "to_page": to_page,
            "to_hub": to_hub,
            "hub_to_page": hub_to_page,
            "queue_ms": [float(q) for q, _ in rows],
            "worker_ttft_ms": [float(t) for _, t in rows if t is not None],
            "errors": errors,
            "worker_rss_max": max(res.worker_rss, default=0),
            "worker_cpu_avg": statistics.fmean(res.worker_cpu) if res.worker_cpu else 0,
            "load": f"{load_before} → {load_average()}",
        }
        log(
            f"hold: at most {peak['streaming']} streaming at once, {len(overhead)} first "
            f"tokens, {ended} turns ended, errors {errors or 0}"
        )

    # ratings with many votes -----------------------------------------------------------------

    def many_votes(self) -> None:
        n = self.args.votes
        ids = (
            [
                r[0]
                for r in bench_sql(
                    "SELECT id FROM llm_providers_llmmodel WHERE slug LIKE 'bench-fast-%%' "
                    "ORDER BY id",
                    fetch=True,
                )
            ]
            if self._has_slug()
            else [
                r[0]
                for r in bench_sql(
                    "SELECT id FROM llm_providers_llmmodel ORDER BY id LIMIT %s",
                    [N_MODELS],
                    fetch=True,
                )
            ]
        )
        arr = "ARRAY[" + ",".join(map(str, ids)) + "]::bigint[]"
        k = len(ids)
        log(f"inserting {n:,} synthetic battles and votes")
        t0 = time.perf_counter()
        conv = synthetic.conversation_insert(bench_sql)
        ia = f"(1 + (g % {k}))"
        ib = f"(1 + ((g % {k}) + 1 + (g / {k}) % {k - 1}) % {k})"
        b_cols, b_vals = filler(
            bench_sql,
            "battles_battle",
            {
                "uuid": "gen_random_uuid()",
                "conversation_id": str(conv),
                "owner_key": "'v:bench-synthetic'",
                "model_a_id": f"({arr})[{ia}]",
                "model_b_id": f"({arr})[{ib}]",
                "status": "'voted'",
                "pair_probability": "0.03",
                "sampling": "'{}'::jsonb",
                "visitor_hash": "md5((g / 40)::text)",
                "turn_count": "1",
                "created_at": "now() - make_interval(secs => g)",
                "updated_at": "now()",
                "voted_at": "now() - make_interval(secs => g)",
            },
        )
        bench_sql(
            f"INSERT INTO battles_battle ({b_cols}) SELECT {b_vals} "
            f"FROM generate_series(1, {n}) AS g"
        )
        t_battles = time.perf_counter() - t0
        # A real skill gap: model i beats j with a probability growing with i - j.
        v_cols, v_vals = filler(
            bench_sql,
            "battles_vote",
            {
                "battle_id": "b.id",
                "choice": "CASE WHEN r < 0.08 THEN 'bothbad' WHEN r < 0.30 THEN 'tie' "
                "WHEN r < 0.30 + 0.70 / (1 + exp(0.25 * (ia - ib))) THEN 'a' ELSE 'b' END",
                "model_a_id": "b.model_a_id",
                "model_b_id": "b.model_b_id",
                "visitor_hash": "b.visitor_hash",
                "ip_hash": "''",
                "turns": "1",
                "prompt_chars": "40 + b.id % 400",
                "has_code": "b.id % 7 = 0",
                "language": "'en'",
                "style": "jsonb_build_object("
                "'a', jsonb_build_object('length', 300 + b.id % 900, 'headers', b.id % 3, "
                "'lists', b.id % 5, 'bold', b.id % 2), "
                "'b', jsonb_build_object('length', 300 + (b.id / 7) % 900, "
                "'headers', (b.id / 3) % 3, 'lists', (b.id / 5) % 5, 'bold', (b.id / 2) % 2))",
                "identity_leak": "false",
                "created_at": "b.voted_at",
            },
        )
        bench_sql(
            f"INSERT INTO battles_vote ({v_cols}) SELECT {v_vals} FROM ("
            f"SELECT b.*, random() AS r, array_position({arr}, b.model_a_id) AS ia, "
            f"array_position({arr}, b.model_b_id) AS ib FROM battles_battle b "
            f"WHERE b.conversation_id = {conv}) AS b"
        )
        bench_sql("ANALYZE")
        t_insert = time.perf_counter() - t0
        log(f"inserted in {t_insert:.1f} s; recomputing ratings")
        t0 = time.perf_counter()
        run([PY, "manage.py", "recompute_ratings"], self.env, timeout=1800)
        t_recompute = time.perf_counter() - t0
        total = bench_sql("SELECT count(*) FROM battles_vote", fetch=True)[0][0]
        self.extra["votes"] = {
            "count": total,
            "insert_s": t_insert,
            "battles_s": t_battles,
            "recompute_s": t_recompute,
        }
        log(f"{total:,} votes; recompute {t_recompute:.1f} s")
        self._locust(
            self.args.votes_users,
            seconds=self.args.step_seconds,
            label=f"u{self.args.votes_users}-{total // 1000}k-votes",
        )

    def _has_slug(self) -> bool:
        return bool(
            bench_sql(
                "SELECT 1 FROM information_schema.columns WHERE table_name = "
                "'llm_providers_llmmodel' AND column_name = 'slug'",
                fetch=True,
            )
        )

    # idle SSE ------------------------------------------------------------------------------

    def idle_sse(self) -> None:
        """Many streams waiting on a turn whose models take minutes to answer."""
        import httpx2

        self._catalog(self.tmp / "idle.yaml", "idle")
        self._workers_reset()
        n = self.args.idle_streams
        log(f"idle SSE: starting {n} battles on slow models; load {load_average()}")

        async def main():
            limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
            timeout = httpx2.Timeout(60.0, connect=30.0)
            async with httpx2.AsyncClient(
                base_url=self.web_url, limits=limits, timeout=timeout
            ) as client:
                await client.get("/")
                token = client.cookies.get("csrftoken", "")
                sem = asyncio.Semaphore(16)

                async def start(i):
                    async with sem:
                        r = await client.post(
                            "/battle/", data={"prompt": f"slow {i}"}, headers={"X-CSRFToken": token}
                        )
                        return r.headers.get("location", "") if r.status_code == 302 else ""

                locations = [x for x in await asyncio.gather(*(start(i) for i in range(n))) if x]
                uuids = [
                    row[0]
                    for row in bench_sql(
                        "SELECT b.uuid::text FROM battles_battle b JOIN battles_conversation c "
                        "ON c.id = b.conversation_id WHERE b.status = 'open' "
                        "AND c.uuid::text = ANY(%s)",
                        [[loc.rstrip("/").rsplit("/", 1)[-1] for loc in locations]],
                        fetch=True,
                    )
                ]
                errors, opened, held = 0, 0, 0
                kinds: dict[str, int] = {}
                hold = self.args.idle_seconds
                all_open = asyncio.Event()
                counter = {"open": 0}

                async def stream(uuid):
                    nonlocal errors, opened, held
                    try:
                        async with client.stream("GET", f"/b/{uuid}/turns/0/events/") as r:
                            if r.status_code != 200:
                                raise RuntimeError(f"status {r.status_code}")
                            opened += 1
                            counter["open"] += 1
                            if counter["open"] == len(uuids):
                                all_open.set()
                            t_end = time.monotonic() + hold
                            it = r.aiter_text()
                            while time.monotonic() < t_end:
                                try:
                                    chunk = await asyncio.wait_for(
                                        it.__anext__(), t_end - time.monotonic()
                                    )
                                except TimeoutError:
                                    break
                                except StopAsyncIteration:
                                    raise RuntimeError("closed early") from None
                                if "turn-end" in chunk:
                                    raise RuntimeError("turn ended") from None
                            held += 1
                    except Exception as exc:
                        errors += 1
                        kinds[type(exc).__name__ + ": " + str(exc)[:60]] = (
                            kinds.get(type(exc).__name__ + ": " + str(exc)[:60], 0) + 1
                        )

                async def rss_watch():
                    peak = 0.0
                    while True:
                        peak = max(
                            peak,
                            max(
                                (
                                    p.memory_info().rss
                                    for p in psutil.Process(self.web.pid).children()
                                ),
                                default=0,
                            )
                            / 2**20,
                        )
                        self.extra["idle_rss_mb"] = peak
                        await asyncio.sleep(0.5)

                watcher = asyncio.create_task(rss_watch())
                t0 = time.perf_counter()
                await asyncio.gather(*(stream(u) for u in uuids))
                watcher.cancel()
                self.extra["idle"] = {
                    "battles": len(uuids),
                    "opened": opened,
                    "held": held,
                    "errors": errors,
                    "kinds": kinds,
                    "seconds": time.perf_counter() - t0,
                    "load": load_average(),
                }

        asyncio.run(main())
        log(
            f"idle SSE: {self.extra['idle']} peak web worker RSS "
            f"{self.extra.get('idle_rss_mb', 0):.0f} MB"
        )

    # report ----------------------------------------------------------------------------------

    def report(self) -> str:
        def f(v, fmt="{:.0f}"):
            return "–" if v is None else fmt.format(v)

        def p3(values):
            return "/".join(f(pct(values, q)) for q in (50, 95, 99))

        mem = psutil.virtual_memory().total / 2**30
        cpu_model = platform.processor() or ""
        with contextlib.suppress(Exception):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        lines = [
            f"machine: {os.cpu_count()} cores, {cpu_model}, {mem:.1f} GiB RAM; "
            f"test server {knobs()}; {self.args.web_workers} web workers, "
            f"{self.args.worker_processes} x Celery -P threads -c "
            f"{self.args.worker_concurrency}; "
            f"visitor pause {self.args.wait_min:g}-{self.args.wait_max:g} s between battles",
            "",
            "| visitors | load avg (1/5/15) | battles/min | errors | votes ok / in DB | "
            "SSE streams held (max) | page p50/95/99 ms | start p50/95/99 ms | "
            "vote p50/95/99 ms | leaderboard p50/95/99 ms | web CPU % avg/max | "
            "web worker RSS MB max | Celery CPU % avg/max | Celery RSS MB max | "
            "test server + locust CPU % avg | web / Celery CPU ms per battle |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        fast = [s for s in self.steps if not s.slow]
        slow = [s for s in self.steps if s.slow]
        for s in fast:
            pages = s.lat["home"] + s.lat["conversation"] + s.lat["leaderboard"]
            r = s.res or Samples()
            lines.append(
                f"| {s.users} ({s.label}) | {s.load} | {s.battles / s.minutes:.0f} | {s.errors} | "
                f"{s.votes_ok} / {s.votes_db} | {s.streams_max} | {p3(pages)} | "
                f"{p3(s.lat['start'])} | {p3(s.lat['vote'])} | {p3(s.lat['leaderboard'])} | "
                f"{f(statistics.fmean(r.web_cpu) if r.web_cpu else None)}/"
                f"{f(max(r.web_cpu, default=None))} | {f(max(r.web_rss, default=None))} | "
                f"{f(statistics.fmean(r.worker_cpu) if r.worker_cpu else None)}/"
                f"{f(max(r.worker_cpu, default=None))} | {f(max(r.worker_rss, default=None))} | "
                f"{f(statistics.fmean(r.other_cpu) if r.other_cpu else None)} | "
                f"{f(cpu_per_battle(r.web_cpu, s.battles))} / "
                f"{f(cpu_per_battle(r.worker_cpu, s.battles))} |"
            )
        lines += [
            "",
            "Streaming (TTFT overhead = first delta seen minus the configured "
            f"{TTFT * 1000:.0f} ms; arena: from the POST that starts the turn to the first delta "
            "on the page's SSE stream; direct: the openai client on the test server, "
            f"{self.args.direct_concurrency} streams at a time during the same step)",
            "",
            "| visitors | arena TTFT overhead p50/95/99 ms | direct TTFT overhead p50/95/99 ms | "
            "arena tokens/s per stream p50/p5 | direct tokens/s p50/p5 | arena/direct rate p50 | "
            "of which: queue wait p50/95/99 ms | worker TTFT (incl. 300) p50/95/99 ms | "
            "first delta, hub to page p50/95/99 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in fast:
            ratio = (
                pct(s.rates, 50) / pct(s.direct_rates, 50) if s.rates and s.direct_rates else None
            )
            lines.append(
                f"| {s.users} ({s.label}) | {p3(s.ttft)} | {p3(s.direct_ttft)} | "
                f"{f(pct(s.rates, 50), '{:.1f}')}/{f(pct(s.rates, 5), '{:.1f}')} | "
                f"{f(pct(s.direct_rates, 50), '{:.1f}')}/{f(pct(s.direct_rates, 5), '{:.1f}')} | "
                f"{f(ratio, '{:.2f}')} | {p3(s.queue_ms)} | {p3(s.worker_ttft_ms)} | "
                f"{p3(s.delivery_ms)} |"
            )
        if slow:
            lines += [
                "",
                f"Slow model ({knobs(tps=SLOW_TPS, tokens=SLOW_TOKENS)}: a 30-s answer), "
                "short journey (start, the first turn's stream, vote), each step from an idle "
                "worker",
                "",
                "| visitors | load avg (1/5/15) | battles/min | errors | votes ok / in DB | "
                "TTFT overhead p50/95/99 ms | queue wait p50/95/99 ms | "
                "worker TTFT (incl. 300) p50/95/99 ms | turn complete p50/95 ms | "
                "Celery CPU % avg/max | Celery RSS MB max | web / Celery CPU ms per battle |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for s in slow:
                r = s.res or Samples()
                lines.append(
                    f"| {s.users} ({s.label}) | {s.load} | {s.battles / s.minutes:.0f} | "
                    f"{s.errors} | {s.votes_ok} / {s.votes_db} | {p3(s.ttft)} | "
                    f"{p3(s.queue_ms)} | {p3(s.worker_ttft_ms)} | "
                    f"{f(pct(s.complete_ms, 50))}/{f(pct(s.complete_ms, 95))} | "
                    f"{f(statistics.fmean(r.worker_cpu) if r.worker_cpu else None)}/"
                    f"{f(max(r.worker_cpu, default=None))} | "
                    f"{f(max(r.worker_rss, default=None))} | "
                    f"{f(cpu_per_battle(r.web_cpu, s.battles))} / "
                    f"{f(cpu_per_battle(r.worker_cpu, s.battles))} |"
                )
        if "hold" in self.extra:
            h = self.extra["hold"]
            lines += [
                "",
                f"Hold: {h['replies']} replies started on one worker process "
                f"({knobs(tps=SLOW_TPS, tokens=HOLD_TOKENS)}), read for {h['window']:g} s: "
                f"at most {h['peak_streaming']} streaming at once (after "
                f"{h['peak_at_s']:.0f} s); first token on the page for {h['first_tokens']} "
                f"sides, TTFT overhead p50/95/99 {p3(h['overhead'])} ms, first token from the "
                f"worker's read to the page p50/95/99 {p3(h['to_page'])} ms (to the hub "
                f"{p3(h['to_hub'])}, hub to page {p3(h['hub_to_page'])}); queue wait "
                f"p50/95/99 {p3(h['queue_ms'])} ms; worker TTFT p50/95/99 "
                f"{p3(h['worker_ttft_ms'])} ms; {h['turns_ended']} turns ended; worker RSS "
                f"max {h['worker_rss_max']:.0f} MB, CPU avg {h['worker_cpu_avg']:.0f} %; "
                f"errors {h['errors'] or 0}; load {h['load']}.",
            ]
        if "votes" in self.extra:
            v = self.extra["votes"]
            lines += [
                "",
                f"Ratings: {v['count']:,} votes; bulk insert (battles + votes, "
                f"INSERT … SELECT generate_series) {v['insert_s']:.1f} s; "
                f"`manage.py recompute_ratings` {v['recompute_s']:.1f} s.",
            ]
        if "idle" in self.extra:
            i = self.extra["idle"]
            lines += [
                "",
                f"Idle SSE: {i['opened']} streams opened on {i['battles']} battles "
                f"(models ttft=600 s), {i['held']} held {self.args.idle_seconds:g} s, "
                f"{i['errors']} errors {i['kinds'] or ''}; peak web worker RSS "
                f"{self.extra.get('idle_rss_mb', 0):.0f} MB; load {i['load']}.",
            ]
        if "failed" in self.extra:
            lines += ["", f"The run stopped early: {self.extra['failed']}"]
        for s in self.steps:
            if s.error_kinds:
                lines.append(f"errors at {s.label}: {s.error_kinds}")
        return "\n".join(lines)

    def close(self) -> None:
        self.procs.stop_all()
        with contextlib.suppress(Exception):
            redis_clear()
        if not self.args.keep_db:
            with contextlib.suppress(Exception):
                synthetic.db_recreate(DB_NAME, drop_only=True)
        if not self.args.keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 and 50 visitors, 30 s steps, 200,000 votes, 200 idle streams",
    )
    parser.add_argument("--users", type=int, nargs="*", default=None)
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--votes", type=int, default=None, help="synthetic votes (0: skip)")
    parser.add_argument("--votes-users", type=int, default=100)
    parser.add_argument("--idle-streams", type=int, default=None, help="0: skip")
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--worker-processes", type=int, default=1)
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=20,
        help="gunicorn --keep-alive seconds (default: 20, as in make web and the image)",
    )
    parser.add_argument("--direct-concurrency", type=int, default=8)
    parser.add_argument(
        "--slow-users",
        type=int,
        nargs="*",
        default=None,
        help="visitor counts on the slow model (2 tokens/s); none: skip",
    )
    parser.add_argument("--slow-step-seconds", type=float, default=120)
    parser.add_argument(
        "--hold-replies",
        type=int,
        default=None,
        help="replies one worker should stream at once from the slow model (0: skip)",
    )
    parser.add_argument("--hold-seconds", type=float, default=150)
    parser.add_argument("--wait-min", type=float, default=1.0)
    parser.add_argument("--wait-max", type=float, default=3.0)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the arena's processes (repeatable)",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures here")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.users is None:
        args.users = [10, 50] if quick else [10, 50, 100, 200]
    args.step_seconds = args.step_seconds or (30 if quick else 60)
    args.votes = (200_000 if quick else 2_000_000) if args.votes is None else args.votes
    args.idle_streams = (200 if quick else 500) if args.idle_streams is None else args.idle_streams
    if args.slow_users is None:
        args.slow_users = [100] if quick else [100, 500]
    args.hold_replies = (200 if quick else 1000) if args.hold_replies is None else args.hold_replies

    bench = Bench(args)
    interrupted = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.setup()
        bench.steps_run()
        if args.votes:
            bench.many_votes()
        if args.slow_users:
            bench.slow_steps()
        if args.hold_replies:
            bench.hold_check()
        if args.idle_streams:
            bench.idle_sse()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    except Exception as exc:
        log(f"failed: {exc}")
        bench.extra["failed"] = f"{type(exc).__name__}: {exc}"
        interrupted = True
    finally:
        report = bench.report()
        print("\n" + report, flush=True)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "steps": [
                            s.__dict__ | {"res": (s.res.__dict__ if s.res else None)}
                            for s in bench.steps
                        ],
                        "extra": bench.extra,
                    },
                    default=str,
                )
            )
        bench.close()
    return 1 if interrupted else 0
