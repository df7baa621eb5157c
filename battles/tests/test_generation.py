"""A reply's rules, without a worker: each test drives replies through a runner of its own
(the process's loop, the configured hub, the test LLM server over real HTTP) and waits on
the reply's end, not on a clock."""

import html
import socket
import threading
import time
import uuid

import pytest
from django.db import transaction

from battles.generation import records, replies_enqueue, reply_generate, turn_stop_request
from battles.generation.publisher import Publisher
from battles.generation.run import ReplyRun
from battles.generation.runner import ReplyRunner
from battles.models import Battle, Conversation, Reply
from battles.tests.factories import make_battle
from conftest import wait_for
from core import loop
from core.hub import RedisHub, get_hub
from core.markdown import render_markdown
from llm_providers.testing.server import generate_text

FAST = "ttft=0&tps=400&tokens=12"
HX = {"HX-Request": "true"}
SLOW = "ttft=0&tps=20&tokens=400"  # 20 s per answer: always stopped or cut short here


@pytest.fixture
def runner(transactional_db):
    runner = ReplyRunner(hub=get_hub(), capacity=8, loop=loop.get_loop())
    yield runner
    runner.db.shutdown()


def pending_battle(make_model, *, knobs_a: str = FAST, knobs_b: str = FAST) -> Battle:
    tag = uuid.uuid4().hex[:6]
    return make_battle(
        owner_key=f"v:{tag}",
        model_a=make_model(f"Alpha-{tag}", knobs=knobs_a),
        model_b=make_model(f"Bravo-{tag}", knobs=knobs_b),
        prompt=f"Tell me about rivers {tag}",
        finished=False,
    )


def replies_of(battle: Battle) -> list[Reply]:
    return list(Reply.objects.filter(turn__battle=battle).select_related("model", "turn"))


def run_all(runner: ReplyRunner, battle: Battle) -> dict[str, records.Ending]:
    """Hand both sides to the runner and wait until both have ended."""
    ended = {r.side: runner.take(r.pk) for r in replies_of(battle)}
    return {side: future.result(timeout=30) for side, future in ended.items()}


def stream_events(battle: Battle) -> list[tuple[str, str]]:
    """The turn's hub stream up to its turn-end event, as (name, data)."""

    stream = battle.turns.get().stream_key()

    async def read():
        subscription = get_hub().subscribe(stream, None)
        events = []
        while not events or events[-1].name != "turn-end":
            events += await subscription.get(timeout=10)
        subscription.close()
        return [(e.name, e.data) for e in events]

    return loop.submit(read()).result(timeout=30)


def first_deltas(battle: Battle) -> None:
    """Wait (on the hub, not a clock) until both sides have streamed some text."""
    stream = battle.turns.get().stream_key()

    async def wait():
        subscription = get_hub().subscribe(stream, None)
        seen: set[str] = set()
        while seen != {"delta-a", "delta-b"}:
            seen |= {e.name for e in await subscription.get(timeout=10)} & {"delta-a", "delta-b"}
        subscription.close()

    loop.submit(wait()).result(timeout=30)


def test_a_reply_is_claimed_once_a_second_claim_or_a_finished_reply_is_a_no_op(db, make_model):
    battle = pending_battle(make_model)
    reply = replies_of(battle)[0]

    run = ReplyRun.claim(reply.pk)

    assert run is not None and run.reply_id == reply.pk
    reply.refresh_from_db()
    assert reply.status == "streaming" and reply.started_at and reply.heartbeat_at
    assert ReplyRun.claim(reply.pk) is None
    Reply.objects.filter(pk=reply.pk).update(status="done")
    assert ReplyRun.claim(reply.pk) is None


