"""The token stream hub: generation workers append events, SSE views read them.

One stream per turn, both sides multiplexed. Event ids are ordered strings; a reader that
passes the last id it saw gets only what came after, which is how a reconnecting browser
(Last-Event-ID) resumes without gaps or repeats. Embedded mode keeps streams in memory;
service mode uses Redis Streams, so any web process can serve any stream.
"""

import asyncio
import bisect
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

# Batched events wait at most this long, so one Redis round trip carries the events of every
# reply a worker process is generating.
BATCH_WINDOW_SECONDS = 0.02
# Watched flags (a stop asked for) are read this often, all of a process's in one round trip.
FLAG_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    data: str


class Subscription:
    """One SSE connection's view of a stream: `get` returns the events after the last one it
    returned, waiting up to `timeout` seconds for some; `close` when the connection ends."""

    def __init__(self, hub, stream: str, after: str | None):
        self.hub = hub
        self.stream = stream
        self.after = after

    async def get(self, timeout: float) -> list[Event]:
        events = await self.hub.read(self.stream, self.after, timeout)
        if events:
            self.after = events[-1].id
        return events

    def close(self) -> None:
        pass


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

    def publish_batched(self, stream: str, name: str, data: str, *, soon: bool = False) -> None:
        self.publish(stream, name, data)

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

    def subscribe(self, stream: str, after: str | None) -> Subscription:
        return Subscription(self, stream, after)

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

    @contextlib.contextmanager
    def watch_flag(self, key: str):
        """`watch.is_set()` says whether the flag is up (here: looked up at once)."""
        yield _FlagWatch(lambda: self.has_flag(key))

    def ping(self) -> bool:
        return True


