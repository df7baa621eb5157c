"""The database side of a reply's generation: claim, history, checkpoints, its end.

Plain synchronous ORM code. The claim runs in the task's thread; the rest runs in the
generation loop's database threads (`core.db.DatabaseThreads`), never in the loop itself.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from battles import identity
from battles.models import Battle, Reply, Turn
from core import metrics
from core.markdown import render_markdown
from llm_providers.client import ProviderError, StreamResult
from llm_providers.services import model_record_failure, model_record_success

log = logging.getLogger(__name__)

# Rows per checkpoint statement: a few hundred replies' text in one UPDATE, not one each.
CHECKPOINT_ROWS = 100
# Failures that say nothing about the model: they do not count towards its circuit.
NOT_THE_MODELS_FAULT = {"internal", "interrupted"}


def pane_html(reply: Reply, *, streaming_text: str = "") -> str:
    return render_to_string(
        "battles/_pane.html",
        {"reply": reply, "turn": reply.turn, "streaming_text": streaming_text, "live": True},
    )


def replies_claim(reply_ids: Sequence[int]) -> list[Reply]:
    """Take the pending replies among these for generation, in two statements whatever their
    number (a turn's two sides come in one task); the others are another worker's or nobody
    wants them any more, so a retried or duplicated task is a no-op.

    One `UPDATE ... RETURNING` claims them (the ORM's update returns only a count, so this
    was an UPDATE and a read per reply: with 500 battles started at once, the claims' round
    trips were a large share of the time from a reply's claim to its first token,
    benchmarks/load/README.md), one read fetches what the stream needs.
    """
    # As the ORM would: an id that is not one fails here, not as the statement's error.
    reply_ids = [Reply._meta.pk.get_prep_value(reply_id) for reply_id in reply_ids]
    if not reply_ids:
        return []
    now = timezone.now()
    stamp = connection.ops.adapt_datetimefield_value(now)
    table = connection.ops.quote_name(Reply._meta.db_table)
    ids = ", ".join(["%s"] * len(reply_ids))
    # Only the table's quoted name and placeholders go into the text (S608).
    sql = (
        f"UPDATE {table} SET status = %s, started_at = %s, heartbeat_at = %s "  # noqa: S608
        f"WHERE id IN ({ids}) AND status = %s RETURNING id"
    )
    params = [Reply.Status.STREAMING, stamp, stamp, *reply_ids, Reply.Status.PENDING]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        claimed = {row[0] for row in cursor.fetchall()}
    if not claimed:
        return []
    # No join to the battle: nothing here needs more than its id (turn.battle_id); with a
    # large battle table PostgreSQL planned that join badly (benchmarks/load/README.md).
    found = {r.pk: r for r in Reply.objects.select_related("turn", "model").filter(pk__in=claimed)}
    replies = [found[pk] for pk in dict.fromkeys(reply_ids) if pk in found]
    for reply in replies:
        if reply.attempt <= 1:  # a retry's wait would start at the first attempt's creation
            metrics.TASK_LATENCY.observe(max(0.0, (now - reply.created_at).total_seconds()))
    return replies


def reply_messages(reply: Reply) -> list[dict]:
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


@dataclass(frozen=True)
class Beat:
    """One reply's checkpoint: it is alive, and its text if that changed since the last."""

    reply_id: int
    attempt: int
    text: str | None


def replies_checkpoint(beats: list[Beat]) -> None:
    """A fresh heartbeat (and text) for every reply a process is generating, a statement per
    CHECKPOINT_ROWS replies. A reply whose heartbeat stops (its worker died) is failed by
    the reaper; the text is what the visitor keeps if that happens.

    Written as SQL, plain and portable: built with the ORM's Case/When, this statement cost the
    worker far more CPU than the database's work (benchmarks/load/README.md).
    """
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    table = connection.ops.quote_name(Reply._meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(beats), CHECKPOINT_ROWS):
            chunk = beats[start : start + CHECKPOINT_ROWS]
            params: list[Any] = [now]
            texts = [beat for beat in chunk if beat.text is not None]
            set_text = ""
            if texts:
                cases = " ".join(["WHEN id = %s AND attempt = %s THEN %s"] * len(texts))
                set_text = f", text = CASE {cases} ELSE text END"
                params += [v for b in texts for v in (b.reply_id, b.attempt, b.text)]
            mine = " OR ".join(["(id = %s AND attempt = %s)"] * len(chunk))
            params += [v for b in chunk for v in (b.reply_id, b.attempt)]
            params.append(Reply.Status.STREAMING)
            # Only the table's quoted name and placeholders go into the text (S608).
            sql = f"UPDATE {table} SET heartbeat_at = %s{set_text} WHERE ({mine}) AND status = %s"  # noqa: S608
            cursor.execute(sql, params)


@dataclass
class Ending:
    """How a reply ended, as the row will record it."""

    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: ProviderError | None = None

    @classmethod
    def of_result(cls, result: StreamResult) -> "Ending":
        if not result.text.strip() and not result.stopped:
            return cls.of_error(
                ProviderError("empty", "The model returned an empty answer.", retryable=False),
                partial=result.text,
            )
        status = Reply.Status.STOPPED if result.stopped else Reply.Status.DONE
        return cls(
            status,
            {
                "status": status,
                "text": result.text,
                "finish_reason": "stopped" if result.stopped else (result.finish_reason or ""),
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "ttft_ms": result.ttft_ms,
                "latency_ms": result.latency_ms,
                "retries": result.retries,
                "finished_at": timezone.now(),
            },
        )

    @classmethod
    def of_error(cls, exc: ProviderError, *, partial: str) -> "Ending":
        return cls(
            Reply.Status.FAILED,
            {
                "status": Reply.Status.FAILED,
                "text": partial,
                "error_code": exc.code[:40],
                "error_message": exc.message[:300],
                "error_detail": (exc.detail or "")[:5000],
                "finished_at": timezone.now(),
            },
            error=exc,
        )


def reply_settle(reply: Reply, ending: Ending) -> str:
    """Settle what must hold before the reply shows as ended (a vote or a new battle that
    follows must see the battle's flags and the model's circuit); the final pane."""
    battle = Battle.objects.filter(pk=reply.turn.battle_id)
    if ending.error is not None:
        battle.update(had_failed_side=True)
        if ending.error.code not in NOT_THE_MODELS_FAULT:
            model_record_failure(model_id=reply.model_id, error=ending.error.message)
    else:
        model_record_success(model_id=reply.model_id)
        model = reply.model
        terms = identity.identity_terms(
            name=model.name, slug=model.slug, upstream=model.model, organization=model.organization
        )
        found = identity.leaked_terms(ending.fields["text"], terms)
        if found:
            log.info("battle %s: reply %s names %s", reply.turn.battle_id, reply.side, found)
            battle.update(identity_leak=True)
            Reply.objects.filter(pk=reply.pk).update(identity_leak=True)
            metrics.IDENTITY_LEAKS.labels(model.slug).inc()
    _count_ending(reply, ending)
    # Rendered once, here (a database thread, not the loop): the final pane and every page
    # that shows the reply later use it (Reply.text_html).
    ending.fields["text_html"] = render_markdown(ending.fields["text"])
    for name, value in ending.fields.items():
        setattr(reply, name, value)
    return pane_html(reply)


def _count_ending(reply: Reply, ending: Ending) -> None:
    slug = reply.model.slug
    code = ending.error.code if ending.error is not None else ""
    metrics.REPLIES.labels(slug, ending.status, code).inc()
    if ending.status != Reply.Status.DONE:
        return
    ttft_ms, latency_ms = ending.fields["ttft_ms"], ending.fields["latency_ms"]
    if ttft_ms is not None:
        metrics.TIME_TO_FIRST_TOKEN.labels(slug).observe(ttft_ms / 1000)
    tokens = ending.fields["completion_tokens"]
    # Local models send no counts while streaming: no rate is guessed for them.
    if tokens and ttft_ms is not None and latency_ms is not None and latency_ms > ttft_ms:
        metrics.TOKENS_PER_SECOND.labels(slug).observe(tokens / ((latency_ms - ttft_ms) / 1000))


def reply_record_end(reply: Reply, ending: Ending) -> bool:
    """Record the end; whether the whole turn has ended with it.

    Both sides may end at the same moment, each in a process of its own: the lock on the
    turn makes one of them the last, so exactly one says the turn is over.
    """
    with transaction.atomic():
        list(Turn.objects.select_for_update().filter(pk=reply.turn_id).values_list("pk"))
        Reply.objects.filter(
            pk=reply.pk, attempt=reply.attempt, status=Reply.Status.STREAMING
        ).update(**ending.fields)
        return turn_over(reply.turn_id)


def turn_over(turn_id: int) -> bool:
    states = set(Reply.objects.filter(turn_id=turn_id).values_list("status", flat=True))
    return not states & {Reply.Status.PENDING, Reply.Status.STREAMING}
