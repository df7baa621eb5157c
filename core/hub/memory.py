"""The embedded mode's hub: streams and flags in this process's memory.

Generation and the SSE streams run in the same process here (the web process), in different
event loops and threads: a publish wakes each waiting stream in its own loop.
"""

import asyncio
import bisect
import threading
import time
from collections.abc import Collection, Sequence

from core.hub.protocol import Event


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
            event_id = self._append_locked(stream, name, data)
            waiters = list(self._waiters.get(stream, ()))
        self._wake(waiters)
        return event_id

    async def publish_many(self, events: Sequence[tuple[str, str, str]]) -> None:
        with self._lock:
            streams = set()
            for stream, name, data in events:
                self._append_locked(stream, name, data)
                streams.add(stream)
            waiters = [w for stream in streams for w in self._waiters.get(stream, ())]
        self._wake(waiters)

    def _append_locked(self, stream: str, name: str, data: str) -> str:
        self._gc()
        self._next_id += 1
        event = Event(id=str(self._next_id), name=name, data=data)
        self._streams.setdefault(stream, []).append(event)
        self._expires[stream] = time.monotonic() + self.ttl
        return event.id

    @staticmethod
    def _wake(waiters) -> None:
        for loop, ready in waiters:
            loop.call_soon_threadsafe(ready.set)

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
        return events[bisect.bisect_right(events, last, key=lambda e: int(e.id)) :]

    def discard(self, stream: str) -> None:
        with self._lock:
            self._streams.pop(stream, None)
            self._expires.pop(stream, None)

    def subscribe(self, stream: str, after: str | None) -> "MemorySubscription":
        return MemorySubscription(self, stream, after)

    async def _wait_after(self, stream: str, after: str | None, timeout: float) -> list[Event]:
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

    def clear_flag(self, key: str) -> None:
        with self._lock:
            self._flags.pop(key, None)

    async def flags_up(self, keys: Collection[str]) -> set[str]:
        with self._lock:
            return {key for key in keys if key in self._flags}

    def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        """Nothing to close: no connections."""


class MemorySubscription:
    def __init__(self, hub: MemoryHub, stream: str, after: str | None):
        self.hub = hub
        self.stream = stream
        self.after = after

    async def get(self, timeout: float) -> list[Event]:
        events = await self.hub._wait_after(self.stream, self.after, timeout)
        if events:
            self.after = events[-1].id
        return events

    def close(self) -> None:
        """Nothing to release: a waiting `get` removes its own waiter."""
