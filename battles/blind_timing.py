"""The timing-leak guard: when each event of a blind turn reaches the page.

A fast model gives itself away by its speed: the side whose text always starts first, or
always runs faster, is recognisable before the vote. `ARENA_BLIND_TIMING` chooses how much of
that the page sees:

- `off`: every event goes out as it arrives.
- `together`: a side's text is held until both sides have begun (a first delta, or an end:
  an error or an empty answer), or until `ARENA_BLIND_TIMING_CAP_SECONDS` after the first side
  began, whichever comes first. Both first deltas then reach the page in the same write.
- `padded`: `together`, and then both panes grow on one schedule: from the moment a side's
  rate is known (its third delta), both show text at 90% of the slower known rate, on 50-ms
  ticks, each side cut to the schedule when it has more (never inside an HTML entity). Until
  then neither shows more than a side of unknown pace has produced. So both sides' text
  reaches the page in the same writes and in chunks of the same size, and a pane ends when
  its text runs out, not when its model did. The cost: the slower side shows ~10% slower
  than it streams, the faster one at that pace. A side that stalls below the schedule shows
  what it has. When the cap released the first side alone, the turn goes on unpaced (pacing
  a side that has already shown text against one that has only begun would freeze it).

Each side keeps its own order; a final pane follows its side's last delta; the turn's end
goes out last. Within a write the two sides come in a random order (the faster side is not
always the first line). The "live" pane a side sends when its request leaves (before the
model has said anything) carries no timing and is never held.

Resuming: the browser's `Last-Event-ID` must name a point before which everything was sent.
While events of one side are held, released events carry a resume token
`<watermark>~<a>~<b>`: every hub event up to `watermark` was sent, and after it the first `a`
events of side A and `b` of side B (`<n>+<k>`: and the first `k` characters of the next).
`resume_point` reads it back; a plain hub id means nothing was held. A reconnect re-sends what
was held at once (its arrival times are lost).
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass, field

from core.hub import Event

MODES = ("off", "together", "padded")
# The shortest wait between two releases (a step already due is released at once anyway).
MIN_WAIT_SECONDS = 0.002
# `padded`: both panes grow on a common schedule, on this tick, at this share of the slower
# side's rate (so the slower side's text is ready before the schedule asks for it), the rate
# measured once a side has sent this many deltas.
PACE_TICK_SECONDS = 0.05
PACE_SLACK = 0.9
RATE_DELTAS = 3
SIDES = ("a", "b")
_COUNT = r"(\d+)(?:\+(\d+))?"
_TOKEN = re.compile(rf"^(?P<mark>[^~]*)~{_COUNT}~{_COUNT}$")
# A pane that only says "the request left, nothing written yet" (battles/_pane.html).
_LIVE_PANE = ("status-streaming", "status-pending")


@dataclass(frozen=True)
class ResumePoint:
    after: str | None  # the hub id to subscribe after
    sent: dict[str, int] = field(default_factory=dict)  # per side: whole events sent after it
    cut: dict[str, int] = field(default_factory=dict)  # per side: characters of the next one


def resume_point(last_event_id: str | None) -> ResumePoint:
    """Where a reconnecting page's stream resumes (a hub id or a guard's token)."""
    match = _TOKEN.match(last_event_id or "")
    if match is None:
        return ResumePoint(after=last_event_id or None)
    a, a_cut, b, b_cut = match.group(2, 3, 4, 5)
    return ResumePoint(
        after=match["mark"] or None,
        sent={"a": int(a), "b": int(b)},
        cut={"a": int(a_cut or 0), "b": int(b_cut or 0)},
    )


def _side(event: Event) -> str | None:
    name = event.name
    return name[-1] if name[:-1] in ("delta-", "pane-") and name[-1] in SIDES else None


def _is_delta(event: Event) -> bool:
    return event.name.startswith("delta-")


def _is_live_pane(event: Event) -> bool:
    return event.name.startswith("pane-") and any(mark in event.data for mark in _LIVE_PANE)


def _safe_cut(data: str, n: int) -> int:
    """The longest prefix of escaped text, at most `n` characters, not ending in an entity."""
    amp = data.rfind("&", 0, n)
    return amp if amp != -1 and data.find(";", amp, n) == -1 else n


@dataclass
class _Side:
    begun_at: float | None = None  # arrival of its first delta or its end
    ended: bool = False
    first_at: float | None = None  # its first delta's arrival
    last_at: float | None = None  # its last delta's arrival
    deltas: int = 0
    produced: int = 0  # characters of its deltas so far
    first_chars: int = 0
    shown: int = 0  # characters released

    def rate(self) -> float | None:
        """Characters a second after its first delta, once three deltas tell (None before)."""
        if self.deltas < RATE_DELTAS or self.first_at is None or self.last_at is None:
            return None
        span = self.last_at - self.first_at
        return (self.produced - self.first_chars) / span if span > 0 else None


class TimingGuard:
    """One blind turn's stream: `add` what the hub delivers, `release` what may go out."""

    def __init__(
        self,
        mode: str,
        *,
        cap: float,
        resume: ResumePoint | None = None,
        rng: random.Random | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown blind timing mode {mode!r}")
        self.mode = mode
        self.cap = cap
        self.sides = {side: _Side() for side in SIDES}
        resume = resume or ResumePoint(after=None)
        self._skip = dict(resume.sent)
        self._skip_cut = dict(resume.cut)
        self._mark = resume.after
        # Hub order since the watermark: [event id, side, sent?]
        self._order: deque[list] = deque()
        self._ahead = dict.fromkeys(SIDES, 0)  # whole events sent past the watermark, per side
        # Not yet (wholly) sent, in the hub's order: [event, side, characters already sent].
        self._held: deque[list] = deque()
        # Per side: characters of its next event already sent (a cut delta), as the page has them.
        self._partial = dict.fromkeys(SIDES, 0)
        self._tail: deque[Event] = deque()  # the turn's end, released after both sides
        self._together_at: float | None = None
        self._capped = False
        self._pace_from: tuple[float, int] | None = None
        self._rng = rng or random.Random()

    # -- input --------------------------------------------------------------------------

    def add(self, events: list[Event], now: float) -> None:
        for event in events:
            side = _side(event)
            self._order.append([event.id, side, False])
            if side is None:
                # The turn's end (or an event of neither side): it goes out after both sides.
                self._tail.append(event)
                continue
            state = self.sides[side]
            if _is_delta(event):
                if state.first_at is None:
                    state.first_at = now
                    state.first_chars = len(event.data)
                state.last_at = now
                state.deltas += 1
                state.produced += len(event.data)
            elif not _is_live_pane(event):
                state.ended = True
            if (_is_delta(event) or state.ended) and state.begun_at is None:
                state.begun_at = now
            if self._skip.get(side, 0) > 0:
                # Sent before the page reconnected: it counts, but does not go out again.
                self._skip[side] -= 1
                if _is_delta(event):
                    state.shown += len(event.data)
                self._mark_sent(event.id)
                continue
            done = self._skip_cut.pop(side, 0) if _is_delta(event) else 0
            state.shown += done
            self._partial[side] = done or self._partial[side]
            self._held.append([event, side, done])

    # -- output -------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return bool(self._tail or self._held)

    def wait(self, now: float, idle: float) -> float:
        """How long the stream may wait for new events before calling `release` again: until
        the cap runs out or a paced side's next step is due, else until something arrives."""
        if not self.holding:
            return idle
        due: list[float] = []
        first = self._first_begun()
        if self._together_at is None and first is not None:
            due.append(first + self.cap)
        pacing = self.mode == "padded" and self._together_at is not None and not self._capped
        if pacing and any(_is_delta(event) for event, _, _ in self._held):
            due.append(self._tick(now) + PACE_TICK_SECONDS)
        if not due:
            return idle
        return min(idle, max(MIN_WAIT_SECONDS, min(due) - now))

    def release(self, now: float) -> list[Event]:
        """The events (or parts of deltas) that may go out now, each with a resume-safe id."""
        together = self._both_begun(now)
        # (side, what goes out, characters of its event sent once it is out)
        ready: list[tuple[str, Event, int]] = []
        blocked: set[str] = set()
        gone: set[int] = set()
        for item in self._held:
            event, side, done = item
            if side in blocked:
                continue
            size = self._allowed(side, event, done, together, now)
            whole = size >= 0 and done + size >= len(event.data)
            if size > 0 or whole:
                part = (
                    event
                    if done == 0 and whole
                    else Event(event.id, event.name, event.data[done : done + size])
                )
                ready.append((side, part, 0 if whole else done + size))
                item[2] = done + size
                if _is_delta(event):
                    self.sides[side].shown += size
            if whole:
                gone.add(id(item))
            else:
                blocked.add(side)  # a side keeps its order
        self._held = deque(item for item in self._held if id(item) not in gone)
        if self.mode != "off":
            # Which side's text comes first in a write says nothing.
            first = self._rng.choice(SIDES)
            ready.sort(key=lambda r: r[0] != first)
        out: list[Event] = []
        merge = False
        for side, part, partial in ready:
            if not partial:
                self._mark_sent(part.id)
            self._partial[side] = partial
            if merge and out[-1].name == part.name:
                # One delta per side and write: the number of events says nothing either.
                out[-1] = Event(id=self._token(), name=part.name, data=out[-1].data + part.data)
            else:
                out.append(Event(id=self._token(), name=part.name, data=part.data))
            merge = self.mode == "padded" and _is_delta(part)
        if not self._held:
            while self._tail:
                event = self._tail.popleft()
                self._mark_sent(event.id)
                out.append(Event(id=self._token(), name=event.name, data=event.data))
        return out

    def _first_begun(self) -> float | None:
        begun = [s.begun_at for s in self.sides.values() if s.begun_at is not None]
        return min(begun, default=None)

    def _both_begun(self, now: float) -> bool:
        if self._together_at is None:
            begun = all(s.begun_at is not None for s in self.sides.values())
            first = self._first_begun()
            capped = first is not None and now - first >= self.cap
            if self.mode == "off" or begun or capped:
                self._together_at = now
                self._capped = not begun
        return self._together_at is not None

    def _allowed(self, side: str, event: Event, done: int, together: bool, now: float) -> int:
        """How much of the event may go out now: its remaining characters, fewer, or none (a
        pane counts 0 characters; -1: not yet)."""
        rest = len(event.data) - done
        if self.mode == "off" or _is_live_pane(event):
            return rest
        if not together:
            return -1
        if self.mode == "together" or self._capped or not _is_delta(event):
            return rest
        room = self._schedule(now) - self.sides[side].shown
        if room >= rest:
            return rest
        return _safe_cut(event.data[done:], max(0, int(room))) if room > 0 else 0

    def _tick(self, now: float) -> float:
        start = self._together_at or now
        return start + PACE_TICK_SECONDS * ((now - start) // PACE_TICK_SECONDS)

    def _schedule(self, now: float) -> float:
        """`padded`: the characters each side may have shown by `now`. Both sides' first
        deltas go out at once, cut to the shorter; then both grow by the slower known rate
        (times PACE_SLACK) on every tick, and never past what a side whose rate is not known
        yet has produced."""
        bounds = []
        known = []
        for state in self.sides.values():
            rate = state.rate()
            if rate is not None:
                known.append(rate)
            elif not state.ended:
                bounds.append(float(state.produced))  # its pace is not known yet
        if known:
            if self._pace_from is None:
                self._pace_from = (self._tick(now), max(s.shown for s in self.sides.values()))
            at, shown = self._pace_from
            bounds.append(shown + min(known) * PACE_SLACK * (self._tick(now) - at))
        return min(bounds, default=float("inf"))

    def _mark_sent(self, event_id: str) -> None:
        """Move the watermark past every event sent so far, in the hub's order."""
        for entry in self._order:
            if entry[0] == event_id and not entry[2]:
                entry[2] = True
                if entry[1] is not None:
                    self._ahead[entry[1]] += 1
                break
        while self._order and self._order[0][2]:
            event_id, side, _ = self._order.popleft()
            self._mark = event_id
            if side is not None:
                self._ahead[side] -= 1

    def _token(self) -> str:
        """Where a reconnect resumes: the watermark alone when nothing was sent past it."""
        cuts = self._partial
        if not any(self._ahead.values()) and not any(cuts.values()):
            return self._mark or ""
        counts = [
            f"{self._ahead[side]}+{cuts[side]}" if cuts[side] else str(self._ahead[side])
            for side in SIDES
        ]
        return f"{self._mark or ''}~{counts[0]}~{counts[1]}"
