"""Django settings for llmbattler, driven by the environment.

With no environment at all this is the embedded default: SQLite, tasks in a thread pool in the
web process, an in-process stream hub, DEBUG on and a generated development secret.
Setting DATABASE_URL and REDIS_URL switches to service mode (PostgreSQL, Celery over Redis,
Redis Streams). Every variable is listed in .env.example and the README.
"""

import ipaddress
import os
import re
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("ARENA_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # A development secret that survives restarts, so signed visitor cookies stay valid.
    path = DATA_DIR / "dev-secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    # For its system checks on the cache the rate limits use.
    "django_ratelimit",
    # Failed logins recorded and throttled (core/login_throttle.py).
    "axes",
    # The project's apps, lowest layer first: each imports only those above it in this list.
    "core",
    "llm_providers",
    "battles",
    "leaderboard",
    "arena",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.staticfiles.StaticFilesMiddleware",
    # /metrics for Prometheus, answered before the Host header is checked (see the module).
    "arena.metrics.metrics_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.visitor_middleware",
    "core.middleware.security_headers_middleware",
    # A database, Redis or broker outage becomes a plain "temporarily unavailable" page (not a
    # server error); it sits last, so it sees the view's exception first.
    "core.middleware.service_unavailable_middleware",
    # Turns a login refused for too many failures into its 429 page (core/login_throttle.py).
    "axes.middleware.AxesMiddleware",
    # Innermost: everything above runs in one thread per request under ASGI (see the class).
    "core.middleware.sync_boundary_middleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "arena.context_processors.arena",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 20, minimum=0)
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            # Under ASGI every request runs its sync code in a thread of its own, so a
            # persistent connection is never reused: each request opened one and left it to
            # the garbage collector, and PostgreSQL ran out of connections under load. A pool
            # per process (psycopg_pool) hands out and takes back connections instead.
            conn_max_age=(
                0
                if DB_POOL_MAX_SIZE and DATABASE_URL.startswith(("postgres", "pgsql"))
                else env_int("DB_CONN_MAX_AGE", 60, minimum=0)
            ),
            # With the pool, this makes it check a connection before handing it out.
            conn_health_checks=True,
        )
    }
    if DB_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"]["OPTIONS"] = {
            "pool": {
                "min_size": min(2, DB_POOL_MAX_SIZE),
                "max_size": DB_POOL_MAX_SIZE,
                "timeout": env_float("DB_POOL_TIMEOUT", 10.0, minimum=0.1),
                "max_idle": 300,
            }
        }
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Without it a connection attempt to an unreachable server can hang for minutes.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "arena.sqlite3"),
            # WAL lets the page read while the generation threads write; IMMEDIATE
            # transactions take the write lock up front instead of failing on upgrade.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, tasks, stream hub, cache --------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
ARENA_TASK_MODE = env_choice(
    "ARENA_TASK_MODE", "celery" if REDIS_URL else "inprocess", {"celery", "inprocess"}
)
ARENA_HUB = env_choice("ARENA_HUB", "redis" if REDIS_URL else "memory", {"redis", "memory"})
if (ARENA_TASK_MODE == "celery" or ARENA_HUB == "redis") and not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL must be set for ARENA_TASK_MODE=celery or ARENA_HUB=redis."
    )
