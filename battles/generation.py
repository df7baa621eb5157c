"""Generating a reply: claim it, stream it from its model into the hub, checkpoint it, finish it.

What runs where replies are generated (a Celery worker, or the embedded web process's task
threads): `reply_generate` for one reply, `replies_reap` for replies whose worker died. The
battle services enqueue replies through `replies_enqueue`; nothing here imports them.
"""

import html
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError

from battles import identity
from battles.models import Battle, Reply, Turn
from core.dispatch import enqueue_many, enqueue_now
from core.hub import get_hub
from llm_providers.client import ProviderError, Timeouts, chat_stream
from llm_providers.services import model_record_failure, model_record_success

log = logging.getLogger(__name__)

GENERATE_TASK = "battles.tasks.reply_generate_task"


def replies_enqueue(reply_ids: list[int]) -> None:
    """Generate these replies once the current transaction commits (all in one broker check)."""
    enqueue_many(GENERATE_TASK, [(pk,) for pk in reply_ids])


def turn_stream_reset(turn: Turn) -> None:
    """Start the turn's event stream afresh for a retry or regenerate.

    The page then opens a new stream; replaying the old one would end it at the old turn-end.
    A stop requested earlier must not stop the new answers either. Tasks are enqueued on
    commit, so nothing new is published before this.
    """
    hub = get_hub()
    hub.discard(turn.stream_key())
    hub.clear_flag(_stop_key(turn.pk))


def turn_stop_request(turn: Turn) -> None:
    """Ask the turn's running replies to stop (they see it within a quarter of a second)."""
    get_hub().set_flag(_stop_key(turn.pk))


def _stop_key(turn_id: int) -> str:
    return f"stop:{turn_id}"


def _messages(reply: Reply) -> list[dict]:
    """The chat history this side's model sees: its own system prompt and its own replies."""
    model = reply.model
    messages = [{"role": "system", "content": model.system_prompt}] if model.system_prompt else []
    # The first turn has no history: no query for it.
    earlier = (
        Reply.objects.filter(
            turn__battle_id=reply.turn.battle_id, turn__index__lt=reply.turn.index, side=reply.side
        )
        .select_related("turn")
        .order_by("turn__index")
        if reply.turn.index
        else ()
    )
    for previous in earlier:
        messages.append({"role": "user", "content": previous.turn.prompt})
        messages.append({"role": "assistant", "content": previous.text})
    messages.append({"role": "user", "content": reply.turn.prompt})
    return messages


def pane_html(reply: Reply, *, streaming_text: str = "") -> str:
    return render_to_string(
        "battles/_pane.html",
        {"reply": reply, "turn": reply.turn, "streaming_text": streaming_text, "live": True},
    )


def _publish_pane(reply: Reply) -> None:
    get_hub().publish(reply.turn.stream_key(), f"pane-{reply.side}", pane_html(reply))


def _publish_turn_end_if_finished(turn: Turn) -> None:
    states = set(Reply.objects.filter(turn=turn).values_list("status", flat=True))
    if not states & {Reply.Status.PENDING, Reply.Status.STREAMING}:
        get_hub().publish(turn.stream_key(), "turn-end", "")


class _Checkpoint(threading.Thread):
    """Heartbeat and text checkpoint every few seconds, off the token path.

    The DB sees the partial text and a fresh heartbeat without one write per token; a reply
    whose heartbeat stops (worker killed) is found by the reaper.
    """

    def __init__(self, reply_id: int, parts: list[str]):
        super().__init__(daemon=True, name=f"checkpoint-{reply_id}")
        self.reply_id = reply_id
        self.parts = parts
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.ARENA_HEARTBEAT_SECONDS):
                Reply.objects.filter(pk=self.reply_id, status=Reply.Status.STREAMING).update(
                    heartbeat_at=timezone.now(), text="".join(self.parts)
                )
                # Idle for seconds until the next write: give the connection back meanwhile.
                connection.close()
        except Exception:
            log.exception("checkpoint for reply %s failed", self.reply_id)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


