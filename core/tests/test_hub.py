"""The Redis stream hub: batched publishing and the per-process shared reader."""

import asyncio
import time

import pytest
from django.conf import settings

from core.hub import RedisHub

pytestmark = pytest.mark.skipif(
    settings.ARENA_HUB != "redis", reason="the Redis hub: runs in the service-mode pass"
)


def _hub() -> RedisHub:
    return RedisHub(settings.REDIS_URL, 60, f"{settings.ARENA_REDIS_PREFIX}-hubtest")


async def _collect(subscription, count: int) -> list[str]:
    seen: list[str] = []
    while len(seen) < count:
        events = await subscription.get(timeout=5)
        assert events, f"no event after {seen}"
        seen.extend(e.data for e in events)
    return seen


def test_a_subscription_opened_during_a_read_further_back_gets_every_event_in_order():
    hub = _hub()

    async def main():
        hub.discard("s")
        ids = [hub.publish("s", "delta-a", str(i)) for i in range(5)]
        caught_up = hub.subscribe("s", ids[-1])  # the shared read now blocks after event 4
        await asyncio.sleep(0.1)
        fresh = hub.subscribe("s", None)  # a reload without Last-Event-ID: from the start
        await asyncio.sleep(0.05)
        hub.publish("s", "delta-a", "5")
        hub.publish_batched("s", "delta-a", "6")
        hub.publish("s", "turn-end", "7")  # written after the batched event before it
        assert await _collect(fresh, 8) == [str(i) for i in range(8)]
        assert await _collect(caught_up, 3) == ["5", "6", "7"]
        caught_up.close()
        fresh.close()
        hub.discard("s")

    asyncio.run(main())


def test_streams_of_one_process_share_one_reader_and_idle_ones_time_out_empty():
    hub = _hub()

    async def main():
        names = [f"idle-{i}" for i in range(50)]
        for name in names:
            hub.discard(name)
        subscriptions = [hub.subscribe(name, None) for name in names]
        assert len(hub._readers) == 1
        assert await subscriptions[0].get(timeout=0.3) == []
        hub.publish(names[-1], "delta-b", "x")
        assert [e.data for e in await subscriptions[-1].get(timeout=5)] == ["x"]
        for subscription in subscriptions:
            subscription.close()
        for name in names:
            hub.discard(name)

    asyncio.run(main())


def test_watched_flags_are_read_together_and_seen_within_a_poll():
    hub = _hub()
    for key in ("stop:1", "stop:2", "stop:3"):
        hub.clear_flag(key)
    hub.set_flag("stop:3")
    with hub.watch_flag("stop:1") as one, hub.watch_flag("stop:2") as two:
        with hub.watch_flag("stop:3") as three:
            assert three.is_set()  # raised before the watch began: seen at once
        assert not one.is_set() and not two.is_set()
        hub.set_flag("stop:2")
        deadline = time.monotonic() + 5
        while not two.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert two.is_set() and not one.is_set()
        assert set(hub._watched) == {"stop:1", "stop:2"}
    assert hub._watched == {} and hub._raised == set()
    for key in ("stop:2", "stop:3"):
        hub.clear_flag(key)


def test_a_batched_event_marked_soon_is_written_without_waiting_for_the_window(monkeypatch):
    # A window long enough to tell the two apart: a reply's first token must not wait for it.
    monkeypatch.setattr("core.hub.BATCH_WINDOW_SECONDS", 1.5)
    hub = _hub()
    hub.discard("soon")
    key = hub._key("soon")

    def written_within(seconds: float) -> list[bytes]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            entries = hub._sync.xrange(key)
            if entries:
                return [fields[b"d"] for _, fields in entries]
            time.sleep(0.01)
        return []

    hub.publish_batched("soon", "delta-a", "later")
    assert written_within(0.5) == []  # waits for the end of the window
    assert written_within(2.0) == [b"later"]
    hub.discard("soon")

    hub.publish_batched("soon", "delta-a", "first token", soon=True)
    started = time.monotonic()
    assert written_within(1.0) == [b"first token"]
    assert time.monotonic() - started < 0.5
    hub.discard("soon")