ARENA_INPROCESS_WORKERS = env_int("ARENA_INPROCESS_WORKERS", 8, minimum=1)
# Replies one process streams at once (battles.generation.runner): the back-pressure cap.
ARENA_MAX_REPLIES_PER_PROCESS = env_int("ARENA_MAX_REPLIES_PER_PROCESS", 1000, minimum=1)
ARENA_SHUTDOWN_GRACE_SECONDS = env_float("ARENA_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0)
# Namespace for this arena's keys and queues in Redis, so several arenas (or test runs) can
# share one Redis server.
ARENA_REDIS_PREFIX = env_str("ARENA_REDIS_PREFIX", "arena")
ARENA_QUEUE_LLM = env_str("ARENA_QUEUE_LLM", "llm")
ARENA_QUEUE_DEFAULT = env_str("ARENA_QUEUE_DEFAULT", "default")
# Redis connections one event loop of a process may open (SSE streams, a worker's replies).
ARENA_REDIS_MAX_CONNECTIONS = env_int("ARENA_REDIS_MAX_CONNECTIONS", 5000, minimum=1)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": ARENA_REDIS_PREFIX,
            # An unreachable Redis must fail a rate-limit count fast, not hang the request
            # (votes then go on without it: core/ratelimit.py).
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing a task happens while a visitor waits: a few quick attempts, then a clear error.
# (The worker's own reconnect loop keeps Celery's defaults, so work resumes when Redis returns.)
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Model call limits; the generation task itself only claims a reply and hands it to the
# process's loop, where these are enforced. The task time limits stay a backstop above them.
LLM_TIMEOUT_CONNECT = env_float("LLM_TIMEOUT_CONNECT", 10.0, minimum=0.1)
LLM_TIMEOUT_FIRST_TOKEN = env_float("LLM_TIMEOUT_FIRST_TOKEN", 60.0, minimum=0.1)
LLM_TIMEOUT_IDLE = env_float("LLM_TIMEOUT_IDLE", 60.0, minimum=0.1)
LLM_TIMEOUT_TOTAL = env_float("LLM_TIMEOUT_TOTAL", 300.0, minimum=1.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0)
CELERY_TASK_SOFT_TIME_LIMIT = int(LLM_TIMEOUT_TOTAL) + 30
CELERY_TASK_TIME_LIMIT = int(LLM_TIMEOUT_TOTAL) + 60
CELERY_TASK_ROUTES = {
    "battles.tasks.reply_generate_task": {"queue": ARENA_QUEUE_LLM},
}
CELERY_TASK_DEFAULT_QUEUE = ARENA_QUEUE_DEFAULT

ARENA_RECOMPUTE_INTERVAL_SECONDS = env_int("ARENA_RECOMPUTE_INTERVAL_SECONDS", 3600, minimum=10)
# The live board: look for new votes this often and recompute if any arrived (at most one
# refresh per interval); open leaderboard pages ask for a newer board every poll interval.
ARENA_REFRESH_SECONDS = env_float("ARENA_REFRESH_SECONDS", 30.0, minimum=0.5)
ARENA_BOARD_POLL_SECONDS = env_float("ARENA_BOARD_POLL_SECONDS", 15.0, minimum=0.5)
# Longer than any vote's transaction stays open: ids this old have committed (or never will).
ARENA_REFRESH_SETTLE_SECONDS = env_float("ARENA_REFRESH_SETTLE_SECONDS", 300.0, minimum=0)
ARENA_REAPER_INTERVAL_SECONDS = env_int("ARENA_REAPER_INTERVAL_SECONDS", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "ratings-recompute": {
        "task": "leaderboard.tasks.ratings_recompute_task",
        "schedule": float(ARENA_RECOMPUTE_INTERVAL_SECONDS),
    },
    "ratings-refresh": {
        "task": "leaderboard.tasks.ratings_refresh_task",
        "schedule": ARENA_REFRESH_SECONDS,
        # The tick says how far apart ticks are: ticks closer than half that (queued behind a
        # busy worker) do nothing (leaderboard.refresh).
        "args": (ARENA_REFRESH_SECONDS,),
        # A tick still queued when the next one is due is of no use: drop it.
        "options": {"expires": ARENA_REFRESH_SECONDS},
    },
    "replies-reap": {
        "task": "battles.tasks.replies_reap_task",
        "schedule": float(ARENA_REAPER_INTERVAL_SECONDS),
    },
}

# --- Arena behaviour --------------------------------------------------------------------------
ARENA_PROMPT_MAX_CHARS = env_int("ARENA_PROMPT_MAX_CHARS", 10_000, minimum=1)
ARENA_MAX_TURNS = env_int("ARENA_MAX_TURNS", 10, minimum=1)
ARENA_NEW_MODEL_BOOST = env_float("ARENA_NEW_MODEL_BOOST", 2.0, minimum=1.0)
ARENA_NEW_MODEL_VOTES = env_int("ARENA_NEW_MODEL_VOTES", 50, minimum=0)
ARENA_SAMPLING = env_choice("ARENA_SAMPLING", "weighted", {"weighted", "active"})
ARENA_SAMPLING_EXPLORATION = env_float("ARENA_SAMPLING_EXPLORATION", 0.25, minimum=0.01)
if ARENA_SAMPLING_EXPLORATION > 1:
    raise ImproperlyConfigured("ARENA_SAMPLING_EXPLORATION must lie between 0.01 and 1")
# The timing-leak guard on blind battles' streams (battles/blind_timing.py).
ARENA_BLIND_TIMING = env_choice("ARENA_BLIND_TIMING", "together", {"off", "together", "padded"})
ARENA_BLIND_TIMING_CAP_SECONDS = env_float("ARENA_BLIND_TIMING_CAP_SECONDS", 5.0, minimum=0.0)
ARENA_CIRCUIT_FAILURES = env_int("ARENA_CIRCUIT_FAILURES", 3, minimum=1)
ARENA_CIRCUIT_COOLDOWN_SECONDS = env_int("ARENA_CIRCUIT_COOLDOWN_SECONDS", 60, minimum=1)
ARENA_HEARTBEAT_SECONDS = env_float("ARENA_HEARTBEAT_SECONDS", 5.0, minimum=0.05)
ARENA_REPLY_STALL_SECONDS = env_float("ARENA_REPLY_STALL_SECONDS", 45.0, minimum=0.2)
ARENA_HUB_TTL_SECONDS = env_int("ARENA_HUB_TTL_SECONDS", 3600, minimum=60)
ARENA_MIN_VOTES_TO_SHOW = env_int("ARENA_MIN_VOTES_TO_SHOW", 5, minimum=0)
ARENA_RATINGS_EXCLUDE_STATUSES = env_list("ARENA_RATINGS_EXCLUDE_STATUSES")
ARENA_LONG_PROMPT_CHARS = env_int("ARENA_LONG_PROMPT_CHARS", 500, minimum=1)
ARENA_LANGUAGE_CATEGORY_MIN_VOTES = env_int("ARENA_LANGUAGE_CATEGORY_MIN_VOTES", 100, minimum=1)
ARENA_STYLE_CONTROL = env_bool("ARENA_STYLE_CONTROL", True)
ARENA_BOTH_BAD_AS_TIE = env_bool("ARENA_BOTH_BAD_AS_TIE", True)
ARENA_RATING_ANCHOR = env_str("ARENA_RATING_ANCHOR", "")
ARENA_RECOMPUTE_LEASE_SECONDS = env_int("ARENA_RECOMPUTE_LEASE_SECONDS", 1800, minimum=10)
# PostgreSQL: run the recompute's independent passes over the votes at once, each on its own
# connection sharing one snapshot (off behind a transaction-mode pooler such as PgBouncer,
# which cannot share snapshots between connections).
ARENA_RECOMPUTE_CONCURRENT_READS = env_bool("ARENA_RECOMPUTE_CONCURRENT_READS", True)
# PostgreSQL sort/hash memory for the recompute's few big queries (its transaction only).
ARENA_RECOMPUTE_WORK_MEM = env_str("ARENA_RECOMPUTE_WORK_MEM", "256MB")
if not re.fullmatch(r"\d+(kB|MB|GB)", ARENA_RECOMPUTE_WORK_MEM):
    raise ImproperlyConfigured(
        "ARENA_RECOMPUTE_WORK_MEM must look like 64MB, 512kB or 1GB; "
        f"got {ARENA_RECOMPUTE_WORK_MEM!r}"
    )
ARENA_PROVISIONAL_VOTES = env_int("ARENA_PROVISIONAL_VOTES", 30, minimum=0)
# The personal leaderboard's prior: the public ratings count as this many votes per model.
ARENA_PERSONAL_PRIOR_VOTES = env_float("ARENA_PERSONAL_PRIOR_VOTES", 20.0, minimum=0.0)
ARENA_HASH_SALT = env_str("ARENA_HASH_SALT", SECRET_KEY)
# The proxies whose X-Forwarded-For is believed (addresses or networks such as 172.16.0.0/12):
# the one rule for the client address (core.visitors.client_ip). The web servers' own proxy
# handling is off (core.serving), so nothing else rewrites the address first.


def _env_networks(name: str) -> list[str]:
    """Comma-separated IP addresses or networks; anything else stops start-up."""
    entries = env_list(name)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must be IP addresses or networks (10.0.0.2, 172.16.0.0/12), "
                f"comma-separated; got {entry!r}"
            ) from None
    return entries


