"""The reaper: replies whose worker died are failed; replies nobody picked up are enqueued
again. Runs on the beat schedule (battles.tasks.replies_reap_task)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from battles.generation.records import pane_html, turn_over
from battles.generation.runner import GENERATE_TASK
from battles.models import Battle, Reply
from core import metrics
from core.dispatch import enqueue_now
from core.hub import get_hub


def replies_reap() -> dict[str, int]:
    """Fail replies whose worker stopped making progress; re-enqueue ones never picked up."""
    now = timezone.now()
    stall = timedelta(seconds=settings.ARENA_REPLY_STALL_SECONDS)
    stuck = list(
        Reply.objects.filter(
            status=Reply.Status.STREAMING, heartbeat_at__lt=now - stall
        ).select_related("turn", "model")
    )
    hub = get_hub()
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
            metrics.REPLIES.labels(reply.model.slug, "stalled", "stalled").inc()
            Battle.objects.filter(pk=reply.turn.battle_id).update(had_failed_side=True)
            reply.refresh_from_db()
            stream = reply.turn.stream_key()
            hub.publish(stream, f"pane-{reply.side}", pane_html(reply))
            if turn_over(reply.turn_id):
                hub.publish(stream, "turn-end", "")
    requeued = 0
    for pk in Reply.objects.filter(
        status=Reply.Status.PENDING, created_at__lt=now - stall
    ).values_list("pk", flat=True)[:500]:
        enqueue_now(GENERATE_TASK, pk)
        requeued += 1
    return {"failed": failed, "requeued": requeued}
