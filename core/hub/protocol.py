"""What every stream hub offers, and the event it carries.

Three kinds of caller, one API on both back-ends:
- request code (the battle services, the reaper) appends an event or sets a flag now,
  synchronously: `publish`, `discard`, `set_flag`, `clear_flag`;
- the generation loop, which holds every reply of its process, writes all their events and
  reads all their stop flags in one round trip each: `publish_many`, `flags_up`;
- SSE streams `subscribe` to a stream and await its events: no thread per open stream.
"""

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    data: str


class Subscription(Protocol):
    """One SSE connection's view of a stream."""

    async def get(self, timeout: float) -> list[Event]:
        """The events after the last one returned, waiting up to `timeout` seconds for some
        (an empty list when none came). Raises when the hub cannot be reached."""

    def close(self) -> None:
        """The connection ended: stop delivering to it."""


class Hub(Protocol):
    def publish(self, stream: str, name: str, data: str) -> str:
        """Append one event now; its id."""

    def discard(self, stream: str) -> None:
        """Forget a stream (a retried turn starts afresh)."""

    def set_flag(self, key: str) -> None: ...

    def clear_flag(self, key: str) -> None: ...

    def ping(self) -> bool: ...

    async def publish_many(self, events: Sequence[tuple[str, str, str]]) -> None:
        """Append `(stream, name, data)` events, in order, in one round trip."""

    async def flags_up(self, keys: Collection[str]) -> set[str]:
        """Which of these flags are set, in one round trip."""

    def subscribe(self, stream: str, after: str | None) -> Subscription:
        """Follow a stream from after the event id `after` (None: from its start). Called in
        the event loop that will await the subscription."""

    async def aclose(self) -> None:
        """Close the calling event loop's connections, as the loop ends (the next use opens
        new ones)."""


def format_sse(events: Iterable[Event]) -> str:
    parts = []
    for event in events:
        lines = "".join(f"data: {line}\n" for line in event.data.split("\n"))
        parts.append(f"id: {event.id}\nevent: {event.name}\n{lines}\n")
    return "".join(parts)
