"""The replies one process generates, all held by its one event loop (`core.loop`).

A task's thread only claims a reply and hands it over (`take`), then returns: a reply in
flight costs a coroutine and its buffers, not a thread, so a process holds as many as its
memory allows, up to ARENA_MAX_REPLIES_PER_PROCESS. Past that cap `take` waits for a free
slot, so the task threads stop taking work and the broker keeps the rest for other worker
processes (back-pressure).

What every reply needs done regularly is done for all of them together, in the loop:
- deltas: one hub write per batch (`publisher.Publisher`);
- stop flags: one hub read every FLAG_POLL_SECONDS for every reply's turn, so a stop takes
  effect within about a quarter of a second whatever the number of replies;
- checkpoints: one database write every ARENA_HEARTBEAT_SECONDS with every reply's
  heartbeat and new text. A process that dies (or a loop that stops turning) stops them,
  and the reaper fails its replies.

Database work leaves the loop through one door, a few `DatabaseThreads`. A warm shutdown
(`drain`) lets replies finish for a grace period, then ends the rest as failed, plainly.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Sequence

from django.conf import settings

from battles.generation.publisher import Publisher
from battles.generation.records import Ending, replies_checkpoint, replies_claim
from battles.generation.run import ReplyRun
from core import loop as process_loop
from core.db import DatabaseThreads, released_connection
from core.dispatch import enqueue_now
from core.hub import Hub, get_hub

log = logging.getLogger(__name__)

GENERATE_TASK = "battles.tasks.reply_generate_task"
# Stop flags of every reply in flight are read this often, in one round trip.
FLAG_POLL_SECONDS = 0.25
# The loop's database threads: ends and checkpoints are a few milliseconds each.
DATABASE_THREADS = 4
# A waiting task looks up from its slot wait this often, to notice a shutdown.
SLOT_WAIT_SECONDS = 1.0
# After the grace period, interrupted replies get this long to record their end.
TEARDOWN_SECONDS = 10.0


class ReplyRunner:
    def __init__(self, *, hub: Hub, capacity: int, loop: asyncio.AbstractEventLoop):
        self.hub = hub
        self.loop = loop
        self.db = DatabaseThreads(DATABASE_THREADS, "generation-db")
        self.publisher = Publisher(hub)
        self.closing = False
        self._slots = threading.Semaphore(capacity)
        # Only the loop touches these.
        self._runs: dict[ReplyRun, asyncio.Task] = {}
        self._chores: dict[str, asyncio.Task] = {}

    # --- from a task's thread -------------------------------------------------------------

    def take(self, reply_id: int) -> concurrent.futures.Future[Ending] | None:
        """Claim the reply and hand it to the loop; the future says how it ended. None when
        the reply was not ours to generate, or when the process is shutting down (the reply
        goes back to the queue)."""
        return self.take_many([reply_id])[0]

    def take_many(self, reply_ids: Sequence[int]) -> list[concurrent.futures.Future[Ending] | None]:
        """`take` for several replies (a turn's two sides): those that have a free slot are
        claimed together, in one statement. Each is started on its own, so one whose run
        cannot be built does not keep the others from starting; the first such failure is
        raised once the others are in the loop."""
        ended: dict[int, concurrent.futures.Future[Ending] | None] = {}
        failure: Exception | None = None
        waiting = list(reply_ids)
        while waiting:
            if not self._slot_wait():
                for reply_id in waiting:
                    ended[reply_id] = self._hand_back(reply_id)
                break
            # More slots are only taken if free at once: a task never holds a slot while it
            # waits for another.
            batch = [waiting.pop(0)]
            while waiting and self._slots.acquire(blocking=False):
                batch.append(waiting.pop(0))
            started, error = self._take_batch(batch)
            ended |= started
            failure = failure or error
        if failure is not None:
            raise failure
        return [ended.get(reply_id) for reply_id in reply_ids]

    def _slot_wait(self) -> bool:
        """Wait for a free slot; False, with no slot held, when the process is shutting down
        (the reply goes back to the queue)."""
        while not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            if self.closing:
                return False
        if self.closing:
            self._slots.release()
            return False
        return True

    def _take_batch(
        self, batch: list[int]
    ) -> tuple[dict[int, concurrent.futures.Future[Ending]], Exception | None]:
        """Claim the batch (a slot held for each) and start what was claimed; the slots of
        the rest are given back. Returns the started replies and the first failure."""
        runs: dict[int, ReplyRun] = {}
        failure: Exception | None = None
        try:
            with released_connection():
                try:
                    claimed = replies_claim(batch)
                except Exception as exc:
                    # One bad id fails the whole claim: claim the others on their own.
                    failure, claimed = exc, []
                    for reply_id in batch if len(batch) > 1 else ():
                        with contextlib.suppress(Exception):
                            claimed += replies_claim([reply_id])
                for reply in claimed:
                    try:
                        runs[reply.pk] = ReplyRun.of(reply)
                    except Exception as exc:
                        # Claimed but not started: the reaper fails it when its heartbeat
                        # never comes.
                        failure = failure or exc
        finally:
            for _ in range(len(batch) - len(runs)):
                self._slots.release()
        ended: dict[int, concurrent.futures.Future[Ending]] = {}
        for reply_id, run in runs.items():
            ended[reply_id] = future = concurrent.futures.Future()
            self.loop.call_soon_threadsafe(self._start, run, future)
        return ended, failure

    def _hand_back(self, reply_id: int) -> None:
        enqueue_now(GENERATE_TASK, reply_id)

    def drain(self, grace: float) -> None:
        """Warm shutdown, from any thread but the loop's: take no more replies, let those in
        flight finish for `grace` seconds, then end the rest as failed ("interrupted", the
        text so far kept; the visitor can retry the side)."""
        self.closing = True
        future = asyncio.run_coroutine_threadsafe(self._drain(grace), self.loop)
        finished, interrupted = future.result(timeout=grace + TEARDOWN_SECONDS + 5)
        log.info("shutdown: %d replies finished, %d interrupted", finished, interrupted)

    # --- in the loop ----------------------------------------------------------------------

    def _start(self, run: ReplyRun, ended: concurrent.futures.Future) -> None:
        self._runs[run] = self.loop.create_task(self._own(run, ended))
        # The chores run while there are replies, and end after the last one.
        for name, chore in (("stop-flags", self._watch_flags), ("checkpoints", self._checkpoints)):
            if name not in self._chores or self._chores[name].done():
                self._chores[name] = self.loop.create_task(chore(), name=name)

    async def _own(self, run: ReplyRun, ended: concurrent.futures.Future) -> None:
        try:
            ending = await run.run(publisher=self.publisher, db=self.db)
        except BaseException as exc:
            ended.set_exception(exc)
            raise
        else:
            ended.set_result(ending)
        finally:
            del self._runs[run]
            self._slots.release()

    async def _drain(self, grace: float) -> tuple[int, int]:
        waiting = list(self._runs.values())
        if waiting:
            await asyncio.wait(waiting, timeout=grace)
        late = list(self._runs)
        for run in late:
            run.interrupt()
        if late:
            await asyncio.wait(list(self._runs.values()), timeout=TEARDOWN_SECONDS)
        return len(waiting) - len(late), len(late)

    async def _watch_flags(self) -> None:
        while self._runs:
            await asyncio.sleep(FLAG_POLL_SECONDS)
            runs = list(self._runs)
            try:
                raised = await self.hub.flags_up({run.stop_key for run in runs})
            except Exception as exc:
                # The hub is away: no stop can be asked for meanwhile either.
                log.warning("stop flags not read: %s", exc)
                continue
            for run in runs:
                if run.stop_key in raised:
                    run.stop()

    async def _checkpoints(self) -> None:
        while self._runs:
            await asyncio.sleep(settings.ARENA_HEARTBEAT_SECONDS)
            runs = list(self._runs)
            if not runs:
                return
            try:
                await self.db.run(replies_checkpoint, [run.beat() for run in runs])
            except Exception as exc:
                log.warning("checkpoint of %d replies failed: %s", len(runs), exc)
                continue
            for run in runs:
                run.checkpointed()


_runner: ReplyRunner | None = None
_runner_pid = 0
_lock = threading.Lock()


def get_runner() -> ReplyRunner:
    """The process's runner, on the process's loop (again in a forked child)."""
    global _runner, _runner_pid
    with _lock:
        if _runner is None or _runner_pid != os.getpid():
            _runner = ReplyRunner(
                hub=get_hub(),
                capacity=settings.ARENA_MAX_REPLIES_PER_PROCESS,
                loop=process_loop.get_loop(),
            )
            _runner_pid = os.getpid()
        return _runner


def reply_generate(*, reply_ids: Sequence[int]) -> None:
    """The generation task: claim the replies and hand them to this process's loop. One that
    fails to be claimed does not keep the others from starting (what failed is raised after;
    the reaper enqueues a reply left pending)."""
    get_runner().take_many(reply_ids)


def _this_process_runner() -> ReplyRunner | None:
    with _lock:
        return _runner if _runner_pid == os.getpid() else None


def replies_stop_taking() -> None:
    """A shutdown begins: tasks waiting for a slot hand their reply back to the queue."""
    if (runner := _this_process_runner()) is not None:
        runner.closing = True


def replies_drain() -> None:
    """Warm shutdown of a process that generates replies (see ReplyRunner.drain)."""
    if (runner := _this_process_runner()) is not None:
        with contextlib.suppress(concurrent.futures.TimeoutError):
            runner.drain(settings.ARENA_SHUTDOWN_GRACE_SECONDS)
