"""The service mode's hub: Redis Streams, so any web process can serve any stream."""

import asyncio
import contextlib
import hashlib
import threading
import weakref
from collections.abc import Collection, Sequence

import redis
import redis.asyncio

from core.hub.protocol import Event

# Entries kept per stream (approximately): far more than a turn ever writes.
STREAM_MAXLEN = 100_000

# A batch of events in one command. As a pipeline of an XADD per event and an EXPIRE per
# stream, redis-py packed every command and read every reply under a timeout of its own,
# which was the largest share of a generation loop's time with 1,000 replies streaming
# (benchmarks/load/README.md). KEYS: the streams; ARGV: the TTL, the MAXLEN, the news
# channel, then for each event the index of its stream in KEYS, its name and its data. The
# batch ends by naming its streams on the news channel, so the web's readers read only those
# (_SharedReader).
PUBLISH_MANY_LUA = """
local ttl, maxlen = ARGV[1], ARGV[2]
for i = 4, #ARGV, 3 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*', 'n', ARGV[i + 1],
             'd', ARGV[i + 2])
end
for _, key in ipairs(KEYS) do
  redis.call('EXPIRE', key, ttl)
end
redis.call('PUBLISH', ARGV[3], table.concat(KEYS, '\\n'))
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
        # Pub/sub channels are not per database: the number keeps two deployments that share
        # a server and a prefix from reading each other's news.
        db = self._sync.connection_pool.connection_kwargs.get("db", 0)
        self.news_channel = f"{prefix}:hub-news:{db}"
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
        pipe.publish(self.news_channel, key)
        event_id, *_ = pipe.execute()
        return event_id.decode()

    async def publish_many(self, events: Sequence[tuple[str, str, str]]) -> None:
        if not events:
            return
        keys: dict[str, int] = {}  # stream -> its index in KEYS (Lua counts from 1)
        args: list[str | int] = [self.ttl, STREAM_MAXLEN, self.news_channel]
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
                # The cap is a setting because redis-py's default of 100 once failed the
                # 101st stream.
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


def _id_key(event_id: bytes) -> tuple[int, int]:
    ms, _, seq = event_id.partition(b"-")
    return int(ms), int(seq or 0)


def _as_sent(response, **options):
    return response


def _position(after: str | None) -> bytes:
    """A subscriber's `after` as a stream id to read from; anything that is not one (no id, a
    stale Last-Event-ID of another form) reads from the start."""
    try:
        ms, seq = _id_key((after or "").encode())
    except ValueError:
        return b"0-0"
    return b"%d-%d" % (ms, seq)


class _RedisSubscription:
    def __init__(self, reader: "_SharedReader", key: bytes, last: bytes):
        self.reader = reader
        self.key = key
        # The id of the last event handed to this subscription (or its `after`): the reader's.
        self.last = last
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.ready = asyncio.Event()

    def deliver(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.ready.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.ready.set()

    async def get(self, timeout: float) -> list[Event]:
        if not self.events and self.error is None:
            # Not wait_for, which starts a task per wait: streams wait after every event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.ready.wait()
        self.ready.clear()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        events, self.events = self.events, []
        return events

    def close(self) -> None:
        self.reader.unsubscribe(self)


class _SharedReader:
    """All the SSE streams of one web process read by one task, which reads only the streams
    that have news.

    Every batch a worker writes names its streams on the hub's news channel, in the same
    script as the writes. The reader listens to that channel on a connection of its own and
    reads the named streams it follows, in one `XREAD`, each from where it stopped: a read
    costs what the streams with news hold, not how many streams are open (an `XREAD BLOCK`
    naming every open stream, its positions rebuilt each time, cost more with every stream
    open: benchmarks/load/README.md, eighth round). A new subscription is news too:
    its backlog is read at once. Every SWEEP_SECONDS a read names every followed stream
    anyway: it proves Redis still answers, and bounds how late an event nobody announced
    (written by a worker from before the channel, during a deploy) can be.

    The channel is subscribed before the first read, so whatever a read misses is announced
    after it. When the read or the channel's connection fails, every subscription fails (its
    SSE view falls back, the browser reconnects and resumes); the next subscription connects
    afresh.
    """

    COUNT = 500  # entries per stream per read; a stream with more stays news
    GATHER_SECONDS = 0.01  # after a read that found events, let a few more arrive
    SWEEP_SECONDS = 5.0
    CONFIRM_SECONDS = 5.0

    def __init__(self, hub: "RedisHub"):
        self.hub = hub
        self.subs: dict[bytes, set[_RedisSubscription]] = {}
        # Where the next read of each followed stream starts: at or before every one of its
        # subscriptions' last event.
        self.positions: dict[bytes, bytes] = {}
        self.news: set[bytes] = set()
        self.has_news = asyncio.Event()
        self.has_subs = asyncio.Event()
        self.pubsub: redis.asyncio.client.PubSub | None = None
        self.task: asyncio.Task | None = None

    def subscribe(self, stream: str, after: str | None) -> _RedisSubscription:
        sub = _RedisSubscription(self, self.hub._key(stream).encode(), _position(after))
        self.subs.setdefault(sub.key, set()).add(sub)
        position = self.positions.get(sub.key)
        if position is None or _id_key(sub.last) < _id_key(position):
            # Further back than a read in flight may be: that read's answer skips it (_deliver).
            self.positions[sub.key] = sub.last
        self.news.add(sub.key)
        self.has_news.set()
        self.has_subs.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return sub

    def unsubscribe(self, sub: _RedisSubscription) -> None:
        subs = self.subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subs[sub.key]
                del self.positions[sub.key]
                self.news.discard(sub.key)

    async def _run(self) -> None:
        try:
            while True:
                if not self.subs:
                    self.has_subs.clear()
                    await self.has_subs.wait()
                try:
                    await self._serve()
                except* Exception as failure:
                    # Redis is unreachable: every waiting stream hears of it (and falls back
                    # to the database or ends; the browser reconnects).
                    self._fail_all(failure.exceptions[0])
        finally:
            # The reader lasts as long as its event loop: when the loop shuts down (the web
            # process stopping, or a test's loop) its task is cancelled, and the loop's Redis
            # connections are closed with it instead of being left to the garbage collector.
            await self.hub.aclose()

    async def _serve(self) -> None:
        client = self.hub._async_client()
        pubsub = self.pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.hub.news_channel)
            confirmed = await pubsub.get_message(timeout=self.CONFIRM_SECONDS)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise redis.exceptions.ConnectionError("the hub's news channel did not answer")
            # The reads' answers as Redis sends them: redis-py converts them to a dict per
            # entry, the reader's largest cost once reads named only the streams with news.
            reads = redis.asyncio.Redis(connection_pool=client.connection_pool)
            reads.set_response_callback("XREAD", _as_sent)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._listen(pubsub))
                tasks.create_task(self._read(reads))
        finally:
            self.pubsub = None
            await pubsub.aclose()

    async def _listen(self, pubsub: redis.asyncio.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None or message["type"] != "message":
                continue
            named = [key for key in message["data"].split(b"\n") if key in self.subs]
            if named:
                self.news.update(named)
                self.has_news.set()

    async def _read(self, client: redis.asyncio.Redis) -> None:
        loop = asyncio.get_running_loop()
        sweep_at = loop.time() + self.SWEEP_SECONDS
        while True:
            if not self.news:
                self.has_news.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(sweep_at):
                        await self.has_news.wait()
            if loop.time() >= sweep_at:
                sweep_at = loop.time() + self.SWEEP_SECONDS
                self.news.update(self.subs)
            keys, self.news = self.news, set()
            request = {key: self.positions[key] for key in keys if key in self.subs}
            if not request:
                continue
            response = await client.xread(request, count=self.COUNT)
            items = response.items() if isinstance(response, dict) else (response or [])
            found = False
            for key, entries in items:
                if entries:
                    found = True
                    self._deliver(key, request[key], entries)
            if found:
                await asyncio.sleep(self.GATHER_SECONDS)

    def _deliver(self, key: bytes, start: bytes, entries: list) -> None:
        """A read's entries of one stream, read from after `start`, to its subscriptions."""
        subs = self.subs.get(key)
        if not subs:
            return  # unsubscribed during the read
        # Every writer (the script, `publish`) adds an entry's fields in the order n, d.
        events = [
            Event(id=eid.decode(), name=fields[1].decode(), data=fields[3].decode())
            for eid, fields in entries
        ]
        last = entries[-1][0]
        for sub in subs:
            if sub.last == start:
                sub.deliver(events)
                sub.last = last
                continue
            since = _id_key(sub.last)
            if since < _id_key(start):
                continue  # subscribed during the read, further back: the next read's
            fresh = [e for e, (eid, _) in zip(events, entries, strict=True) if _id_key(eid) > since]
            if fresh:
                sub.deliver(fresh)
                sub.last = last
        if self.positions[key] == start:
            self.positions[key] = last
        if len(entries) >= self.COUNT:
            self.news.add(key)

    def _fail_all(self, exc: BaseException) -> None:
        for subs in self.subs.values():
            for sub in subs:
                sub.fail(exc)
        self.subs.clear()
        self.positions.clear()
        self.news.clear()
