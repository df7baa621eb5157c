"""The service mode's hub: Redis Streams, so any web process can serve any stream."""

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Collection, Sequence

import redis
import redis.asyncio

from core.hub.protocol import Event

log = logging.getLogger(__name__)

# Entries kept per stream (approximately): far more than a turn ever writes.
STREAM_MAXLEN = 100_000

# A batch of events in one command. As a pipeline of an XADD per event and an EXPIRE per
# stream, redis-py packed every command and read every reply under a timeout of its own,
# which was the largest share of a generation loop's time with 1,000 replies streaming
# (benchmarks/load/README.md). KEYS: the streams; ARGV: the TTL, the MAXLEN, then for each
# event the index of its stream in KEYS, its name and its data.
PUBLISH_MANY_LUA = """
local ttl, maxlen = ARGV[1], ARGV[2]
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*', 'n', ARGV[i + 1],
             'd', ARGV[i + 2])
end
for _, key in ipairs(KEYS) do
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""
# The name EVALSHA knows the script by (not a security use of SHA-1).
PUBLISH_MANY_SHA = hashlib.sha1(PUBLISH_MANY_LUA.encode(), usedforsecurity=False).hexdigest()


class RedisHub:
    """Streams as Redis Streams (`XADD` / `XREAD`), flags as keys; any web process serves any
    stream, whichever worker process writes it."""

    def __init__(self, url: str, ttl: int, prefix: str, *, max_connections: int):
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.max_connections = max_connections
        self._sync = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        # One async client per event loop (a client is bound to the loop that created it).
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # One shared stream reader per event loop (see _SharedReader).
        self._readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _key(self, stream: str) -> str:
        return f"{self.prefix}:hub:{stream}"

    def _flag(self, key: str) -> str:
        return f"{self.prefix}:flag:{key}"

    def publish(self, stream: str, name: str, data: str) -> str:
        key = self._key(stream)
        pipe = self._sync.pipeline(transaction=False)
        pipe.xadd(key, {"n": name, "d": data}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(key, self.ttl)
        event_id, _ = pipe.execute()
        return event_id.decode()

    async def publish_many(self, events: Sequence[tuple[str, str, str]]) -> None:
        if not events:
            return
        keys: dict[str, int] = {}  # stream -> its index in KEYS (Lua counts from 1)
        args: list[str | int] = [self.ttl, STREAM_MAXLEN]
        for stream, name, data in events:
            index = keys.setdefault(stream, len(keys) + 1)
            args += (index, name, data)
        client = self._async_client()
        names = [self._key(stream) for stream in keys]
        try:
            await client.evalsha(PUBLISH_MANY_SHA, len(names), *names, *args)
        except redis.exceptions.NoScriptError:
            # Not in this server's script cache yet (a restart, a failover): EVAL caches it.
            await client.eval(PUBLISH_MANY_LUA, len(names), *names, *args)

    def discard(self, stream: str) -> None:
        self._sync.delete(self._key(stream))

    def set_flag(self, key: str) -> None:
        self._sync.set(self._flag(key), "1", ex=self.ttl)

    def clear_flag(self, key: str) -> None:
        self._sync.delete(self._flag(key))

    async def flags_up(self, keys: Collection[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        values = await self._async_client().mget([self._flag(key) for key in keys])
        return {key for key, value in zip(keys, values, strict=True) if value is not None}

    def ping(self) -> bool:
        try:
            return bool(self._sync.ping())
        except Exception:
            return False

    def subscribe(self, stream: str, after: str | None) -> "_RedisSubscription":
        loop = asyncio.get_running_loop()
        with self._lock:
            reader = self._readers.get(loop)
            if reader is None:
                reader = self._readers[loop] = _SharedReader(self)
        return reader.subscribe(stream, after)

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                # The read timeout must outlast XREAD BLOCK (at most 10 s here); the cap is a
                # setting because redis-py's default of 100 once failed the 101st stream.
                client = redis.asyncio.Redis.from_url(
                    self.url,
                    socket_connect_timeout=5,
                    socket_timeout=30,
                    max_connections=self.max_connections,
                )
                self._async_clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close the calling event loop's connections (the next use opens new ones)."""
        with self._lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


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
            await self.hub.aclose()

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
