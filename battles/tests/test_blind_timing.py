"""The timing-leak guard's release rules, on events fed in by hand with chosen arrival times."""

import random

import pytest

from battles.blind_timing import TimingGuard, resume_point
from core.hub import Event

LIVE = '<article class="pane pane-{side} status-streaming">'
DONE = '<article class="pane pane-{side} status-done">'


class Stream:
    """A turn's hub stream: ids in order, as the hub gives them."""

    def __init__(self):
        self.events: list[Event] = []

    def __call__(self, name: str, data: str = "") -> Event:
        event = Event(id=str(len(self.events) + 1), name=name, data=data)
        self.events.append(event)
        return event

    def live(self, side):
        return self(f"pane-{side}", LIVE.format(side=side))

    def done(self, side):
        return self(f"pane-{side}", DONE.format(side=side))


def names(events):
    return [e.name for e in events]


def per_side(events):
    """Each side's events in order (within a write, the sides come in a random order)."""
    return {side: [e.name for e in events if e.name[-1] == side] for side in "ab"}


def text(events, side):
    return "".join(e.data for e in events if e.name == f"delta-{side}")


def test_off_sends_everything_as_it_comes_with_the_hub_ids():
    s = Stream()
    guard = TimingGuard("off", cap=5)
    batch = [s.live("a"), s.live("b"), s("delta-a", "Hi")]
    guard.add(batch, 0.0)
    assert guard.release(0.0) == batch
    assert not guard.holding


def test_together_holds_the_first_side_until_the_other_begins():
    s = Stream()
    guard = TimingGuard("together", cap=5)
    guard.add([s.live("a"), s.live("b")], 0.0)
    # The request-sent panes carry no timing: they go out at once.
    assert sorted(names(guard.release(0.0))) == ["pane-a", "pane-b"]
    guard.add([s("delta-a", "Fast "), s("delta-a", "text")], 0.1)
    assert guard.release(0.1) == []
    assert guard.holding
    guard.add([s("delta-b", "Slow")], 2.0)
    out = guard.release(2.0)
    assert per_side(out) == {"a": ["delta-a", "delta-a"], "b": ["delta-b"]}
    assert text(out, "a") == "Fast text"
    # From then on nothing waits.
    guard.add([s("delta-a", "!")], 2.1)
    assert text(guard.release(2.1), "a") == "!"


def test_together_releases_at_the_cap_when_the_other_side_never_begins():
    s = Stream()
    guard = TimingGuard("together", cap=3)
    guard.add([s("delta-a", "alone")], 1.0)
    assert guard.release(3.9) == []
    assert text(guard.release(4.0), "a") == "alone"


def test_an_end_without_text_counts_as_beginning():
    s = Stream()
    guard = TimingGuard("together", cap=30)
    guard.add([s("delta-a", "words")], 0.1)
    assert guard.release(0.1) == []
    # Side B failed before writing anything: its final pane lets both out.
    guard.add([s.done("b")], 0.5)
    assert sorted(names(guard.release(0.5))) == ["delta-a", "pane-b"]


def test_a_final_pane_follows_its_deltas_and_the_turn_end_goes_last():
    s = Stream()
    guard = TimingGuard("together", cap=30)
    guard.add([s("delta-a", "x"), s.done("a"), s("turn-end")], 0.2)
    assert guard.release(0.2) == []  # B has not begun: even the turn's end waits
    guard.add([s("delta-b", "y")], 0.3)
    out = guard.release(0.3)
    assert per_side(out[:-1]) == {"a": ["delta-a", "pane-a"], "b": ["delta-b"]}
    assert out[-1].name == "turn-end"


def test_padded_shows_both_sides_on_one_schedule_at_the_slower_sides_pace():
    s = Stream()
    guard = TimingGuard("padded", cap=30)
    # A writes 10 characters every 0.1 s; B writes 1 character every 0.1 s (10 a second).
    released = {"a": 0, "b": 0}
    for tick in range(0, 41):
        now = tick * 0.1
        guard.add([s("delta-a", "a" * 10), s("delta-b", "b")], now)
        out = guard.release(now)
        # Both sides in the same writes, one delta each, of the same size.
        assert [len(e.data) for e in out if e.name == "delta-a"] == [
            len(e.data) for e in out if e.name == "delta-b"
        ]
        for event in out:
            released[event.name[-1]] += len(event.data)
    assert released["a"] == released["b"]
    # At 90% of B's rate from when it was known (B's third delta, at 0.2 s).
    assert 3 + 0.9 * 10 * 3.6 <= released["b"] <= 3 + 0.9 * 10 * 3.8 + 1


