"""The live board: count the votes again soon after new ones arrive, and never when none did.

A tick every ARENA_REFRESH_SECONDS (Celery Beat in service mode, core.scheduler in the
embedded default) calls `ratings_refresh`. It compares what the vote tables hold with what the
last refresh saw (`RefreshMark`) and, only if a vote arrived, recomputes every category from
the stored tallies (leaderboard.aggregates: the settled votes are folded in first, the few
newer ones read as they are) with the filters the last full recompute decided; a category's
snapshot is written only when its counts changed (the fingerprint). Refreshes are coalesced:
the recompute's lease lets one run at a time (a tick that finds it held does nothing; the next
tick will see the votes), and a tick within half an interval of the last refresh (ticks that
queued up behind a busy worker) does nothing either. The hourly full recompute comes through
here too, forced: it counts every vote, decides the filters again (hot prompts, the outlier
test), checks the stored tallies against its count and records what it saw. Until a full
recompute has run, every refresh is a full one.

What "a vote arrived" means, without a watermark that out-of-order commits could fool: on
PostgreSQL ids are handed out at insert time and become visible at commit, so a vote with a
lower id than one already seen may still appear. Each vote table's mark is therefore the
highest id and the number of rows above a *floor*, an id below which every vote had
committed: the highest id seen at least ARENA_REFRESH_SETTLE_SECONDS ago (no vote's
transaction stays open that long; the full recompute's check repairs the stored tallies if
one did). A late commit above the floor changes the count; below it there are none to come.
The check reads the ids above the floor through the primary key: a few minutes of votes,
however many the tables hold. The floor is also how far the votes are folded.

Changes that add no vote (staff flag a vote invalid, a model retired) need no refresh of the
stored tallies, which keep every vote whatever its reason: they show at the next refresh after
a vote, at the hourly full recompute, or at once with `./manage.py recompute_ratings`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from battles.models import Vote
from leaderboard.models import ImportedVote, RefreshMark, Snapshot
from leaderboard.recompute import RecomputeBusyError, ratings_recompute_all
from leaderboard.timing import stage

log = logging.getLogger(__name__)

MARK_NAME = "ratings"
_SOURCES = {"vote": Vote, "imported": ImportedVote}


@dataclass
class RefreshReport:
    """What a refresh did: `ran` the recompute or not, and why."""

    ran: bool
    reason: str  # "forced", "new votes", "no new votes", "too soon", "busy"
    snapshots: list[Snapshot] = field(default_factory=list)


def _above(source, floor: int) -> tuple[int | None, int]:
    found = source.objects.filter(pk__gt=floor).aggregate(top=Max("pk"), rows=Count("pk"))
    return found["top"], found["rows"]


def _observe(source, old: dict, now: dt.datetime) -> tuple[bool, dict]:
    """(whether the table changed since `old`, its mark now)."""
    floor = old.get("floor", 0)
    top, rows = _above(source, floor)
    changed = (top, rows) != (old.get("max"), old.get("recent", 0))
    candidate, candidate_at = old.get("candidate"), old.get("candidate_at")
    settle = dt.timedelta(seconds=settings.ARENA_REFRESH_SETTLE_SECONDS)
    if candidate is not None and now - dt.datetime.fromisoformat(candidate_at) >= settle:
        floor, candidate = candidate, None
        top, rows = _above(source, floor)
    if candidate is None and top is not None and top > floor:
        candidate, candidate_at = top, now.isoformat()
    return changed, {
        "floor": floor,
        "max": top,
        "recent": rows,
        "candidate": candidate,
        "candidate_at": candidate_at,
    }


def votes_observe(seen: dict, *, now: dt.datetime) -> tuple[bool, dict]:
    """(whether any vote table changed since `seen`, the marks now)."""
    changed, marks = False, {}
    for label, source in _SOURCES.items():
        table_changed, marks[label] = _observe(source, seen.get(label, {}), now)
        changed |= table_changed
    return changed, marks


def ratings_refresh(
    *,
    force: bool = False,
    interval: float | None = None,
    bootstrap: int = 0,
    style: bool | None = None,
) -> RefreshReport:
    """Recompute every category (`ratings_recompute_all(bootstrap=, style=)`) if a vote
    arrived since the last refresh, or if `force`.

    Does nothing while another recompute runs, or within half an `interval` (default
    ARENA_REFRESH_SECONDS) of the last refresh unless forced. The marks are read before the
    recompute's cut-off, so a vote that commits meanwhile is seen by the next tick (which
    then writes nothing if the recompute had it)."""
    with stage("refresh, end to end"):
        return _refresh(force=force, interval=interval, bootstrap=bootstrap, style=style)


def _refresh(
    *, force: bool, interval: float | None, bootstrap: int, style: bool | None
) -> RefreshReport:
    # Not created until a refresh has something to record: a tick with nothing to do writes
    # nothing.
    mark = RefreshMark.objects.filter(name=MARK_NAME).first() or RefreshMark(name=MARK_NAME)
    now = timezone.now()
    interval = settings.ARENA_REFRESH_SECONDS if interval is None else interval
    spacing = dt.timedelta(seconds=interval / 2)
    if not force and mark.refreshed_at is not None and now - mark.refreshed_at < spacing:
        return RefreshReport(ran=False, reason="too soon")
    changed, seen = votes_observe(mark.seen, now=now)
    if not (changed or force):
        return RefreshReport(ran=False, reason="no new votes")
    # A full recompute decides the filters (hot prompts, the outlier test) and checks the
    # stored tallies; a refresh between two of them counts from the stored tallies with
    # those filters. Until a full one has run, every refresh is one.
    full = force or not mark.seen.get("full_at")
    settled = {label: seen[label]["floor"] for label in _SOURCES}
    try:
        snapshots = ratings_recompute_all(
            bootstrap=bootstrap, style=style, settled=settled, stored=not full
        )
    except RecomputeBusyError:
        return RefreshReport(ran=False, reason="busy")
    seen["full_at"] = now.isoformat() if full else mark.seen["full_at"]
    # Conditional: a slower refresh that started earlier never puts back an older mark.
    RefreshMark.objects.bulk_create([RefreshMark(name=MARK_NAME)], ignore_conflicts=True)
    RefreshMark.objects.filter(name=MARK_NAME).filter(
        Q(refreshed_at__isnull=True) | Q(refreshed_at__lt=now)
    ).update(seen=seen, refreshed_at=now)
    return RefreshReport(ran=True, reason="forced" if force else "new votes", snapshots=snapshots)
