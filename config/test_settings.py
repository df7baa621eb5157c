"""Settings for the test suite: the real settings, with short timeouts so fault tests are quick."""

import os
from pathlib import Path

for name, value in {
    "ARENA_HEARTBEAT_SECONDS": "0.2",
    "ARENA_REPLY_STALL_SECONDS": "3",
    "LLM_TIMEOUT_CONNECT": "3",
    "LLM_TIMEOUT_FIRST_TOKEN": "5",
    "LLM_TIMEOUT_IDLE": "3",
    "LLM_TIMEOUT_TOTAL": "30",
    "LLM_MAX_RETRIES": "2",
    "ARENA_CIRCUIT_COOLDOWN_SECONDS": "5",
    "ARENA_SHUTDOWN_GRACE_SECONDS": "1",
    # Every test client comes from 127.0.0.1: per-IP limits would spill from test to test.
    # The rate-limit tests switch them on themselves.
    "ARENA_RATE_START": "off",
    "ARENA_RATE_FOLLOW_UP": "off",
    "ARENA_RATE_VOTE": "off",
    # Test runs may share the machine's Redis and PostgreSQL: keep each run's keys, queues and
    # test database apart.
    "ARENA_REDIS_PREFIX": f"test{os.getpid()}",
    "ARENA_QUEUE_LLM": f"test{os.getpid()}-llm",
    "ARENA_QUEUE_DEFAULT": f"test{os.getpid()}-default",
    # Each run's metrics apart; the processes a run starts (worker, servers) share them.
    "ARENA_METRICS_DIR": str(
        Path(__file__).resolve().parent.parent / "var" / f"test-metrics-{os.getpid()}"
    ),
}.items():
    os.environ.setdefault(name, value)

from config.settings import *  # noqa: E402, F403
from config.settings import DATA_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory: the generation threads and the test server share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_llmbattler_{os.getpid()}"}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
