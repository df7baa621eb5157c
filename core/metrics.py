"""The arena's Prometheus metrics: defined once here, recorded where things happen.

prometheus-client in multiprocess mode: every process (each gunicorn worker, each Celery
worker, the embedded default's one process) writes its samples to files under
PROMETHEUS_MULTIPROC_DIR, which settings point at a directory of this host's own under
ARENA_METRICS_DIR; /metrics (arena.metrics) merges every host's files, so a scrape of any web
process sees the replies the workers generated. Values read at scrape time (circuit breakers,
queue depth, snapshot age) are computed there, not here.
"""

from prometheus_client import Counter, Gauge, Histogram

BATTLES_STARTED = Counter("arena_battles_started", "Battles started (first prompt of a pair).")
REPLIES = Counter(
    "arena_replies",
    "Replies that ended, by model and outcome (done, failed, stopped, stalled) and error code.",
    ["model", "outcome", "error_code"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "arena_reply_time_to_first_token_seconds",
    "Time from the request to the model's first token, per finished reply.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
TOKENS_PER_SECOND = Histogram(
    "arena_reply_tokens_per_second",
    "Completion tokens per second after the first token, per finished reply the model counted.",
    ["model"],
    buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640),
)
VOTES = Counter("arena_votes", "Votes cast, by choice.", ["choice"])
IDENTITY_LEAKS = Counter(
    "arena_identity_leaks", "Replies that named their own model or maker.", ["model"]
)
TASK_LATENCY = Histogram(
    "arena_task_latency_seconds",
    "Time a reply waited between its creation and a worker claiming it (queue wait).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
SSE_STREAMS_OPEN = Gauge(
    "arena_sse_streams_open", "Turn event streams open now.", multiprocess_mode="livesum"
)
RATING_REFRESH_SECONDS = Histogram(
    "arena_rating_refresh_seconds",
    "Duration of a ratings recompute (incremental refresh or full rebuild).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
