"""The stream hub's two back-ends keep one contract: ordered events, resumable subscriptions,
flags read together. The Redis one runs in the service-mode pass."""

import asyncio
import socket
import time

import pytest
import redis
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
        pytest.skip("the shared reader is the Redis hub's")

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


def test_a_subscription_gets_the_events_published_before_its_first_read(hub):
    async def main():
        hub.discard("early")
        subscription = hub.subscribe("early", None)
        hub.publish("early", "pane-a", "0")  # before the reader has run at all
        await hub.publish_many([("early", "delta-a", "1")])
        assert await _collect(subscription, 2) == ["0", "1"]
        subscription.close()
        hub.discard("early")
        await hub.aclose()

    asyncio.run(main())


def test_a_new_subscriptions_backlog_comes_at_once_while_the_reader_waits(hub):
    async def main():
        hub.discard("waiting")
        hub.discard("backlog")
        waiting = hub.subscribe("waiting", None)
        assert await waiting.get(timeout=0.3) == []  # the reader now waits for news
        ids = [hub.publish("backlog", "delta-a", str(i)) for i in range(3)]
        started = time.monotonic()
        late = hub.subscribe("backlog", ids[0])
        assert await _collect(late, 2) == ["1", "2"]
        # Not the next sweep's, nor a blocking read's timeout: the subscription is news.
        assert time.monotonic() - started < 1.0
        waiting.close()
        late.close()
        hub.discard("backlog")
        await hub.aclose()

    asyncio.run(main())


def test_subscriptions_joining_a_busy_stream_at_any_point_get_each_later_event_once_in_order(hub):
    async def main():
        hub.discard("busy")
        total = 120
        published: list[tuple[int, str]] = []  # (index, id) of the events published one by one
        followers = []  # (index of the first event due, subscription)

        async def write():
            for i in range(total):
                if i % 3 == 0:
                    published.append((i, hub.publish("busy", "delta-a", str(i))))
                else:
                    await hub.publish_many([("busy", "delta-a", str(i))])
                await asyncio.sleep(0.002)

        async def join():
            for n in range(12):
                await asyncio.sleep(0.02)
                # From the start, after the latest event, after one far back: as a reload and
                # reconnecting browsers ask.
                if n % 3 == 0 or not published:
                    first, after = 0, None
                else:
                    index, after = published[-1] if n % 3 == 1 else published[len(published) // 3]
                    first = index + 1
                followers.append((first, hub.subscribe("busy", after)))

        await asyncio.gather(write(), join())
        for first, subscription in followers:
            expected = [str(i) for i in range(first, total)]
            assert await _collect(subscription, len(expected)) == expected
            assert await subscription.get(timeout=0.2) == []
            subscription.close()
        hub.discard("busy")
        await hub.aclose()

    asyncio.run(main())


def _redis_only(hub) -> None:
    if not isinstance(hub, RedisHub):
        pytest.skip("the shared reader is the Redis hub's")


def _address(connection) -> str:
    """How Redis's CLIENT LIST names one of our connections."""
    host, port = connection._writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


def test_quiet_and_closed_streams_are_not_read_while_another_streams(hub, monkeypatch):
    _redis_only(hub)
    monkeypatch.setattr(redis_hub._SharedReader, "SWEEP_SECONDS", 60.0)

    async def main():
        for name in ("quiet", "closed", "busy"):
            hub.discard(name)
            hub.publish(name, "pane-a", "0")
        quiet, closed, busy = (hub.subscribe(name, None) for name in ("quiet", "closed", "busy"))
        for subscription in (quiet, closed, busy):
            assert await _collect(subscription, 1) == ["0"]
        closed.close()
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            sent += 1
            await hub.publish_many([("busy", "delta-a", str(sent))])
            assert [e.data for e in await busy.get(timeout=5)] == [str(sent)]
            await asyncio.sleep(0.02)
        # Redis's idle time of a key counts from its last read: the busy stream was read about
        # a hundred times meanwhile, the other two not once.
        idle = {name: hub._sync.object("idletime", hub._key(name)) for name in ("quiet", "closed")}
        assert min(idle.values()) >= 2, idle
        assert await quiet.get(timeout=0.01) == []
        for subscription in (quiet, busy):
            subscription.close()
        for name in ("quiet", "closed", "busy"):
            hub.discard(name)
        await hub.aclose()

    asyncio.run(main())


def test_an_event_nobody_announced_comes_with_the_next_sweep(hub, monkeypatch):
    _redis_only(hub)
    monkeypatch.setattr(redis_hub._SharedReader, "SWEEP_SECONDS", 0.5)

    async def main():
        hub.discard("old-worker")
        subscription = hub.subscribe("old-worker", None)
        assert await subscription.get(timeout=0.2) == []
        # As a worker from before the news channel writes during a deploy: no announcement.
        hub._sync.xadd(hub._key("old-worker"), {"n": "delta-a", "d": "unannounced"})
        assert [e.data for e in await subscription.get(timeout=2)] == ["unannounced"]
        subscription.close()
        hub.discard("old-worker")
        await hub.aclose()

    asyncio.run(main())


def test_every_waiting_subscription_fails_when_redis_cannot_be_reached(hub):
    _redis_only(hub)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    unreachable = RedisHub(f"redis://127.0.0.1:{port}/0", 60, "down", max_connections=10)

    async def main():
        subscriptions = [unreachable.subscribe(f"s{i}", None) for i in range(3)]
        for subscription in subscriptions:
            with pytest.raises(redis.exceptions.ConnectionError):
                await subscription.get(timeout=5)
            subscription.close()

    asyncio.run(main())


def test_a_lost_news_connection_fails_every_waiting_subscription_and_the_next_one_reconnects(
    hub,
):
    _redis_only(hub)

    async def main():
        for name in ("a", "b"):
            hub.discard(name)
        waiting = [hub.subscribe(name, None) for name in ("a", "b")]
        assert await waiting[0].get(timeout=0.3) == []
        reader = hub._readers[asyncio.get_running_loop()]
        # Redis drops the reader's channel connection (a restart, its output buffer limit):
        # what was announced meanwhile is gone, so the streams must not carry on as if whole.
        hub._sync.client_kill_filter(_type="pubsub", addr=_address(reader.pubsub.connection))
        for subscription in waiting:
            with pytest.raises(redis.exceptions.ConnectionError):
                await subscription.get(timeout=5)
            subscription.close()
        again = hub.subscribe("a", None)
        hub.publish("a", "delta-a", "after")
        assert await _collect(again, 1) == ["after"]
        again.close()
        for name in ("a", "b"):
            hub.discard(name)
        await hub.aclose()

    asyncio.run(main())


def test_the_reader_ends_with_its_event_loop_and_closes_its_connections(hub):
    _redis_only(hub)
    seen = {}

    async def main():
        subscription = hub.subscribe("short", None)
        assert await subscription.get(timeout=0.3) == []
        reader = seen["reader"] = hub._readers[asyncio.get_running_loop()]
        seen["address"] = _address(reader.pubsub.connection)
        # The loop ends with the subscription still open, as a web process stopping.

    asyncio.run(main())
    assert seen["reader"].task.done()
    clients = hub._sync.client_list()
    assert seen["address"] not in {client["addr"] for client in clients}
