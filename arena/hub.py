"""The token stream hub: generation workers append events, SSE views read them.

One stream per turn, both sides multiplexed. Event ids are ordered strings; a reader that
passes the last id it saw gets only what came after, which is how a reconnecting browser
(Last-Event-ID) resumes without gaps or repeats. Embedded mode keeps streams in memory;
service mode uses Redis Streams, so any web process can serve any stream.
"""

import asyncio
import bisect
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    data: str


class MemoryHub:
    def __init__(self, ttl: int):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._streams: dict[str, list[Event]] = {}
        self._expires: dict[str, float] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._flags: dict[str, float] = {}
        # Ids grow across all streams and never restart, so a Last-Event-ID from before a
        # discard can never hide newer events.
        self._next_id = 0

    def publish(self, stream: str, name: str, data: str) -> str:
        with self._lock:
            self._gc()
            events = self._streams.setdefault(stream, [])
            self._next_id += 1
            event = Event(id=str(self._next_id), name=name, data=data)
            events.append(event)
            self._expires[stream] = time.monotonic() + self.ttl
            waiters = list(self._waiters.get(stream, ()))
        for loop, ready in waiters:
            loop.call_soon_threadsafe(ready.set)
        return event.id

    def _gc(self) -> None:
        now = time.monotonic()
        for stream in [s for s, t in self._expires.items() if t < now]:
            self._streams.pop(stream, None)
            self._expires.pop(stream, None)
        for key in [k for k, t in self._flags.items() if t < now]:
            self._flags.pop(key, None)

    def _after(self, stream: str, after: str | None) -> list[Event]:
        events = self._streams.get(stream, [])
        last = int(after) if after and after.isdigit() else 0
        # Every read of a live stream lands here: search, do not rebuild the id list.
        return events[bisect.bisect_right(events, last, key=lambda e: int(e.id)):]

    def discard(self, stream: str) -> None:
        with self._lock:
            self._streams.pop(stream, None)
            self._expires.pop(stream, None)

    async def read(self, stream: str, after: str | None, timeout: float) -> list[Event]:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        with self._lock:
            events = self._after(stream, after)
            if events:
                return events
            self._waiters.setdefault(stream, set()).add((loop, ready))
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiters = self._waiters.get(stream)
                if waiters is not None:
                    waiters.discard((loop, ready))
                    if not waiters:
                        self._waiters.pop(stream, None)
        with self._lock:
            return self._after(stream, after)

    def set_flag(self, key: str) -> None:
        with self._lock:
            self._flags[key] = time.monotonic() + self.ttl

    def has_flag(self, key: str) -> bool:
        with self._lock:
            return key in self._flags

    def clear_flag(self, key: str) -> None:
        with self._lock:
            self._flags.pop(key, None)

    def ping(self) -> bool:
        return True


class RedisHub:
    def __init__(self, url: str, ttl: int, prefix: str):
        import redis

        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self._sync = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        # One async client per event loop (a client is bound to the loop that created it).
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._async_lock = threading.Lock()

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:hub:{stream}"

    def publish(self, stream: str, name: str, data: str) -> str:
        key = self._key(stream)
        pipe = self._sync.pipeline(transaction=False)
        pipe.xadd(key, {"n": name, "d": data}, maxlen=100_000, approximate=True)
        pipe.expire(key, self.ttl)
        event_id, _ = pipe.execute()
        return event_id.decode()

    def _async_client(self):
        import redis.asyncio

        loop = asyncio.get_running_loop()
        with self._async_lock:
            client = self._async_clients.get(loop)
            if client is None:
                # The read timeout must outlast XREAD BLOCK (at most 10 s here).
                # Every waiting SSE connection holds one connection in XREAD BLOCK: the
                # client's default cap of 100 failed the 101st idle stream of a process.
                client = redis.asyncio.Redis.from_url(
                    self.url,
                    socket_connect_timeout=5,
                    socket_timeout=30,
                    max_connections=settings.ARENA_REDIS_MAX_CONNECTIONS,
                )
                self._async_clients[loop] = client
            return client

    async def read(self, stream: str, after: str | None, timeout: float) -> list[Event]:
        client = self._async_client()
        response = await client.xread(
            {self._key(stream): after or "0-0"}, block=max(1, int(timeout * 1000)), count=500
        )
        return [
            Event(id=eid.decode(), name=fields[b"n"].decode(), data=fields[b"d"].decode())
            for _, entries in response or []
            for eid, fields in entries
        ]

    def discard(self, stream: str) -> None:
        self._sync.delete(self._key(stream))

    def set_flag(self, key: str) -> None:
        self._sync.set(f"{self.prefix}:flag:{key}", "1", ex=self.ttl)

    def has_flag(self, key: str) -> bool:
        return bool(self._sync.exists(f"{self.prefix}:flag:{key}"))

    def clear_flag(self, key: str) -> None:
        self._sync.delete(f"{self.prefix}:flag:{key}")

    def ping(self) -> bool:
        try:
            return bool(self._sync.ping())
        except Exception:
            return False


_hub = None
_hub_lock = threading.Lock()


def get_hub() -> MemoryHub | RedisHub:
    global _hub
    with _hub_lock:
        if _hub is None:
            if settings.ARENA_HUB == "redis":
                _hub = RedisHub(
                    settings.REDIS_URL, settings.ARENA_HUB_TTL_SECONDS, settings.ARENA_REDIS_PREFIX
                )
            else:
                _hub = MemoryHub(settings.ARENA_HUB_TTL_SECONDS)
        return _hub


def format_sse(events: Iterable[Event]) -> str:
    parts = []
    for event in events:
        lines = "".join(f"data: {line}\n" for line in event.data.split("\n"))
        parts.append(f"id: {event.id}\nevent: {event.name}\n{lines}\n")
    return "".join(parts)