def test_a_tasks_replies_are_claimed_in_one_statement_and_one_read(
    db, make_model, django_assert_num_queries
):
    battle = pending_battle(make_model)
    a, b = sorted(replies_of(battle), key=lambda r: r.side)
    Reply.objects.filter(pk=b.pk).update(status="done")
    other = replies_of(pending_battle(make_model, knobs_a=SLOW))[0]

    with django_assert_num_queries(2):  # and none for what the stream needs to start
        claimed = records.replies_claim([a.pk, b.pk, other.pk])
        assert all(r.model.endpoint() and r.turn.prompt for r in claimed)

    assert [r.pk for r in claimed] == [a.pk, other.pk]  # the finished one is not taken
    assert {r.status for r in claimed} == {"streaming"}
    assert {r.status for r in Reply.objects.filter(pk__in=[a.pk, other.pk])} == {"streaming"}
    assert records.replies_claim([a.pk, other.pk]) == []


def test_a_task_for_a_reply_already_taken_hands_nothing_to_the_loop(runner, make_model):
    battle = pending_battle(make_model)
    reply = replies_of(battle)[0]
    first = runner.take(reply.pk)

    assert runner.take(reply.pk) is None
    assert first.result(timeout=30).status == "done"


def test_a_turn_is_one_task_that_generates_both_sides(
    transactional_db, celery_worker, make_model, django_capture_on_commit_callbacks
):
    battle = pending_battle(make_model)
    replies = replies_of(battle)

    with transaction.atomic(), django_capture_on_commit_callbacks() as enqueued:
        replies_enqueue([r.pk for r in replies])
    # The commit hands over one task (the thread pool's, or the Celery worker's).

    assert len(enqueued) == 1
    wait_for(
        lambda: {r.status for r in replies_of(battle)} == {"done"},
        timeout=30,
        message="both sides of the one task should finish",
    )


def test_a_task_whose_first_reply_cannot_be_claimed_still_starts_the_others(
    transactional_db, make_model
):
    battle = pending_battle(make_model)
    a, b = sorted(replies_of(battle), key=lambda r: r.side)

    with pytest.raises(Exception, match="not-a-reply-id"):
        reply_generate(reply_ids=["not-a-reply-id", b.pk])

    wait_for(lambda: Reply.objects.get(pk=b.pk).status == "done", timeout=30)
    assert Reply.objects.get(pk=a.pk).status == "pending"  # left for another task or the reaper


def test_both_sides_stream_into_the_hub_and_end_with_their_stats_then_the_turn_ends(
    runner, make_model
):
    battle = pending_battle(make_model)

    endings = run_all(runner, battle)

    assert {side: e.status for side, e in endings.items()} == {"a": "done", "b": "done"}
    events = stream_events(battle)
    for reply in replies_of(battle):
        assert reply.status == "done" and reply.finished_at
        assert reply.text == generate_text(reply.model.model.split("?")[0], reply.turn.prompt, 12)
        assert reply.completion_tokens == 12 and reply.finish_reason == "stop"
        assert reply.ttft_ms is not None and reply.latency_ms >= reply.ttft_ms
        mine = [(n, d) for n, d in events if n.endswith(f"-{reply.side}")]
        # The streaming pane, the deltas that join to the text, then the final pane.
        assert mine[0][0] == f"pane-{reply.side}" and "status-streaming" in mine[0][1]
        assert mine[-1][0] == f"pane-{reply.side}" and "status-done" in mine[-1][1]
        deltas = "".join(html.unescape(d) for n, d in mine[1:-1])
        assert [n for n, _ in mine[1:-1]] == [f"delta-{reply.side}"] * len(mine[1:-1])
        assert deltas == reply.text
    assert [n for n, _ in events].count("turn-end") == 1 and events[-1][0] == "turn-end"


def test_a_finished_reply_is_rendered_once_and_its_pages_show_that_rendering(
    runner, make_model, visitor
):
    battle = pending_battle(make_model)
    Battle.objects.filter(pk=battle.pk).update(owner_key=visitor.key)
    Conversation.objects.filter(pk=battle.conversation_id).update(owner_key=visitor.key)

    run_all(runner, battle)

    for reply in replies_of(battle):
        assert reply.text_html == render_markdown(reply.text) and reply.text in reply.text_html
    # The pages read the stored rendering: they do not render the markdown again.
    Reply.objects.filter(turn__battle=battle, side="a").update(text_html="<p>as stored</p>")
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    fragment = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}, headers=HX)
    for html_text in (page, fragment.content.decode()):
        assert "<p>as stored</p>" in html_text
        assert replies_of(battle)[1].text_html in html_text