class _FlagWatch:
    def __init__(self, is_set):
        self.is_set = is_set


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
        # Batched publishing (see publish_batched): events waiting for the flusher thread,
        # and a lock that keeps every write to Redis in the order it was asked for.
        self._batch: list[tuple[str, str, str]] = []
        self._batch_lock = threading.Lock()
        self._batch_ready = threading.Event()
        self._batch_soon = threading.Event()
        self._write_lock = threading.Lock()
        self._flusher_pid = 0
        # One shared stream reader per event loop (see _SharedReader).
        self._readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Watched flags (see watch_flag): how many watchers each key has, and those found up.
        self._watched: dict[str, int] = {}
        self._raised: set[str] = set()
        self._watch_lock = threading.Lock()
        self._watch_ready = threading.Event()
        self._poller_pid = 0

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:hub:{stream}"

    def publish(self, stream: str, name: str, data: str) -> str:
        """Append one event now. Batched events asked for earlier are written first."""
        key = self._key(stream)
        with self._write_lock:
            self._flush_locked()
            pipe = self._sync.pipeline(transaction=False)
            pipe.xadd(key, {"n": name, "d": data}, maxlen=100_000, approximate=True)
            pipe.expire(key, self.ttl)
            event_id, _ = pipe.execute()
        return event_id.decode()

    def publish_batched(self, stream: str, name: str, data: str, *, soon: bool = False) -> None:
        """Append an event within BATCH_WINDOW_SECONDS, together with the other events the
        process publishes meanwhile: one pipeline for all the replies a worker generates,
        instead of a round trip per reply and delta. Order is kept: `publish` writes what is
        waiting first. A failed write is logged and dropped (the deltas are a preview; the
        final pane carries the whole text). `soon=True` (a reply's first token) has the
        flusher write at once rather than at the end of the window; either way the caller
        never waits for Redis (the stream loop calls this).
        """
        with self._batch_lock:
            self._batch.append((stream, name, data))
            if self._flusher_pid != os.getpid():
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_loop, name="hub-flusher", daemon=True).start()
        if soon:
            self._batch_soon.set()
        self._batch_ready.set()

    def _flush_loop(self) -> None:
        while True:
            self._batch_ready.wait()
            self._batch_soon.wait(BATCH_WINDOW_SECONDS)
            # Cleared before the batch is taken: an event added later sets them again.
            self._batch_ready.clear()
            self._batch_soon.clear()
            try:
                with self._write_lock:
                    self._flush_locked()
            except Exception:
                log.warning("hub: batched events not published", exc_info=True)

    def _flush_locked(self) -> None:
        with self._batch_lock:
            batch, self._batch = self._batch, []
        if not batch:
            return
        pipe = self._sync.pipeline(transaction=False)
        keys = {}
        for stream, name, data in batch:
            key = keys.setdefault(stream, self._key(stream))
            pipe.xadd(key, {"n": name, "d": data}, maxlen=100_000, approximate=True)
        for key in keys.values():
            pipe.expire(key, self.ttl)
        pipe.execute()

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

    async def _async_client_close(self) -> None:
        """Close this event loop's client (the next use makes a new one)."""
        with self._async_lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def subscribe(self, stream: str, after: str | None) -> "_RedisSubscription":
        loop = asyncio.get_running_loop()
        with self._async_lock:
            reader = self._readers.get(loop)
            if reader is None:
                reader = self._readers[loop] = _SharedReader(self)
        return reader.subscribe(stream, after)

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

    @contextlib.contextmanager
    def watch_flag(self, key: str):
        """Watch a flag while a reply is generated: `watch.is_set()` answers from memory.

        One thread per process reads every watched flag every FLAG_POLL_SECONDS in one round
        trip, instead of one `EXISTS` per reply and poll (a share of the worker's time that grew
        with the replies in flight). The flag is read once before the watch is handed out, so
        a stop asked for before the reply began is seen at once.
        """
        with self._watch_lock:
            self._watched[key] = self._watched.get(key, 0) + 1
            if self._poller_pid != os.getpid():
                self._poller_pid = os.getpid()
                threading.Thread(target=self._poll_loop, name="hub-flags", daemon=True).start()
        self._watch_ready.set()
        try:
            if self.has_flag(key):
                with self._watch_lock:
                    self._raised.add(key)
            yield _FlagWatch(lambda: key in self._raised)
        finally:
            with self._watch_lock:
                left = self._watched.get(key, 1) - 1
                if left:
                    self._watched[key] = left
                else:
                    self._watched.pop(key, None)
                    self._raised.discard(key)

    def _poll_loop(self) -> None:
        while True:
            self._watch_ready.wait()
            time.sleep(FLAG_POLL_SECONDS)
            with self._watch_lock:
                keys = list(self._watched)
                if not keys:
                    self._watch_ready.clear()
                    continue
            try:
                values = self._sync.mget([f"{self.prefix}:flag:{key}" for key in keys])
            except Exception:
                # Redis is away: keep what was known; the reply's own errors say the rest.
                log.warning("hub: watched flags not read", exc_info=True)
                continue
            with self._watch_lock:
                for key, value in zip(keys, values, strict=True):
                    if value is not None and key in self._watched:
                        self._raised.add(key)

    def ping(self) -> bool:
        try:
            return bool(self._sync.ping())
        except Exception:
            return False


def _id_key(event_id: str | None) -> tuple[int, int]:
    if not event_id:
        return (0, 0)
    ms, _, seq = event_id.partition("-")
    try:
        return (int(ms), int(seq or 0))
    except ValueError:
        return (0, 0)


class _RedisSubscription:
    def __init__(self, reader: "_SharedReader", key: str, after: str | None):
        self.reader = reader
        self.key = key
        self.after = after or "0-0"
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.ready = asyncio.Event()

    def deliver(self, events: list[Event]) -> None:
        last = _id_key(self.events[-1].id if self.events else self.after)
        fresh = [e for e in events if _id_key(e.id) > last]
        if fresh:
            self.events.extend(fresh)
            self.ready.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.ready.set()

    async def get(self, timeout: float) -> list[Event]:
        if not self.events and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout)
        self.ready.clear()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        events, self.events = self.events, []
        if events:
            self.after = events[-1].id
        return events

    def close(self) -> None:
        self.reader.unsubscribe(self)


