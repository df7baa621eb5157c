"""The timing-leak guard: when each event of a blind turn reaches the page.

A fast model gives itself away by its speed: the side whose text always starts first, or
always runs faster, is recognisable before the vote. `ARENA_BLIND_TIMING` chooses how much of
that the page sees:

- `off`: every event goes out as it arrives.
- `together`: a side's text is held until both sides have begun (a first delta, or an end:
  an error or an empty answer), or until `ARENA_BLIND_TIMING_CAP_SECONDS` after the first side
  began, whichever comes first. Both first deltas then reach the page in the same write.
- `padded`: `together`, and then both panes grow at the slower side's pace: a side shows no
  more characters past its first delta than the other side has produced past its own, where
  a side's production is extrapolated at its own average rate beyond its last delta (so a
  side that ended, or stalls, keeps pacing the other instead of freezing it). Text released
  in one tick goes out as one event per side, so the size of the chunks says nothing either.
  When the cap released the first side, the turn goes on unpaced (pacing a side that has
  already shown text against one that has only begun would freeze it).

Each side keeps its own order; a final pane follows its side's last delta; the turn's end
goes out last. The "live" pane a side sends when its request leaves (before the model has
said anything) carries no timing and is never held.

Resuming: the browser's `Last-Event-ID` must name a point before which everything was sent.
While events of one side are held, the other side's released events carry a resume token
`<watermark>~<a>~<b>`: every hub event up to `watermark` was sent, and after it the first `a`
events of side A and `b` of side B. `resume_point` reads it back; a plain hub id means
nothing was held. A reconnect re-sends what was held at once (its arrival times are lost).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from core.hub import Event

MODES = ("off", "together", "padded")
# While text is held, the stream wakes this often to release what has become due.
TICK_SECONDS = 0.05
SIDES = ("a", "b")
_TOKEN = re.compile(r"^(?P<mark>[^~]*)~(?P<a>\d+)~(?P<b>\d+)$")
# A pane that only says "the request left, nothing written yet" (battles/_pane.html).
_LIVE_PANE = ("status-streaming", "status-pending")


@dataclass(frozen=True)
class ResumePoint:
    after: str | None  # the hub id to subscribe after
    sent: dict[str, int]  # per side: events after it already sent


def resume_point(last_event_id: str | None) -> ResumePoint:
    """Where a reconnecting page's stream resumes (a hub id or a guard's token)."""
    match = _TOKEN.match(last_event_id or "")
    if match is None:
        return ResumePoint(after=last_event_id or None, sent={})
    return ResumePoint(
        after=match["mark"] or None, sent={"a": int(match["a"]), "b": int(match["b"])}
    )


def _side(event: Event) -> str | None:
    name = event.name
    return name[-1] if name[:-1] in ("delta-", "pane-") and name[-1] in SIDES else None


def _is_live_pane(event: Event) -> bool:
    return event.name.startswith("pane-") and any(mark in event.data for mark in _LIVE_PANE)


@dataclass
class _Side:
    begun_at: float | None = None  # arrival of its first delta or its end
    ended: bool = False
    # Production: characters of its deltas after the first, and when they arrived.
    first_at: float | None = None
    last_at: float | None = None
    produced: int = 0
    shown: int = 0  # characters released after the first delta
    first_shown: bool = False

    def pace(self, now: float) -> float:
        """Characters past its first delta this side has produced by `now`, extrapolated at
        its own average rate past its last delta (infinite when nothing paces it)."""
        if self.first_at is None:
            return 0.0 if not self.ended else float("inf")
        span = (self.last_at or self.first_at) - self.first_at
        if span <= 0:
            return float("inf") if self.ended else float(self.produced)
        return self.produced + self.produced / span * max(0.0, now - (self.last_at or 0.0))


class TimingGuard:
    """One blind turn's stream: `add` what the hub delivers, `release` what may go out."""

    def __init__(self, mode: str, *, cap: float, resume: ResumePoint | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown blind timing mode {mode!r}")
        self.mode = mode
        self.cap = cap
        self.sides = {side: _Side() for side in SIDES}
        self._skip = dict((resume.sent if resume else {}) or {})
        self._mark = resume.after if resume else None
        # Hub order since the watermark: [event id, side, released?]
        self._order: deque[list] = deque()
        self._ahead = dict.fromkeys(SIDES, 0)  # released after the watermark, per side
        self._held: deque[tuple[Event, str]] = deque()  # (event, side) in the hub's order
        self._tail: deque[Event] = deque()  # the turn's end, released after both sides
        self._first_begun: float | None = None
        self._together_at: float | None = None
        self._capped = False

    # -- input --------------------------------------------------------------------------

    def add(self, events: list[Event], now: float) -> None:
        for event in events:
            side = _side(event)
            if side is None:
                # The turn's end (or an event of neither side): it goes out after both sides.
                self._order.append([event.id, None, False])
                self._tail.append(event)
                continue
            state = self.sides[side]
            is_delta = event.name.startswith("delta-")
            if is_delta:
                if state.first_at is None:
                    state.first_at = now
                else:
                    state.produced += len(event.data)
                state.last_at = now
            elif not _is_live_pane(event):
                state.ended = True
            if (is_delta or state.ended) and state.begun_at is None:
                state.begun_at = now
                if self._first_begun is None:
                    self._first_begun = now
            self._order.append([event.id, side, False])
            if self._skip.get(side, 0) > 0:
                # Sent before the page reconnected: it counts, but does not go out again.
                self._skip[side] -= 1
                self._account(event, side)
                self._mark_sent(event.id)
                continue
            self._held.append((event, side))

    # -- output -------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return bool(self._tail or self._held)

    def wait(self, idle: float) -> float:
        """How long the stream may wait for new events before calling `release` again."""
        return TICK_SECONDS if self.holding else idle

    def release(self, now: float) -> list[Event]:
        """The events that may go out now, each with a resume-safe id: in the hub's order, or
        with `padded` one event per side (its deltas of the tick merged)."""
        together = self._both_begun(now)
        ready: list[tuple[Event, str]] = []
        blocked: set[str] = set()
        kept: deque[tuple[Event, str]] = deque()
        for event, side in self._held:
            if side not in blocked and self._may_release(side, event, together, now):
                self._account(event, side)
                ready.append((event, side))
            else:
                blocked.add(side)  # a side keeps its order
                kept.append((event, side))
        self._held = kept
        if self.mode == "padded":
            ready.sort(key=lambda item: item[1])  # stable: each side's own order stays
        out: list[Event] = []
        merge = False
        for event, side in ready:
            self._mark_sent(event.id)
            if merge and out[-1].name == event.name:
                # One event per side and tick: the chunk sizes say nothing either.
                out[-1] = Event(id=self._token(), name=event.name, data=out[-1].data + event.data)
            else:
                out.append(Event(id=self._token(), name=event.name, data=event.data))
            merge = self.mode == "padded" and event.name.startswith("delta-")
        if not self._held:
            while self._tail:
                event = self._tail.popleft()
                self._mark_sent(event.id)
                out.append(Event(id=self._token(), name=event.name, data=event.data))
        return out

    def _both_begun(self, now: float) -> bool:
        if self._together_at is None:
            begun = all(s.begun_at is not None for s in self.sides.values())
            capped = self._first_begun is not None and now - self._first_begun >= self.cap
            if self.mode == "off" or begun or capped:
                self._together_at = now
                # A side that has not begun by the cap cannot pace the other: the turn goes on
                # unguarded rather than freeze the side that has already shown its text.
                self._capped = not begun
        return self._together_at is not None

    def _may_release(self, side: str, event: Event, together: bool, now: float) -> bool:
        state = self.sides[side]
        if self.mode == "off" or _is_live_pane(event):
            return True
        if not together:
            return False
        if self.mode == "together" or self._capped or not event.name.startswith("delta-"):
            return True
        if not state.first_shown:
            return True  # the first deltas go out together, unpaced
        other = self.sides["b" if side == "a" else "a"]
        return state.shown + len(event.data) <= other.pace(now)

    def _account(self, event: Event, side: str) -> None:
        if event.name.startswith("delta-"):
            state = self.sides[side]
            if state.first_shown:
                state.shown += len(event.data)
            state.first_shown = True

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
        if not any(self._ahead.values()):
            return self._mark or ""
        return f"{self._mark or ''}~{self._ahead['a']}~{self._ahead['b']}"
