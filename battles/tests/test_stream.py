"""The SSE stream over real HTTP (uvicorn), resuming, and what happens when a worker dies."""

import contextlib
import re
import signal
import time
from collections.abc import Iterator

import httpx2
import pytest

from battles import generation
from battles.blind_timing import resume_point
from battles.models import Battle, Mode, Reply, Turn
from battles.tests.conftest import wait_turn_finished
from conftest import wait_for
from core.hub import get_hub


@contextlib.contextmanager
def http_visitor(base_url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=base_url, timeout=30, follow_redirects=False) as client:
        client.get("/")  # visitor and CSRF cookies
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        yield client


def http_start(client: httpx2.Client, prompt: str) -> Battle:
    response = client.post("/battle/", data={"prompt": prompt})
    assert response.status_code == 302, response.text[:300]
    conversation = re.search(r"/c/([0-9a-f-]+)/", response.headers["location"]).group(1)
    return Battle.objects.get(conversation__uuid=conversation)


def read_events(client, url, *, last_event_id=None, stop_after=None):
    """Read SSE events until the server ends the stream or `stop_after` events arrived."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, current = [], {"data": []}
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if "event" in current:
                    events.append(
                        {
                            "id": current.get("id"),
                            "event": current["event"],
                            "data": "\n".join(current["data"]),
                            "at": time.monotonic(),
                        }
                    )
                    if stop_after and len(events) >= stop_after:
                        break
                current = {"data": []}
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    current["data"].append(value)
                elif field in ("id", "event"):
                    current[field] = value
    return events


def deltas(events, side):
    import html

    return "".join(html.unescape(e["data"]) for e in events if e["event"] == f"delta-{side}")


def test_both_sides_stream_over_one_connection_and_the_stream_ends_with_the_turn(
    arena_server, make_model
):
    make_model("Alpha", knobs="ttft=0.05&tps=100&tokens=25")
    make_model("Bravo", knobs="ttft=0.05&tps=100&tokens=25")
    with http_visitor(arena_server) as client:
        battle = http_start(client, "stream please")
        events = read_events(client, f"/b/{battle.uuid}/turns/0/events/")
        assert events[-1]["event"] == "turn-end"
        replies = {r.side: r for r in wait_turn_finished(battle)}
        for side in "ab":
            assert deltas(events, side) == replies[side].text
            panes = [e for e in events if e["event"] == f"pane-{side}"]
            assert "status-done" in panes[-1]["data"]
        # Resume points only move forward (a timing guard's token names its watermark).
        marks = [resume_point(e["id"]).after for e in events if e["id"]]
        ids = [int(m.split("-")[0]) if "-" in m else int(m) for m in marks if m]
        assert ids == sorted(ids)


def test_a_reconnect_with_last_event_id_resumes_without_gaps_or_repeats(arena_server, make_model):
    make_model("Alpha", knobs="ttft=0&tps=30&tokens=40")
    make_model("Bravo", knobs="ttft=0&tps=30&tokens=40")
    with http_visitor(arena_server) as client:
        battle = http_start(client, "resume me")
        url = f"/b/{battle.uuid}/turns/0/events/"
        first = read_events(client, url, stop_after=12)
        assert first[-1]["event"] != "turn-end"
        rest = read_events(client, url, last_event_id=first[-1]["id"])
        assert rest[-1]["event"] == "turn-end"
        replies = {r.side: r for r in wait_turn_finished(battle)}
        for side in "ab":
            assert deltas(first, side) + deltas(rest, side) == replies[side].text


def test_a_fresh_connection_replays_everything_so_far(arena_server, make_model):
    make_model("Alpha", knobs="ttft=0&tps=30&tokens=40")
    make_model("Bravo", knobs="ttft=0&tps=30&tokens=40")
    with http_visitor(arena_server) as client:
        battle = http_start(client, "replay me")
        url = f"/b/{battle.uuid}/turns/0/events/"
        read_events(client, url, stop_after=10)
        # A reload opens a new EventSource without Last-Event-ID: the whole turn so far, then more.
        again = read_events(client, url)
        replies = {r.side: r for r in wait_turn_finished(battle)}
        for side in "ab":
            assert deltas(again, side) == replies[side].text


def first_and_last_delta(events, side) -> tuple[float, float]:
    times = [e["at"] for e in events if e["event"] == f"delta-{side}"]
    return times[0], times[-1]


@pytest.mark.parametrize("mode", ["off", "together", "padded"])
def test_the_timing_guard_hides_which_side_is_faster(arena_server, make_model, settings, mode):
    settings.ARENA_BLIND_TIMING = mode
    make_model("Alpha", knobs="ttft=0&tps=200&tokens=30")  # all of it within 0.2 s
    # A wide gap, so a loaded machine's delays (a few tenths of a second) cannot close it.
    make_model("Bravo", knobs="ttft=1.5&tps=20&tokens=30")  # 1.5 s, then 1.5 s of text
    with http_visitor(arena_server) as client:
        battle = http_start(client, "who is faster")
        events = read_events(client, f"/b/{battle.uuid}/turns/0/events/")
        replies = {r.side: r for r in wait_turn_finished(battle)}
    assert events[-1]["event"] == "turn-end"
    for side in "ab":
        assert deltas(events, side) == replies[side].text
    fast = next(side for side, r in replies.items() if r.model.name == "Alpha")
    slow = "b" if fast == "a" else "a"
    fast_first, fast_last = first_and_last_delta(events, fast)
    slow_first, slow_last = first_and_last_delta(events, slow)
    if mode == "off":
        assert slow_first - fast_first > 0.8
        assert fast_last - fast_first < 0.8
    else:
        assert abs(slow_first - fast_first) < 0.25
    if mode == "padded":
        # The faster text is paced to the slower side's rate: it ends about when that does.
        assert fast_last - fast_first > 0.6 * (slow_last - slow_first)


def test_named_sessions_are_not_held(settings):
    from battles.stream import timing_guard

    settings.ARENA_BLIND_TIMING = "padded"
    blind = Battle(mode=Mode.BLIND)
    named = Battle(mode=Mode.NAMED)
    assert timing_guard(Turn(battle=blind), resume_point(None)) is not None
    assert timing_guard(Turn(battle=named), resume_point(None)) is None
    settings.ARENA_BLIND_TIMING = "off"
    assert timing_guard(Turn(battle=blind), resume_point(None)) is None


def test_a_finished_turn_is_served_from_the_database_when_the_hub_has_forgotten_it(
    arena_server, make_model
):
    make_model("Alpha", knobs="ttft=0&tokens=10")
    make_model("Bravo", knobs="ttft=0&tokens=10")
    with http_visitor(arena_server) as client:
        battle = http_start(client, "old news")
        wait_turn_finished(battle)
        get_hub().discard(battle.turns.get().stream_key())
        events = read_events(client, f"/b/{battle.uuid}/turns/0/events/")
        assert [e["event"] for e in events] == ["pane-a", "pane-b", "turn-end"]
        assert all("status-done" in e["data"] for e in events[:2])


def test_the_reaper_fails_a_reply_whose_worker_stopped_and_the_side_can_be_retried(
    live, visitor, two_models
):
    from battles.tests.conftest import start_battle

    battle = start_battle(visitor)
    wait_turn_finished(battle)
    reply = Reply.objects.filter(turn__battle=battle, side="a").get()
    # What a killed worker leaves behind: a streaming reply whose heartbeat went stale.
    Reply.objects.filter(pk=reply.pk).update(status="streaming", heartbeat_at="2020-01-01T00:00Z")
    result = generation.replies_reap()
    assert result["failed"] == 1
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error_code == "stalled"
    assert "stopped responding" in reply.error_message
    assert visitor.post(f"/b/{battle.uuid}/retry/a/").status_code == 302
    assert {r.status for r in wait_turn_finished(battle)} == {"done"}


def test_the_reaper_runs_on_the_beat_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["replies-reap"]
    assert entry["task"] == "battles.tasks.replies_reap_task"
    assert entry["schedule"] <= 60


def test_the_reaper_requeues_a_reply_that_no_worker_ever_picked_up(live, visitor, two_models):
    from battles.tests.conftest import start_battle

    battle = start_battle(visitor)
    wait_turn_finished(battle)
    reply = Reply.objects.filter(turn__battle=battle, side="b").get()
    # What a lost broker message leaves behind: a pending reply nobody claimed.
    Reply.objects.filter(pk=reply.pk).update(
        status="pending", text="", created_at="2020-01-01T00:00Z"
    )
    assert generation.replies_reap()["requeued"] == 1
    wait_for(lambda: Reply.objects.get(pk=reply.pk).status == "done")


@pytest.mark.worker
def test_a_worker_killed_mid_generation_never_leaves_the_battle_generating(
    live, visitor, make_model, settings
):
    from battles.tests.conftest import start_battle

    make_model("Alpha", knobs="ttft=0&tps=10&tokens=200")
    make_model("Bravo", knobs="ttft=0&tps=10&tokens=200")
    battle = start_battle(visitor)
    wait_for(
        lambda: (
            Reply.objects.filter(turn__battle=battle, status="streaming", text__gt="").count() == 2
        ),
        message="both sides should be streaming with a checkpoint",
    )
    live.kill(signal.SIGKILL)
    stalled = wait_for(
        lambda: generation.replies_reap()["failed"] or None,
        timeout=settings.ARENA_REPLY_STALL_SECONDS + 10,
        interval=0.5,
    )
    assert stalled >= 1
    wait_for(
        lambda: not Reply.objects.filter(turn__battle=battle, status="streaming").exists(),
        timeout=settings.ARENA_REPLY_STALL_SECONDS + 10,
        interval=0.5,
    )
    replies = list(Reply.objects.filter(turn__battle=battle))
    assert {r.status for r in replies} == {"failed"}
    assert all(r.text for r in replies), "the checkpointed partial text is kept"
    live.start()
    for side in "ab":
        assert visitor.post(f"/b/{battle.uuid}/retry/{side}/").status_code == 302
    Battle.objects.filter(pk=battle.pk)  # the battle is still open
    make_fast = Reply.objects.filter(turn__battle=battle)
    assert make_fast.count() == 2
    assert {r.status for r in wait_turn_finished(battle, timeout=60)} == {"done"}


@pytest.mark.worker
def test_a_worker_stopped_mid_generation_ends_its_replies_plainly_and_they_can_be_retried(
    live, visitor, make_model
):
    from battles.tests.conftest import start_battle

    make_model("Alpha", knobs="ttft=0&tps=10&tokens=200")
    make_model("Bravo", knobs="ttft=0&tps=10&tokens=200")
    battle = start_battle(visitor)
    wait_for(
        lambda: (
            Reply.objects.filter(turn__battle=battle, status="streaming", text__gt="").count() == 2
        ),
        message="both sides should be streaming with a checkpoint",
    )

    live.stop()  # SIGTERM: Celery's warm shutdown

    # At once, not after the reaper's stall time: ended by the worker on its way out.
    replies = list(Reply.objects.filter(turn__battle=battle))
    assert {(r.status, r.error_code) for r in replies} == {("failed", "interrupted")}
    assert all("Retry this side" in r.error_message for r in replies)
    assert all(r.text for r in replies), "the text so far is kept"
    live.start()
    for side in "ab":
        assert visitor.post(f"/b/{battle.uuid}/retry/{side}/").status_code == 302
    assert {r.status for r in wait_turn_finished(battle, timeout=60)} == {"done"}
