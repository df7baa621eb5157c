"""A ratings recompute killed half-way leaves the leaderboard as it was, and the next run works.

`recompute_ratings` runs as a real process on the test database and is SIGKILLed, so nothing
in it gets a chance to clean up: only the transaction and the lock's lease protect the data.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from leaderboard import selectors
from leaderboard.models import RecomputeLock, Snapshot
from leaderboard.recompute import LOCK_NAME, RecomputeBusyError, ratings_recompute

LEASE = 10  # seconds; the smallest lease the settings accept
# Bootstrap rounds make each run take a moment, so a kill can land in the middle of it.
SLOW_RUN = ["--bootstrap", "400"]


def command_env() -> dict[str, str]:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": url,
        "ARENA_RECOMPUTE_LEASE_SECONDS": str(LEASE),
    }


def recompute(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "recompute_ratings", *args],
        cwd=settings.BASE_DIR,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=180)
    return process.returncode, output


def lock_held() -> bool:
    lock = RecomputeLock.objects.filter(name=LOCK_NAME).first()
    return lock is not None and lock.holder != ""


def assert_leaderboard_complete(expected: dict[str, int]) -> None:
    """Every category's current snapshot is the one expected, with a row per rated model."""
    for category, pk in expected.items():
        current = selectors.snapshot_current(category=category)
        assert current.pk == pk, f"{category}: the current snapshot changed"
        assert current.rows.count() == len(current.models_order)
    assert selectors.snapshot_current(category="overall").rows.count() == 3


@pytest.mark.slow
def test_a_recompute_killed_while_holding_the_lock_changes_nothing_and_the_next_run_succeeds(
    transactional_db, rated, make_vote
):
    code, output = finish(recompute())
    assert code == 0, output
    before = {s.category: s.pk for s in Snapshot.objects.all()}
    assert_leaderboard_complete(before)
    alpha, bravo, _ = rated
    make_vote(bravo, alpha, "a")  # new data, so a finished run would write new snapshots

    running = recompute(*SLOW_RUN)
    deadline = time.monotonic() + 90
    while not lock_held():
        assert running.poll() is None, finish(running)[1]
        assert time.monotonic() < deadline, "the recompute never took the lock"
        time.sleep(0.01)
    running.send_signal(signal.SIGKILL)
    finish(running)  # reaps it and closes its output pipe
    killed_at = time.monotonic()

    assert_leaderboard_complete(before)
    # The dead run's lease still holds. Asked in this process: a new process's start-up can
    # take longer than the lease on a busy machine (the command's refusal: test_recompute.py).
    with pytest.raises(RecomputeBusyError):
        ratings_recompute(category="overall")
    assert_leaderboard_complete(before)

    time.sleep(max(0.0, killed_at + LEASE + 0.5 - time.monotonic()))
    code, output = finish(recompute())
    assert code == 0, output
    current = selectors.snapshot_current(category="overall")
    assert current.pk != before["overall"] and current.rows.count() == 3
    assert current.vote_count == Snapshot.objects.get(pk=before["overall"]).vote_count + 1


@pytest.mark.slow
def test_recomputes_killed_at_random_moments_never_leave_a_partial_snapshot(
    transactional_db, rated, make_vote
):
    alpha, bravo, charlie = rated
    rng = random.Random(os.getpid())
    for attempt in range(3):
        make_vote((alpha, bravo, charlie)[attempt % 3], (bravo, charlie, alpha)[attempt % 3])
        running = recompute(*SLOW_RUN)
        time.sleep(rng.uniform(1.0, 6.0))  # start-up, the claim, the fit or the write
        running.send_signal(signal.SIGKILL)
        finish(running)  # reaps it and closes its output pipe
        for snapshot in Snapshot.objects.all():
            assert snapshot.rows.count() == len(snapshot.models_order)
        # Time passing past the lease, without waiting for it: the lease is tested above.
        RecomputeLock.objects.filter(name=LOCK_NAME).update(holder="", held_until=None)
    code, output = finish(recompute())
    assert code == 0, output
    current = selectors.snapshot_current(category="overall")
    assert current.rows.count() == 3
    # Rated again in this process, the same votes give that very snapshot: it is complete.
    assert ratings_recompute(category="overall").pk == current.pk
