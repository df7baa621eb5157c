import logging

from celery import shared_task

from leaderboard import refresh

log = logging.getLogger(__name__)


def _log(report: refresh.RefreshReport) -> None:
    if report.ran:
        counts = ", ".join(f"{s.category}={s.vote_count}" for s in report.snapshots)
        log.info("ratings recomputed (%s): %s", report.reason, counts)
    elif report.reason == "busy":
        # Another run (the command, a long recompute) holds the lock: this tick is skipped.
        log.info("ratings recompute skipped: another one is running")


@shared_task(name="leaderboard.tasks.ratings_recompute_task", ignore_result=True)
def ratings_recompute_task() -> None:
    """The hourly full recompute: every category, whether or not a vote arrived."""
    _log(refresh.ratings_refresh(force=True))


@shared_task(name="leaderboard.tasks.ratings_refresh_task", ignore_result=True)
def ratings_refresh_task(interval: float | None = None) -> None:
    """Every `interval` seconds (ARENA_REFRESH_SECONDS): recompute if a vote arrived since the
    last refresh."""
    _log(refresh.ratings_refresh(interval=interval))
