"""The web's shared hub reader with many open streams: its CPU per delivered event and the
publish → deliver latency, when only some of the open streams are being written.

python -m benchmarks.hub_reader [--subs 100 500 1000] [--active 200] [--rate 10] [--seconds 10]

This process plays one web process: N subscriptions on distinct streams, each awaited by a
coroutine as an SSE view awaits it. A second process plays the Celery worker: every 50 ms
(the generation publisher's window) one `publish_many` carries an event for each active
stream whose turn has come, `--rate` events a second per stream, over a window of `--active`
streams that moves along the N, so streams fall quiet and others start. Each event carries
its publish time; the latency is taken when the subscription's `get` returns it. The CPU is
this process's (the reader and the awaiting coroutines) over the measured seconds; Redis's
own CPU comes from INFO (the server may be shared: take it as a hint).
"""

import argparse
import asyncio
import faulthandler
import multiprocessing
import os
import statistics
import time

import redis

from core.hub.redis import RedisHub

REDIS_URL = "redis://127.0.0.1:6379/13"
PUBLISH_WINDOW = 0.05  # battles.generation.publisher.DELTA_PUBLISH_SECONDS
WARMUP_SECONDS = 2.0


def _stream(i: int) -> str:
    return f"turn:{i}"


def _publish(url, prefix, subs, active, rate, seconds, start_at) -> None:
    """The worker's side: batches of small events over a moving window of active streams."""
    hub = RedisHub(url, 600, prefix, max_connections=4)
    active = min(active, subs)
    period = 1.0 / rate
    # Each stream's next event is due at a staggered time, so batches are even.
    due = {i: start_at + (i % active) * period / active for i in range(subs)}
    # The window moves a tenth of its width a second: a stream stays active about 10 s.
    shift = max(1, active // 10)

    async def main():
        while time.time() < start_at:
            await asyncio.sleep(0.01)
        end = start_at + seconds
        while (now := time.time()) < end:
            first = int((now - start_at) * shift)
            events = []
            for j in range(first, first + active):
                i = j % subs
                if due[i] <= now:
                    events.append((_stream(i), "delta-a", f"{now:.6f} " + "x" * 24))
                    # A stream back from quiet starts afresh rather than catching up.
                    due[i] = due[i] + period if due[i] + period > now else now + period
            await hub.publish_many(events)
            await asyncio.sleep(max(0.0, PUBLISH_WINDOW - (time.time() - now)))
        await hub.aclose()

    asyncio.run(main())


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run_level(url: str, subs: int, active: int, rate: int, seconds: float) -> dict:
    prefix = f"bench-hub-reader-{os.getpid()}-{subs}"
    hub = RedisHub(url, 600, prefix, max_connections=50)
    plain = redis.Redis.from_url(url)
    names = [_stream(i) for i in range(subs)]
    for name in names:
        hub.discard(name)
    start_at = time.time() + 1.0
    publisher = multiprocessing.get_context("spawn").Process(
        target=_publish, args=(url, prefix, subs, active, rate, WARMUP_SECONDS + seconds, start_at)
    )
    publisher.start()
    latencies: list[float] = []
    counted = {"events": 0, "measuring": False}

    async def follow(subscription) -> None:
        while True:
            events = await subscription.get(timeout=10)
            now = time.time()
            if counted["measuring"]:
                counted["events"] += len(events)
                latencies.extend(now - float(e.data.split(" ", 1)[0]) for e in events)

    async def main() -> tuple[float, float]:
        subscriptions = [hub.subscribe(name, None) for name in names]
        followers = [asyncio.create_task(follow(s)) for s in subscriptions]
        await asyncio.sleep(start_at + WARMUP_SECONDS - time.time())
        cpu, redis_cpu = time.process_time(), _redis_cpu(plain)
        counted["measuring"] = True
        await asyncio.sleep(seconds)
        counted["measuring"] = False
        cpu, redis_cpu = time.process_time() - cpu, _redis_cpu(plain) - redis_cpu
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for subscription in subscriptions:
            subscription.close()
        await hub.aclose()
        return cpu, redis_cpu

    cpu, redis_cpu = asyncio.run(main())
    publisher.join()
    for name in names:
        hub.discard(name)
    events = counted["events"]
    latencies.sort()
    return {
        "subs": subs,
        "events": events,
        "cpu_us": cpu / events * 1e6 if events else float("nan"),
        "cpu_share": cpu / seconds,
        "redis_us": redis_cpu / events * 1e6 if events else float("nan"),
        "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p95": latencies[int(len(latencies) * 0.95)] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subs", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--active", type=int, default=200, help="streams written at once")
    parser.add_argument("--rate", type=int, default=10, help="events a second per stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per level")
    parser.add_argument("--redis", default=REDIS_URL)
    args = parser.parse_args()
    print(
        f"load average (1 min) at start: {os.getloadavg()[0]:.2f}; active streams "
        f"{args.active}, {args.rate} events/s each, {args.seconds:g} s per level"
    )
    print(
        f"{'subs':>6}{'events':>9}{'reader CPU %':>14}{'CPU µs/event':>14}"
        f"{'Redis µs/event':>16}{'p50 ms':>9}{'p95 ms':>9}{'load':>7}"
    )
    for subs in args.subs:
        # A level that hangs says where, instead of holding the machine.
        faulthandler.dump_traceback_later(WARMUP_SECONDS + args.seconds + 120, exit=True)
        row = run_level(args.redis, subs, args.active, args.rate, args.seconds)
        print(
            f"{row['subs']:>6}{row['events']:>9}{row['cpu_share']:>14.1%}{row['cpu_us']:>14.1f}"
            f"{row['redis_us']:>16.1f}{row['p50']:>9.1f}{row['p95']:>9.1f}"
            f"{os.getloadavg()[0]:>7.2f}"
        )
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main()
