import logging

from celery import shared_task

from leaderboard import recompute

log = logging.getLogger(__name__)


@shared_task(name="leaderboard.tasks.ratings_recompute_task", ignore_result=True)
def ratings_recompute_task() -> None:
    try:
        snapshots = recompute.ratings_recompute_all()
    except recompute.RecomputeBusyError as exc:
        # Beat fired while a long recompute (or the command) was still running: skip this tick.
        log.info("%s", exc)
        return
    log.info("ratings recomputed: %s", ", ".join(f"{s.category}={s.vote_count}" for s in snapshots))
