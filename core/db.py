"""Database work outside a request: the connection is given back the moment the work ends.

Django ties a connection to a thread and keeps it until the request that opened it ends, but
background threads (task threads, the generation loop's database threads, an SSE stream's
lookups) have no request: a connection they opened would stay checked out of the pool while
they wait seconds or minutes for their next piece of work. Every such piece of work runs in
`released_connection()`; async code hands its database work to a `DatabaseThreads`.
"""

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from django.db import close_old_connections, connection, connections

P = ParamSpec("P")
T = TypeVar("T")


@contextlib.contextmanager
def released_connection() -> Iterator[None]:
    """Work on the database, then give the connection back (to the pool, if there is one).

    A connection left over from earlier work in this thread is dropped first if it is broken
    or too old, as Django does at the start of a request.
    """
    close_old_connections()
    try:
        yield
    finally:
        connections.close_all()


class DatabaseThreads:
    """A few threads that run an event loop's database work, each call in
    `released_connection()`: the loop never blocks on the database, and the threads hold no
    connection between calls."""

    def __init__(self, threads: int, name: str):
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(_released, work, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _released(work: Callable[..., T], *args, **kwargs) -> T:
    with released_connection():
        return work(*args, **kwargs)


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


def transaction_lock(*names: str) -> None:
    """Hold named locks until the current transaction ends: another transaction that locks
    any of the same names waits for this one to commit or roll back.

    For a rule over many rows no single row can guard (a count of recent votes, say).
    PostgreSQL: transaction-level advisory locks, taken in one order so that two transactions
    locking the same names cannot deadlock. SQLite: nothing to take, since the arena's
    transactions are IMMEDIATE and hold the database's write lock from their start.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("transaction_lock() only works inside transaction.atomic().")
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for key in sorted({_lock_key(name) for name in names}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