class _SharedReader:
    """All the SSE streams of one web process read by one task: one `XREAD BLOCK` over every
    subscribed stream, instead of one blocking connection and one round trip per stream.

    A new subscription wakes the blocked read through a stream of the reader's own (an `XADD`
    to it), so its first events are not held back until the block times out.
    """

    BLOCK_MS = 5_000
    GATHER_SECONDS = 0.01  # after a read that found events, let a few more arrive

    def __init__(self, hub: "RedisHub"):
        self.hub = hub
        self.subs: dict[str, set[_RedisSubscription]] = {}
        self.wake_key = f"{hub.prefix}:hub-wake:{os.getpid()}:{id(self)}"
        self.wake_id = "0-0"
        self.task: asyncio.Task | None = None
        self.has_subs = asyncio.Event()
        self.reading = False
        # The position each stream is being read from by the read in flight.
        self.reading_from: dict[str, str] = {}
        self.woken = False

    def subscribe(self, stream: str, after: str | None) -> _RedisSubscription:
        sub = _RedisSubscription(self, self.hub._key(stream), after)
        self.subs.setdefault(sub.key, set()).add(sub)
        self.has_subs.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        elif self.reading and (
            sub.key not in self.reading_from
            or _id_key(sub.after) < _id_key(self.reading_from[sub.key])
        ):
            # The read in flight does not cover this subscription: read again at once.
            self._wake()
        return sub

    def unsubscribe(self, sub: _RedisSubscription) -> None:
        subs = self.subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.key]

    def _wake(self) -> None:
        if self.woken:
            return
        self.woken = True

        async def wake():
            try:
                pipe = self.hub._async_client().pipeline(transaction=False)
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=10)
                pipe.expire(self.wake_key, 3600)
                await pipe.execute()
            except Exception:
                log.warning("hub: could not wake the stream reader", exc_info=True)

        asyncio.get_running_loop().create_task(wake())

    async def _run(self) -> None:
        try:
            await self._read_forever()
        finally:
            # The reader lasts as long as its event loop: when the loop shuts down (the web
            # process stopping, or a test's loop) its task is cancelled, and the loop's Redis
            # connections are closed with it instead of being left to the garbage collector.
            await self.hub._async_client_close()

    async def _read_forever(self) -> None:
        client = self.hub._async_client()
        while True:
            if not self.subs:
                self.has_subs.clear()
                await self.has_subs.wait()
            streams = {
                key: min((s.after for s in subs), key=_id_key) for key, subs in self.subs.items()
            }
            self.reading_from = dict(streams)
            streams[self.wake_key] = self.wake_id
            self.woken = False
            self.reading = True
            try:
                response = await client.xread(streams, block=self.BLOCK_MS, count=500)
            except Exception as exc:
                # Redis is unreachable: every waiting stream hears of it (and falls back to
                # the database or ends; the browser reconnects).
                for subs in list(self.subs.values()):
                    for sub in list(subs):
                        sub.fail(exc)
                self.subs.clear()
                continue
            finally:
                self.reading = False
            found = False
            items = response.items() if isinstance(response, dict) else (response or [])
            for raw_key, entries in items:
                key = raw_key.decode()
                if not entries:
                    continue
                if key == self.wake_key:
                    self.wake_id = entries[-1][0].decode()
                    continue
                events = [
                    Event(id=eid.decode(), name=fields[b"n"].decode(), data=fields[b"d"].decode())
                    for eid, fields in entries
                ]
                found = True
                start = _id_key(self.reading_from.get(key))
                for sub in list(self.subs.get(key, ())):
                    if _id_key(sub.after) < start:
                        continue  # subscribed during the read, further back: the next read
                    sub.deliver(events)
                    sub.after = max(sub.after, events[-1].id, key=_id_key)
            if found:
                await asyncio.sleep(self.GATHER_SECONDS)


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