ARENA_TRUSTED_PROXIES = _env_networks("ARENA_TRUSTED_PROXIES")

# --- Metrics (arena/metrics.py) ---------------------------------------------------------------
# /metrics answers a request with this bearer token or from these addresses; neither: 404.
ARENA_METRICS_TOKEN = env_str("ARENA_METRICS_TOKEN", "")
ARENA_METRICS_ALLOWED_IPS = _env_networks("ARENA_METRICS_ALLOWED_IPS")
# Every process writes its samples under here, in a directory per host (process ids are only
# unique on one host); a scrape merges them all. Share it between the web and worker
# containers (compose mounts one volume) so a scrape of web sees the workers' replies.
ARENA_METRICS_DIR = Path(env_str("ARENA_METRICS_DIR", str(DATA_DIR / "metrics")))
PROMETHEUS_MULTIPROC_DIR = ARENA_METRICS_DIR / socket.gethostname()
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
# prometheus-client reads it from the environment when it is first imported, after settings.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# axes' backend first: it refuses a login attempt during a cool-down before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# No password guessing on /accounts/login/ and /admin/login/ (core/login_throttle.py):
# failures per user name from one address, a longer limit per address, then a cool-down.
ARENA_LOGIN_FAILURES = env_int("ARENA_LOGIN_FAILURES", 5, minimum=1)
ARENA_LOGIN_FAILURES_PER_ADDRESS = env_int("ARENA_LOGIN_FAILURES_PER_ADDRESS", 30, minimum=1)
ARENA_LOGIN_COOLDOWN_SECONDS = env_int("ARENA_LOGIN_COOLDOWN_SECONDS", 900, minimum=1)
AXES_HANDLER = "core.login_throttle.LoginAttempts"
AXES_FAILURE_LIMIT = ARENA_LOGIN_FAILURES
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_COOLOFF_TIME = timedelta(seconds=ARENA_LOGIN_COOLDOWN_SECONDS)
AXES_CLIENT_IP_CALLABLE = "core.visitors.client_ip"
AXES_LOCKOUT_CALLABLE = "core.login_throttle.lockout_response"
# A cool-down runs from the failure that reached the limit; attempts during it do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Forget the user name's failures from that address on success (only those: see the handler).
AXES_RESET_ON_SUCCESS = True
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security -------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# Secure cookies by default in production; SECURE_COOKIES=false allows plain HTTP on a LAN.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "openai": {"level": "WARNING"}},
}