# Tokens that arrive within this many seconds of the last published delta travel together.
DELTA_PUBLISH_SECONDS = 0.05


def reply_generate(*, reply_id: int) -> None:
    now = timezone.now()
    claimed = Reply.objects.filter(pk=reply_id, status=Reply.Status.PENDING).update(
        status=Reply.Status.STREAMING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return  # already taken by another worker, or no longer wanted
    # No join to the battle: nothing here needs more than its id (turn.battle_id). With a
    # large battle table and few turns PostgreSQL planned that join as a merge join over the
    # whole battle index: 360-590 ms before every reply with 2,000,000 battles.
    reply = Reply.objects.select_related("turn", "model").get(pk=reply_id)
    hub = get_hub()
    stream = reply.turn.stream_key()
    parts: list[str] = []
    pending: list[str] = []
    last_publish = [0.0]
    first_sent = [False]
    stop_key = _stop_key(reply.turn_id)

    def publish_pending() -> None:
        if pending:
            # Deltas are swapped into the page as HTML: escape them (the final pane is
            # sanitised markdown, rendered by core.markdown).
            text = html.escape("".join(pending), quote=False)
            pending.clear()
            # Deltas travel with the process's other replies (one round trip); the first
            # token goes out at once. Called in the stream loop: it never waits for Redis.
            hub.publish_batched(stream, f"delta-{reply.side}", text, soon=not first_sent[0])
            first_sent[0] = True
        last_publish[0] = time.monotonic()

    def on_delta(text: str) -> None:
        parts.append(text)
        pending.append(text)
        # One hub event per DELTA_PUBLISH_SECONDS at most, not one per token: a Redis round
        # trip per token was the largest share of the worker's time. The first token goes
        # out at once.
        if time.monotonic() - last_publish[0] >= DELTA_PUBLISH_SECONDS:
            publish_pending()

    def should_stop() -> bool:
        # Called after every chunk and every 50 ms without one: also sends held-back text.
        if pending and time.monotonic() - last_publish[0] >= DELTA_PUBLISH_SECONDS:
            publish_pending()
        # The flag lives in the hub (Redis in service mode); the hub reads the flags of all the
        # process's replies a few times a second, in one round trip.
        return stop_watch.is_set()

    endpoint, messages = reply.model.endpoint(), _messages(reply)
    # The model call lasts seconds to minutes without touching the database: hold no
    # connection meanwhile (it goes back to the pool; the finish takes one again).
    connection.close()
    checkpoint = _Checkpoint(reply.pk, parts)
    checkpoint.start()
    try:
        with hub.watch_flag(stop_key) as stop_watch:
            result = chat_stream(
                endpoint,
                messages,
                on_delta=on_delta,
                should_stop=should_stop,
                # The "streaming" pane goes out while the model thinks, not before the request.
                on_sent=lambda: _publish_pane(reply),
                timeouts=Timeouts(
                    connect=settings.LLM_TIMEOUT_CONNECT,
                    first_token=settings.LLM_TIMEOUT_FIRST_TOKEN,
                    idle=settings.LLM_TIMEOUT_IDLE,
                    total=settings.LLM_TIMEOUT_TOTAL,
                ),
                max_retries=settings.LLM_MAX_RETRIES,
            )
    except ProviderError as exc:
        checkpoint.stop()
        publish_pending()
        _reply_fail(reply, exc, partial="".join(parts))
    except Exception as exc:
        checkpoint.stop()
        publish_pending()
        log.exception("reply %s: unexpected failure", reply.pk)
        _reply_fail(
            reply,
            ProviderError(
                "internal", "Something went wrong on our side.", retryable=False, detail=repr(exc)
            ),
            partial="".join(parts),
        )
    else:
        checkpoint.stop()
        publish_pending()
        text = result.text
        if not text.strip() and not result.stopped:
            _reply_fail(
                reply,
                ProviderError("empty", "The model returned an empty answer.", retryable=False),
                partial=text,
            )
        else:
            # The circuit and the identity flag are settled before the reply shows as
            # finished: a vote or a new battle that follows must see them.
            model_record_success(model_id=reply.model_id)
            _check_identity(reply, text)
            _reply_finish(
                reply,
                status=Reply.Status.STOPPED if result.stopped else Reply.Status.DONE,
                text=text,
                finish_reason="stopped" if result.stopped else (result.finish_reason or ""),
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                ttft_ms=result.ttft_ms,
                latency_ms=result.latency_ms,
                retries=result.retries,
                finished_at=timezone.now(),
            )


def _reply_finish(reply: Reply, **fields) -> None:
    """Publish the final pane, then record the end, then maybe end the turn.

    In this order a turn-end event (sent once every reply of the turn is finished in the DB)
    always follows the final pane of both sides in the stream.
    """
    for name, value in fields.items():
        setattr(reply, name, value)
    try:
        _publish_pane(reply)
    except RedisError:
        # The hub is down: the database still records the end; pages read it from there.
        log.warning("reply %s: final pane not published", reply.pk, exc_info=True)
    Reply.objects.filter(pk=reply.pk, status=Reply.Status.STREAMING).update(**fields)
    try:
        _publish_turn_end_if_finished(reply.turn)
    except RedisError:
        log.warning("reply %s: turn end not published", reply.pk, exc_info=True)


def _reply_fail(reply: Reply, exc: ProviderError, *, partial: str) -> None:
    Battle.objects.filter(pk=reply.turn.battle_id).update(had_failed_side=True)
    if exc.code not in ("stopped", "internal"):
        model_record_failure(model_id=reply.model_id, error=exc.message)
    _reply_finish(
        reply,
        status=Reply.Status.FAILED,
        text=partial,
        error_code=exc.code[:40],
        error_message=exc.message[:300],
        error_detail=(getattr(exc, "detail", "") or "")[:5000],
        finished_at=timezone.now(),
    )


def _check_identity(reply: Reply, text: str) -> None:
    model = reply.model
    terms = identity.identity_terms(
        name=model.name, slug=model.slug, upstream=model.model, organization=model.organization
    )
    found = identity.leaked_terms(text, terms)
    if found:
        log.info("battle %s: reply %s names %s", reply.turn.battle_id, reply.side, found)
        Battle.objects.filter(pk=reply.turn.battle_id).update(identity_leak=True)
        Reply.objects.filter(pk=reply.pk).update(identity_leak=True)


def replies_reap() -> dict[str, int]:
    """Fail replies whose worker stopped making progress; re-enqueue ones never picked up."""
    now = timezone.now()
    stall = timedelta(seconds=settings.ARENA_REPLY_STALL_SECONDS)
    stuck = list(
        Reply.objects.filter(
            status=Reply.Status.STREAMING, heartbeat_at__lt=now - stall
        ).select_related("turn")
    )
    failed = 0
    for reply in stuck:
        updated = Reply.objects.filter(
            pk=reply.pk, status=Reply.Status.STREAMING, heartbeat_at__lt=now - stall
        ).update(
            status=Reply.Status.FAILED,
            error_code="stalled",
            error_message="The model stopped responding before it finished. Retry this side.",
            finished_at=now,
        )
        if updated:
            failed += 1
            Battle.objects.filter(pk=reply.turn.battle_id).update(had_failed_side=True)
            reply.refresh_from_db()
            _publish_pane(reply)
            _publish_turn_end_if_finished(reply.turn)
    requeued = 0
    for pk in Reply.objects.filter(
        status=Reply.Status.PENDING, created_at__lt=now - stall
    ).values_list("pk", flat=True)[:500]:
        enqueue_now(GENERATE_TASK, pk)
        requeued += 1
    return {"failed": failed, "requeued": requeued}