def test_a_stop_ends_both_sides_with_the_text_so_far(runner, make_model):
    battle = pending_battle(make_model, knobs_a=SLOW, knobs_b=SLOW)
    ended = [runner.take(r.pk) for r in replies_of(battle)]
    first_deltas(battle)

    turn_stop_request(battle.turns.get())

    assert [future.result(timeout=10).status for future in ended] == ["stopped", "stopped"]
    for reply in replies_of(battle):
        assert reply.status == "stopped" and reply.finish_reason == "stopped"
        full = generate_text(reply.model.model.split("?")[0], reply.turn.prompt, 400)
        assert reply.text and full.startswith(reply.text) and reply.text != full
    assert stream_events(battle)[-1][0] == "turn-end"


def test_a_failed_side_is_torn_down_once_row_flag_circuit_pane_and_turn_end(runner, make_model):
    battle = pending_battle(make_model, knobs_a=f"{FAST}&fault=401")

    endings = run_all(runner, battle)

    assert (endings["a"].status, endings["b"].status) == ("failed", "done")
    failed = Reply.objects.select_related("model").get(turn__battle=battle, side="a")
    assert (failed.error_code, failed.text) == ("auth", "")
    assert failed.error_message == "The provider rejected the API key."
    assert failed.model.consecutive_failures == 1
    battle.refresh_from_db()
    assert battle.had_failed_side
    events = stream_events(battle)
    panes = [d for n, d in events if n == "pane-a"]
    assert len(panes) == 2 and "status-failed" in panes[-1]
    assert "rejected the API key" in panes[-1]
    assert [n for n, _ in events].count("turn-end") == 1 and events[-1][0] == "turn-end"


def test_with_the_hub_down_the_end_is_still_recorded_in_the_database(transactional_db, make_model):
    with socket.socket() as sock:  # a port nothing listens on: a real client, no server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = RedisHub(f"redis://127.0.0.1:{port}/0", 60, "down", max_connections=10)
    runner = ReplyRunner(hub=unreachable, capacity=2, loop=loop.get_loop())
    battle = pending_battle(make_model)
    try:
        endings = run_all(runner, battle)
    finally:
        runner.db.shutdown()

    assert {e.status for e in endings.values()} == {"done"}
    assert {r.status for r in replies_of(battle)} == {"done"}


def test_checkpoints_write_every_reply_in_one_statement_and_only_its_own_attempt(
    db, make_model, django_assert_num_queries
):
    battle = pending_battle(make_model)
    a, b = replies_of(battle)
    Reply.objects.filter(pk__in=[a.pk, b.pk]).update(status="streaming", text="old")
    beats = [
        records.Beat(a.pk, a.attempt, "new text of a"),
        records.Beat(b.pk, b.attempt, None),  # no new text: only the heartbeat
        records.Beat(b.pk, b.attempt + 1, "an attempt that is not this row's"),
    ]

    with django_assert_num_queries(1):
        records.replies_checkpoint(beats)

    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.text, b.text) == ("new text of a", "old")
    assert a.heartbeat_at and b.heartbeat_at


def test_past_its_cap_a_process_takes_the_next_reply_only_when_one_ends(
    transactional_db, make_model
):
    runner = ReplyRunner(hub=get_hub(), capacity=1, loop=loop.get_loop())
    battle = pending_battle(make_model, knobs_a="ttft=0.2&tps=100&tokens=20")
    first, second = replies_of(battle)
    ended = {}
    holder = threading.Thread(target=lambda: ended.update(first=runner.take(first.pk)))
    holder.start()
    holder.join()
    waiting = threading.Thread(target=lambda: ended.update(second=runner.take(second.pk)))
    waiting.start()
    try:
        ended_first = ended["first"].result(timeout=30)
        waiting.join(timeout=30)
        ended["second"].result(timeout=30)
    finally:
        runner.db.shutdown()

    assert ended_first.status == "done"
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.started_at >= first.finished_at, "the second reply waited for a free slot"


