import datetime as dt
import io
import threading

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from battles.models import Vote
from conftest import SERVICE_MODE, wait_for
from core import scheduler
from leaderboard import recompute, refresh
from leaderboard.models import RecomputeLock, RefreshMark, Snapshot
from leaderboard.tasks import ratings_recompute_task, ratings_refresh_task


def overall() -> Snapshot | None:
    return Snapshot.objects.filter(category="overall").first()


def test_without_any_vote_a_refresh_does_nothing(db):
    report = refresh.ratings_refresh()
    assert (report.ran, report.reason) == (False, "no new votes")
    assert not Snapshot.objects.exists()


def test_a_refresh_counts_new_votes_and_only_new_votes(rated, make_vote):
    first = refresh.ratings_refresh()
    assert (first.ran, first.reason) == (True, "new votes")
    assert overall().vote_count == 60

    again = refresh.ratings_refresh(interval=0)
    assert (again.ran, again.reason) == (False, "no new votes")

    alpha, bravo, _ = rated
    make_vote(alpha, bravo, "b")
    later = refresh.ratings_refresh(interval=0)
    assert later.ran
    assert overall().vote_count == 61
    assert Snapshot.objects.filter(category="overall").count() == 2


def test_refreshes_closer_than_half_an_interval_are_coalesced(rated, make_vote):
    assert refresh.ratings_refresh(interval=60).ran
    make_vote(rated[0], rated[1], "a")
    report = refresh.ratings_refresh(interval=60)
    assert (report.ran, report.reason) == (False, "too soon")
    assert overall().vote_count == 60
    # Half an interval later the vote is counted.
    RefreshMark.objects.update(refreshed_at=timezone.now() - dt.timedelta(seconds=31))
    assert refresh.ratings_refresh(interval=60).ran
    assert overall().vote_count == 61


def test_a_refresh_does_nothing_while_another_recompute_holds_the_lock(rated):
    RecomputeLock.objects.create(
        name=recompute.LOCK_NAME, holder="other", held_until="2999-01-01T00:00:00Z"
    )
    report = refresh.ratings_refresh()
    assert (report.ran, report.reason) == (False, "busy")
    assert not Snapshot.objects.exists()
    RecomputeLock.objects.update(holder="", held_until=None)
    # Nothing was recorded as seen: the next tick counts the votes.
    assert refresh.ratings_refresh().ran
    assert overall().vote_count == 60


def test_a_vote_that_commits_after_a_higher_id_was_seen_is_still_counted(rated, make_vote):
    """PostgreSQL hands out ids at insert and shows rows at commit: a vote with a lower id
    than one already counted can appear later. Stand-in: a vote taken out before the refresh
    and put back, with its own id, after it."""
    alpha, bravo, _ = rated
    late = make_vote(alpha, bravo, "b")
    make_vote(alpha, bravo, "a")
    kept = {
        name: value
        for name, value in Vote.objects.filter(pk=late.pk).values()[0].items()
        if name == "style" or not name.startswith("style_")  # generated columns
    }
    Vote.objects.filter(pk=late.pk).delete()
    assert refresh.ratings_refresh().ran
    assert overall().vote_count == 61

    Vote.objects.create(**kept)
    assert refresh.ratings_refresh(interval=0).ran
    assert overall().vote_count == 62


def test_the_floor_moves_up_once_votes_have_settled(rated, make_vote, settings):
    """The check reads only the ids above the floor: a few minutes of votes, not all."""
    refresh.ratings_refresh()
    first = RefreshMark.objects.get().seen["vote"]
    top = Vote.objects.order_by("-pk").values_list("pk", flat=True)[0]
    assert (first["floor"], first["max"], first["recent"], first["candidate"]) == (0, top, 60, top)

    settings.ARENA_REFRESH_SETTLE_SECONDS = 0
    make_vote(rated[0], rated[1], "a")
    assert refresh.ratings_refresh(interval=0).ran
    mark = RefreshMark.objects.get().seen["vote"]
    assert mark["floor"] == top
    assert (mark["max"], mark["recent"]) == (top + 1, 1)
    assert overall().vote_count == 61
    # Nothing new: the same marks above the new floor.
    assert refresh.ratings_refresh(interval=0).reason == "no new votes"


def test_the_hourly_task_recomputes_even_without_new_votes_and_records_what_it_saw(rated):
    ratings_recompute_task()
    assert Snapshot.objects.count() == 4
    assert RefreshMark.objects.get().seen["vote"]["recent"] == 60
    ratings_refresh_task(0)
    assert Snapshot.objects.count() == 4


@pytest.mark.skipif(SERVICE_MODE, reason="the embedded default's scheduler (Beat in service mode)")
def test_the_embedded_scheduler_runs_the_refresh_on_its_interval(transactional_db, rated, settings):
    settings.CELERY_BEAT_SCHEDULE = {
        "ratings-refresh": {
            "task": "leaderboard.tasks.ratings_refresh_task",
            "schedule": 0.5,
            "args": (0.5,),
        }
    }
    stop = threading.Event()
    thread = scheduler.start(stop=stop)
    try:
        wait_for(overall, timeout=30, message="the scheduler did not refresh the board")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert overall().vote_count == 60


@pytest.mark.worker
def test_the_celery_worker_runs_the_refresh_task(transactional_db, celery_worker, rated):
    ratings_refresh_task.delay(30)
    wait_for(overall, timeout=60, message="the worker did not refresh the board")
    assert overall().vote_count == 60


def test_the_command_with_if_new_votes_recomputes_only_after_a_vote(rated, make_vote):
    out = io.StringIO()
    call_command("recompute_ratings", "--if-new-votes", stdout=out)
    assert "overall: 3 models from 60 votes" in out.getvalue()
    out = io.StringIO()
    call_command("recompute_ratings", "--if-new-votes", stdout=out)
    assert out.getvalue().startswith("No new votes since the last refresh")
    make_vote(rated[0], rated[1], "a")
    call_command("recompute_ratings", "--if-new-votes", stdout=io.StringIO())
    assert overall().vote_count == 61


def test_the_full_command_records_what_it_counted_for_the_next_tick(rated):
    call_command("recompute_ratings", stdout=io.StringIO())
    assert refresh.ratings_refresh(interval=0).reason == "no new votes"


def test_if_new_votes_refreshes_every_category_so_it_takes_no_category(db):
    with pytest.raises(CommandError, match="drop --category"):
        call_command("recompute_ratings", "--if-new-votes", "--category", "code")