# --- Integrity --------------------------------------------------------------------------------
# Rate limits, the daily vote cap, login to vote, moderation and the rating filters. Each is
# described in battles/README.md and arena/README.md.

_RATE_RE = re.compile(r"^(\d+)/(\d*)([smhd])$")


def _env_rate(name: str, default: str) -> str | None:
    """'N/unit' or 'N/Kunit' (unit s, m, h or d), or 'off'; anything else stops start-up."""
    value = env_str(name, default)
    if value.lower() == "off":
        return None
    match = _RATE_RE.match(value)
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ImproperlyConfigured(
            f"{name} must look like 10/m, 100/h or 30/5m (count per period), or be 'off'; "
            f"got {value!r}"
        )
    return value


ARENA_RATE_START = _env_rate("ARENA_RATE_START", "10/m")
ARENA_RATE_FOLLOW_UP = _env_rate("ARENA_RATE_FOLLOW_UP", "30/m")
ARENA_RATE_VOTE = _env_rate("ARENA_RATE_VOTE", "30/m")
ARENA_DAILY_VOTE_CAP_VISITOR = env_int("ARENA_DAILY_VOTE_CAP_VISITOR", 500, minimum=0)
ARENA_DAILY_VOTE_CAP_IP = env_int("ARENA_DAILY_VOTE_CAP_IP", 2000, minimum=0)
ARENA_VOTE_REQUIRES_LOGIN = env_bool("ARENA_VOTE_REQUIRES_LOGIN", False)

ARENA_MODERATION_URL = env_str("ARENA_MODERATION_URL", "")
ARENA_MODERATION_MODEL = env_str("ARENA_MODERATION_MODEL", "omni-moderation-latest")
ARENA_MODERATION_API_KEY_ENV = env_str("ARENA_MODERATION_API_KEY_ENV", "")
ARENA_MODERATION_FAIL_CLOSED = env_bool("ARENA_MODERATION_FAIL_CLOSED", False)
ARENA_MODERATION_TIMEOUT = env_float("ARENA_MODERATION_TIMEOUT", 5.0, minimum=0.1)

ARENA_PROMPT_DEDUP = env_bool("ARENA_PROMPT_DEDUP", True)
ARENA_PROMPT_DEDUP_PERCENTILE = env_float("ARENA_PROMPT_DEDUP_PERCENTILE", 0.999, minimum=0.5)
if ARENA_PROMPT_DEDUP_PERCENTILE >= 1:
    raise ImproperlyConfigured("ARENA_PROMPT_DEDUP_PERCENTILE must be below 1 (e.g. 0.999).")
ARENA_OUTLIER_DETECTION = env_bool("ARENA_OUTLIER_DETECTION", True)
ARENA_OUTLIER_ALPHA = env_float("ARENA_OUTLIER_ALPHA", 0.05, minimum=1e-6)
if ARENA_OUTLIER_ALPHA >= 1:
    raise ImproperlyConfigured("ARENA_OUTLIER_ALPHA must be below 1 (e.g. 0.05).")
ARENA_OUTLIER_MIN_VOTES = env_int("ARENA_OUTLIER_MIN_VOTES", 5, minimum=1)
ARENA_OUTLIER_MAX_VOTES = env_int("ARENA_OUTLIER_MAX_VOTES", 100, minimum=1)

# Rate limits use the default cache: Redis in service mode, memory in the embedded default.
if CACHES["default"]["BACKEND"].endswith("LocMemCache"):
    # The embedded default is one process, so a per-process cache is the shared cache:
    # django-ratelimit's "not shared" error and "not officially supported" warning do not apply.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
elif CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # Django's own Redis backend increments atomically (INCR); the package only lists others.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