def test_a_task_with_more_replies_than_free_slots_starts_them_as_slots_free_up(
    transactional_db, make_model
):
    runner = ReplyRunner(hub=get_hub(), capacity=1, loop=loop.get_loop())
    battle = pending_battle(make_model, knobs_a="ttft=0.2&tps=100&tokens=20")
    first, second = sorted(replies_of(battle), key=lambda r: r.side)
    try:
        ended = runner.take_many([first.pk, second.pk])  # returns once both are started
        assert [future.result(timeout=30).status for future in ended] == ["done", "done"]
    finally:
        runner.db.shutdown()

    first.refresh_from_db()
    second.refresh_from_db()
    assert second.started_at >= first.finished_at, "one slot: the second waited for it"


def test_a_warm_shutdown_ends_replies_past_the_grace_plainly_with_their_text(runner, make_model):
    battle = pending_battle(make_model, knobs_a=SLOW, knobs_b=SLOW)
    ended = [runner.take(r.pk) for r in replies_of(battle)]
    first_deltas(battle)

    runner.drain(grace=0)

    assert [future.result(timeout=1).status for future in ended] == ["failed", "failed"]
    for reply in replies_of(battle):
        assert reply.error_code == "interrupted" and "Retry this side" in reply.error_message
        assert reply.text, "the text so far is kept"
        assert reply.model.consecutive_failures == 0, "not the model's fault"
    events = stream_events(battle)
    assert "status-failed" in [d for n, d in events if n == "pane-a"][-1]
    assert events[-1][0] == "turn-end"


def test_a_task_arriving_during_a_shutdown_hands_its_reply_back_to_the_queue(
    live, runner, make_model
):
    runner.drain(grace=0)
    battle = pending_battle(make_model)
    reply = replies_of(battle)[0]

    assert runner.take(reply.pk) is None

    # The process's own runner (embedded) or the worker (services) takes it from the queue.
    wait_for(lambda: Reply.objects.get(pk=reply.pk).status == "done")


class _Text:
    """A reply's unsent text, as the publisher sees a reply."""

    def __init__(self, stream: str):
        self.stream = stream
        self.unsent: list[str] = []

    def take_deltas(self):
        text, self.unsent = "".join(self.unsent), []
        return (self.stream, "delta-a", text) if text else None


def test_a_first_token_goes_out_at_once_later_text_with_the_window_and_a_pane_after_it():
    stream = f"publisher-{uuid.uuid4().hex}"
    hub = get_hub()

    async def main():
        # A window long enough to tell the two apart: a first token must not wait for it.
        publisher = Publisher(hub, window=1.5)
        text = _Text(stream)
        subscription = hub.subscribe(stream, None)
        text.unsent.append("first")
        publisher.deltas_waiting(text, soon=True)
        started = time.monotonic()
        assert [e.data for e in await subscription.get(timeout=1.0)] == ["first"]
        assert time.monotonic() - started < 0.5

        text.unsent.append("later")
        publisher.deltas_waiting(text, soon=False)
        assert await subscription.get(timeout=0.5) == []  # waits for the end of the window
        assert [e.data for e in await subscription.get(timeout=2.0)] == ["later"]

        text.unsent.append("last words")
        publisher.deltas_waiting(text, soon=False)
        publisher.take(text)  # a reply ends: its text goes before its final pane
        started = time.monotonic()
        await publisher.send(stream, "pane-a", "final")
        events = await subscription.get(timeout=1.0)
        while len(events) < 2:
            events += await subscription.get(timeout=1.0)
        assert [(e.name, e.data) for e in events] == [
            ("delta-a", "last words"),
            ("pane-a", "final"),
        ]
        assert time.monotonic() - started < 0.5
        subscription.close()
        hub.discard(stream)

    loop.submit(main()).result(timeout=30)