def test_padded_keeps_the_schedule_after_the_slower_side_ended():
    s = Stream()
    guard = TimingGuard("padded", cap=30)
    guard.add([s("delta-a", "A" * 5), s("delta-b", "b")], 0.0)
    assert sorted((e.name, e.data) for e in guard.release(0.0)) == [
        ("delta-a", "A"),
        ("delta-b", "b"),
    ]
    shown = 1
    for tick in range(1, 11):  # B: 1 character per 0.1 s, then it ends at 1.0 s
        guard.add([s("delta-b", "b")], tick * 0.1)
        shown += sum(len(e.data) for e in guard.release(tick * 0.1) if e.name == "delta-a")
    guard.add([s.done("b")], 1.0)
    guard.add([s("delta-a", "A" * 100), s.done("a"), s("turn-end")], 1.0)
    shown += sum(len(e.data) for e in guard.release(1.0) if e.name == "delta-a")
    assert shown <= 11
    # B's rate (10 characters a second, shown at 9) goes on pacing A's other characters.
    shown += sum(len(e.data) for e in guard.release(5.05) if e.name == "delta-a")
    assert 2 + 9 * 4.7 <= shown <= 2 + 9 * 4.9
    assert guard.release(11.0)[0].name == "delta-a"
    out = guard.release(12.0)
    assert names(out) == ["delta-a", "pane-a", "turn-end"]


def test_padded_never_cuts_inside_an_entity():
    s = Stream()
    guard = TimingGuard("padded", cap=30)
    guard.add([s("delta-a", "a &amp; b"), s("delta-b", "xxxx")], 0.0)
    out = {e.name: e.data for e in guard.release(0.0)}
    assert out == {"delta-a": "a ", "delta-b": "xxxx"}
    guard.add([s("delta-b", "yyyyy")], 0.1)
    out = {e.name: e.data for e in guard.release(0.1)}
    assert out == {"delta-a": "&amp; b", "delta-b": "yyyyy"}


@pytest.mark.parametrize("mode", ["together", "padded"])
@pytest.mark.parametrize("seed", range(40))
def test_a_reconnect_anywhere_neither_loses_nor_repeats_text(mode, seed):
    rng = random.Random(seed)
    s = Stream()
    timeline = []  # (arrival time, event)
    for side in "ab":
        timeline.append((0.0, s.live(side)))
    begin = {"a": rng.uniform(0, 2), "b": rng.uniform(0, 2)}
    for side in "ab":
        t = begin[side]
        for _ in range(rng.randint(1, 15)):
            t += rng.uniform(0.01, 0.3)
            timeline.append((t, Event(id="", name=f"delta-{side}", data=rng.choice("xyz") * 3)))
        timeline.append((t + 0.05, Event(id="", name=f"pane-{side}", data=DONE)))
    timeline.sort(key=lambda item: item[0])
    events, times = [], []
    for t, event in timeline:
        events.append(s(event.name, event.data) if event.id == "" else event)
        times.append(t)
    end = Event(id=str(len(s.events) + 1), name="turn-end", data="")
    events.append(end)
    times.append(times[-1])

    def run(guard, after_index, stop_after):
        """Feed the hub's events after `after_index`, release on 50-ms ticks."""
        sent = []
        pending = list(zip(times[after_index:], events[after_index:], strict=True))
        clock = 0.0
        while pending or guard.holding:
            clock += 0.05
            batch = [e for t, e in pending if t <= clock]
            pending = [(t, e) for t, e in pending if t > clock]
            guard.add(batch, clock)
            for event in guard.release(clock):
                sent.append(event)
                if len(sent) == stop_after:
                    return sent
            assert clock < 600
        return sent

    whole = run(TimingGuard(mode, cap=1.0), 0, None)
    assert whole[-1].name == "turn-end"
    cut = rng.randint(1, len(whole) - 1)
    first = run(TimingGuard(mode, cap=1.0), 0, cut)
    resume = resume_point(first[-1].id)
    start = 0 if resume.after is None else int(resume.after)
    rest = run(TimingGuard(mode, cap=1.0, resume=resume), start, None)
    for side in "ab":
        assert text(first, side) + text(rest, side) == text(whole, side)
        assert text(whole, side) == "".join(e.data for e in events if e.name == f"delta-{side}")
    assert rest[-1].name == "turn-end"
    assert sum(e.name == "turn-end" for e in first + rest) == 1


def test_a_plain_hub_id_resumes_as_before():
    point = resume_point("1700000000000-3")
    assert point.after == "1700000000000-3"
    assert point.sent == {}
    assert resume_point(None).after is None
    token = resume_point("12~0~3")
    assert (token.after, token.sent) == ("12", {"a": 0, "b": 3})
    assert resume_point("~2~0").after is None


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        TimingGuard("sometimes", cap=1)
