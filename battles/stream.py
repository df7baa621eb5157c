"""A turn's event stream for the page: what the SSE view sends (battles.views.turn_events).

The page holds one connection per turn for both sides. It follows the turn's hub stream
from the start, or from after `Last-Event-ID` when the browser reconnects, until the
turn-end event. When the hub no longer has the stream (expired, or Redis is away) a turn
whose replies have all ended is answered from the database alone.

A stream stays open for minutes while it touches the database for a few milliseconds: each
lookup gives its connection back at once, so idle streams hold none (and no thread either:
the view is async, and the hub's subscription costs a coroutine).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404

from battles.blind_timing import ResumePoint, TimingGuard, resume_point
from battles.generation import pane_html
from battles.models import Mode, Reply, Turn
from core import metrics
from core.db import released_connection
from core.hub import Event, format_sse, get_hub
from core.visitors import Visitor

log = logging.getLogger(__name__)

# While both sides stream, the page is written to at most this often: one write, several
# deltas.
DELTA_READ_SECONDS = 0.05
# Seconds a subscription waits for events before the stream checks the database and sends
# a keep-alive comment.
WAIT_SECONDS = 10.0


def turn_for_stream(visitor: Visitor, uuid, index: int) -> Turn:
    """The visitor's turn, or 404 (someone else's battle is as unknown as a missing one)."""
    with released_connection():
        # One turn at most: no ORDER BY to compile (`first()` would add one).
        found = (
            Turn.objects.select_related("battle")
            .filter(battle__uuid=uuid, battle__owner_key=visitor.key, index=index)
            .order_by()[:1]
        )
        turn = next(iter(found), None)
    if turn is None:
        raise Http404("No such turn.")
    return turn


def final_events(turn: Turn) -> list[Event] | None:
    """When every side of the turn has ended, the database alone can answer (no hub needed)."""
    with released_connection():
        replies = list(Reply.objects.filter(turn=turn).select_related("turn"))
        if any(r.status in (Reply.Status.PENDING, Reply.Status.STREAMING) for r in replies):
            return None
        events = [Event(id="", name=f"pane-{r.side}", data=pane_html(r)) for r in replies]
    return [*events, Event(id="", name="turn-end", data="")]


def timing_guard(turn: Turn, resume: ResumePoint) -> TimingGuard | None:
    """The turn's timing-leak guard: blind battles only (the names are shown otherwise)."""
    mode = settings.ARENA_BLIND_TIMING
    if mode == "off" or turn.battle.mode != Mode.BLIND:
        return None
    return TimingGuard(mode, cap=settings.ARENA_BLIND_TIMING_CAP_SECONDS, resume=resume)


async def turn_events(turn: Turn, *, last_event_id: str | None) -> AsyncIterator[str]:
    """The SSE text of the turn's stream, chunk by chunk, until the turn ends."""
    hub = get_hub()
    stream_key = turn.stream_key()
    deadline = time.monotonic() + settings.LLM_TIMEOUT_TOTAL * 2 + 120
    resume = resume_point(last_event_id)
    guard = timing_guard(turn, resume)
    # One subscription for the connection: in service mode the process's shared reader
    # fills it (one XREAD for the process's streams that have news).
    subscription = hub.subscribe(stream_key, resume.after)
    metrics.SSE_STREAMS_OPEN.inc()
    try:
        yield "retry: 1000\n\n"
        started_sides: set[str] = set()
        while time.monotonic() < deadline:
            wait = WAIT_SECONDS if guard is None else guard.wait(time.monotonic(), WAIT_SECONDS)
            try:
                batch = await subscription.get(timeout=wait)
            except Exception:
                # Hub unreachable: a finished turn can still be answered from the database;
                # otherwise end the stream and let the browser reconnect and resume.
                log.warning("stream %s: hub read failed", stream_key, exc_info=True)
                try:
                    final = await sync_to_async(final_events)(turn)
                except Exception:
                    final = None
                if final is not None:
                    yield format_sse(final)
                return
            if guard is not None:
                holding = guard.holding
                guard.add(batch, time.monotonic())
                batch = guard.release(time.monotonic())
                if not batch and (holding or guard.holding):
                    continue  # a tick: nothing due yet
            if batch:
                yield format_sse(batch)
                if any(e.name == "turn-end" for e in batch):
                    return
                deltas = {e.name for e in batch if e.name.startswith("delta-")}
                if deltas and started_sides | deltas == {"delta-a", "delta-b"}:
                    # Until both sides have begun there is no pause, so the second side's
                    # first delta is not held back behind the first side's; panes and
                    # turn-end never wait either. With a timing guard too: what it releases
                    # meanwhile goes out in the next write (its schedule runs on the clock).
                    await asyncio.sleep(DELTA_READ_SECONDS)
                started_sides |= deltas
                continue
            final = await sync_to_async(final_events)(turn)
            if final is not None:
                yield format_sse(final)
                return
            yield ": keep-alive\n\n"
    finally:
        metrics.SSE_STREAMS_OPEN.dec()
        subscription.close()
