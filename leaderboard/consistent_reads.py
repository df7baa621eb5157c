"""Reads that all see the votes as they were at one moment, side by side where they can.

The ratings recompute makes several independent passes over millions of votes. On PostgreSQL
they run at once, each on its own connection in a thread, and every one of them imports the
snapshot the recompute's own transaction exported (`pg_export_snapshot` / `SET TRANSACTION
SNAPSHOT`), so they agree with each other and with the recompute's later reads. This module
is the one place that knows about those threads, connections and snapshots.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from core.db import released_connection
from leaderboard.timing import stage

_SNAPSHOT_ID_RE = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")

Jobs = dict[str, Callable[[], object]]


class ConcurrentReadsError(RuntimeError):
    """A read on its own connection could not share the recompute's snapshot."""


class ConsistentReads:
    """A transaction for the recompute's reads, and the door to running them at once.

    Entering opens the transaction; on PostgreSQL with more sort/hash memory
    (ARENA_RECOMPUTE_WORK_MEM) and without JIT compilation, which costs more than it saves on
    these one-off queries.

    `concurrent` says whether `run` reads on other connections at once: on PostgreSQL with
    ARENA_RECOMPUTE_CONCURRENT_READS, and only when this transaction is the outermost one
    (other connections cannot see what an enclosing transaction wrote). The transaction is
    then REPEATABLE READ, so every read, on any connection, sees the votes as they were when
    it began. Otherwise (SQLite, inside the tests' transaction, or the setting off) `run`
    reads one job after the other on this connection.

        with ConsistentReads() as reads:
            results = reads.run({"counts": read_counts, "plan": read_plan})
    """

    def __init__(self) -> None:
        self.concurrent = False
        self._exit = ExitStack()

    def __enter__(self) -> ConsistentReads:
        self.concurrent = (
            connection.vendor == "postgresql"
            and settings.ARENA_RECOMPUTE_CONCURRENT_READS
            and not connection.in_atomic_block
        )
        with ExitStack() as opened:
            opened.enter_context(transaction.atomic())
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    if self.concurrent:
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    _read_settings(cursor, parallel=True)
            self._exit = opened.pop_all()
        return self

    def __exit__(self, *exc_info) -> bool | None:
        return self._exit.__exit__(*exc_info)

    def run(self, jobs: Jobs) -> dict[str, object]:
        """Each job's result by name; at once on their own connections when `concurrent`.

        Jobs are started in the order given (put the longest first). Each concurrent read runs
        without parallel workers: passes side by side keep the cores busier than one pass
        split between workers."""
        if not self.concurrent or len(jobs) < 2:
            return in_turn(jobs)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        if not _SNAPSHOT_ID_RE.match(snapshot):  # it goes into SQL as a literal below
            raise ValueError(f"unexpected snapshot id {snapshot!r}")

        def run(name: str, job: Callable[[], object]) -> object:
            # A pool thread's connection goes back the moment its read ends.
            with released_connection(), transaction.atomic(), connection.cursor() as cursor:
                snapshot_import(cursor, snapshot)
                _read_settings(cursor, parallel=False)
                with stage(f"read {name}"):
                    return job()

        # One more read at a time than there are cores: the extra one keeps a core busy while
        # another thread turns rows into Python objects; more only contend
        # (benchmarks/README.md).
        workers = min(len(jobs), (os.cpu_count() or 1) + 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recompute-read") as pool:
            futures = {name: pool.submit(run, name, job) for name, job in jobs.items()}
            return {name: future.result() for name, future in futures.items()}


def in_turn(jobs: Jobs) -> dict[str, object]:
    """Each job's result by name, one after the other on this connection."""
    return {name: job() for name, job in jobs.items()}


def snapshot_import(cursor, snapshot: str) -> None:
    """Make this cursor's transaction see what the one that exported `snapshot` sees."""
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    except DatabaseError as exc:
        raise ConcurrentReadsError(
            f"The ratings recompute could not share its database snapshot with the extra "
            f"connections of its concurrent reads ({exc}). Behind a transaction-mode pooler "
            "such as PgBouncer this cannot work: set ARENA_RECOMPUTE_CONCURRENT_READS=false."
        ) from exc


def _read_settings(cursor, *, parallel: bool) -> None:
    """This transaction's PostgreSQL settings for the recompute's reads."""
    cursor.execute(
        "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)"
        + ("" if parallel else ", set_config('max_parallel_workers_per_gather', '0', true)"),
        [settings.ARENA_RECOMPUTE_WORK_MEM],
    )
