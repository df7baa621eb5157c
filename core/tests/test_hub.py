"""The stream hub's two back-ends keep one contract: ordered events, resumable subscriptions,
flags read together. The Redis one runs in the service-mode pass."""

import asyncio

import pytest
from django.conf import settings

from core.hub import Hub, MemoryHub, RedisHub
from core.hub import redis as redis_hub


@pytest.fixture(params=["memory", "redis"])
def hub(request) -> Hub:
    if request.param == "memory":
        return MemoryHub(60)
    if settings.ARENA_HUB != "redis":
        pytest.skip("the Redis hub: runs in the service-mode pass")
    return RedisHub(
        settings.REDIS_URL, 60, f"{settings.ARENA_REDIS_PREFIX}-hubtest", max_connections=50
    )


async def _collect(subscription, count: int) -> list[str]:
    seen: list[str] = []
    while len(seen) < count:
        events = await subscription.get(timeout=5)
        assert events, f"no event after {seen}"
        seen.extend(e.data for e in events)
    return seen


def test_events_keep_their_order_and_a_reconnect_resumes_after_its_last_id(hub):
    async def main():
        hub.discard("order")
        hub.publish("order", "pane-a", "0")
        await hub.publish_many([("order", "delta-a", "1"), ("order", "delta-b", "2")])
        hub.publish("order", "turn-end", "3")
        first = hub.subscribe("order", None)
        events = []
        while len(events) < 4:
            events += await first.get(timeout=5)
        first.close()
        assert [(e.name, e.data) for e in events] == [
            ("pane-a", "0"),
            ("delta-a", "1"),
            ("delta-b", "2"),
            ("turn-end", "3"),
        ]
        resumed = hub.subscribe("order", events[1].id)  # the browser's Last-Event-ID
        assert await _collect(resumed, 2) == ["2", "3"]
        assert await resumed.get(timeout=0.2) == []
        resumed.close()
        hub.discard("order")
        forgotten = hub.subscribe("order", None)
        assert await forgotten.get(timeout=0.2) == []
        forgotten.close()
        await hub.aclose()

    asyncio.run(main())


def test_a_subscription_opened_during_a_read_further_back_gets_every_event_in_order(hub):
    async def main():
        hub.discard("s")
        ids = [hub.publish("s", "delta-a", str(i)) for i in range(5)]
        caught_up = hub.subscribe("s", ids[-1])  # the shared read now blocks after event 4
        await asyncio.sleep(0.1)
        fresh = hub.subscribe("s", None)  # a reload without Last-Event-ID: from the start
        await asyncio.sleep(0.05)
        hub.publish("s", "delta-a", "5")
        await hub.publish_many([("s", "delta-a", "6")])
        hub.publish("s", "turn-end", "7")
        assert await _collect(fresh, 8) == [str(i) for i in range(8)]
        assert await _collect(caught_up, 3) == ["5", "6", "7"]
        caught_up.close()
        fresh.close()
        hub.discard("s")
        await hub.aclose()

    asyncio.run(main())


def test_one_read_answers_which_flags_are_up(hub):
    keys = ["stop:1", "stop:2", "stop:3"]

    async def main():
        for key in keys:
            hub.clear_flag(key)
        hub.set_flag("stop:1")
        hub.set_flag("stop:3")
        assert await hub.flags_up(keys) == {"stop:1", "stop:3"}
        hub.clear_flag("stop:1")
        assert await hub.flags_up(keys) == {"stop:3"}
        assert await hub.flags_up([]) == set()
        hub.clear_flag("stop:3")
        await hub.aclose()

    asyncio.run(main())


def test_streams_of_one_process_share_one_reader_and_idle_ones_time_out_empty(hub):
    if not isinstance(hub, RedisHub):
        pytest.skip("the shared XREAD reader is the Redis hub's")

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
        await hub.aclose()

    asyncio.run(main())


def test_a_batch_is_one_script_that_keeps_each_streams_ttl_and_survives_a_flushed_cache(hub):
    if not isinstance(hub, RedisHub):
        pytest.skip("the batch script is the Redis hub's")

    async def main():
        for name in ("x", "y"):
            hub.discard(name)
        hub._sync.script_flush()  # as after a restart: EVALSHA fails, EVAL caches it again
        await hub.publish_many([("x", "delta-a", "1"), ("y", "delta-b", "2"), ("x", "p", "3")])
        await hub.publish_many([("y", "turn-end", "")])
        assert hub._sync.script_exists(redis_hub.PUBLISH_MANY_SHA) == [True]
        for name, expected in (("x", ["1", "3"]), ("y", ["2", ""])):
            assert 0 < hub._sync.ttl(hub._key(name)) <= 60
            subscription = hub.subscribe(name, None)
            assert await _collect(subscription, len(expected)) == expected
            subscription.close()
            hub.discard(name)
        await hub.aclose()

    asyncio.run(main())
