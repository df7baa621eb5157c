"""Writing the hub events of every reply a process generates, a batch at a time.

A round trip per token was once the largest share of a worker's time; one per reply and
delta still grew with the replies in flight. Here each reply's text waits in the reply
(`take_deltas`) and one `publish_many` carries everything waiting in the process: at most
every DELTA_PUBLISH_SECONDS, at once for a reply's first token and for a pane. Events keep
the order they were queued in: a reply's final pane always follows its last delta.
"""

import asyncio
import contextlib
import logging
from typing import Protocol

from core.hub import Hub

log = logging.getLogger(__name__)

# Text that arrives within this many seconds travels in one event per reply.
DELTA_PUBLISH_SECONDS = 0.05


class DeltaSource(Protocol):
    def take_deltas(self) -> tuple[str, str, str] | None:
        """The reply's text waiting to go out, as one `(stream, name, data)` event."""


class Publisher:
    """Lives in the generation loop and is used only from it."""

    def __init__(self, hub: Hub, window: float = DELTA_PUBLISH_SECONDS):
        self.hub = hub
        self.window = window
        self._events: list[tuple[str, str, str]] = []
        self._sources: dict[DeltaSource, None] = {}  # ordered: first waiting, first sent
        self._written: asyncio.Future[BaseException | None] | None = None
        self._wake = self._soon = False
        self._soon_event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def deltas_waiting(self, source: DeltaSource, *, soon: bool) -> None:
        """A reply has text to send: within the window, or at once if `soon`."""
        self._sources[source] = None
        self._kick(soon)

    def queue(self, stream: str, name: str, data: str) -> None:
        """Send an event at once, behind everything queued before it; no waiting."""
        self._events.append((stream, name, data))
        self._kick(soon=True)

    def take(self, source: DeltaSource) -> None:
        """Queue a reply's waiting text now, so what is queued next comes after it."""
        self._sources.pop(source, None)
        if event := source.take_deltas():
            self._events.append(event)

    async def send(self, stream: str, name: str, data: str) -> None:
        """Queue an event and wait until it is written; raises what the hub raised."""
        self.queue(stream, name, data)
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        error = await asyncio.shield(self._written)
        if error is not None:
            raise error

    def _kick(self, soon: bool) -> None:
        self._wake = True
        if soon:
            self._soon = True
            if self._soon_event is not None:
                self._soon_event.set()
        if self._task is None or self._task.done():
            # The task runs while there is something to write, and ends when there is not.
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher")

    async def _run(self) -> None:
        while self._wake:
            if not self._soon:
                self._soon_event = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._soon_event.wait(), self.window)
                self._soon_event = None
            # Cleared before the batch is taken: whatever is queued later wakes the next one.
            self._wake = self._soon = False
            events, self._events = self._events, []
            for source in self._sources:
                if event := source.take_deltas():
                    events.append(event)
            self._sources.clear()
            written, self._written = self._written, None
            error = None
            if events:
                try:
                    await self.hub.publish_many(events)
                except Exception as exc:
                    # The deltas are a preview (the final pane carries the whole text, and the
                    # database keeps it): drop them, and tell whoever waits for a pane.
                    log.warning("hub: %d events not published: %s", len(events), exc)
                    error = exc
            if written is not None:
                written.set_result(error)
