"""The token stream hub: generation appends events, SSE streams read them.

One stream per turn, both sides multiplexed. Event ids are ordered strings; a reader that
passes the last id it saw gets only what came after, which is how a reconnecting browser
(Last-Event-ID) resumes without gaps or repeats. Flags (a stop asked for) live beside the
streams. The embedded mode keeps both in memory (`memory.py`); service mode uses Redis
(`redis.py`). `protocol.py` says what both offer.
"""

import threading

from django.conf import settings

from core.hub.memory import MemoryHub
from core.hub.protocol import Event, Hub, Subscription, format_sse
from core.hub.redis import RedisHub

__all__ = ["Event", "Hub", "MemoryHub", "RedisHub", "Subscription", "format_sse", "get_hub"]

_hub: Hub | None = None
_lock = threading.Lock()


def get_hub() -> Hub:
    """The process's hub, as the settings choose it."""
    global _hub
    with _lock:
        if _hub is None:
            if settings.ARENA_HUB == "redis":
                _hub = RedisHub(
                    settings.REDIS_URL,
                    settings.ARENA_HUB_TTL_SECONDS,
                    settings.ARENA_REDIS_PREFIX,
                    max_connections=settings.ARENA_REDIS_MAX_CONNECTIONS,
                )
            else:
                _hub = MemoryHub(settings.ARENA_HUB_TTL_SECONDS)
        return _hub
