"""Run a task after the current transaction commits, in whichever mode the arena runs.

Service mode hands it to Celery over Redis. The embedded default runs the very same task
function in a thread pool inside the web process, so the request that enqueued it returns at
once and nothing needs a broker. (A generation task only claims its reply: the reply then
streams in the process's event loop, the same way in both modes.)

Tasks are named, as Celery names them ("battles.tasks.reply_generate_task"), never imported:
the module that enqueues work (a service) sits below the thin task module that calls it back,
and a name keeps that arrow pointing one way.

Every task enqueued here must be recoverable from the rows it works on (a reply stays
`pending` until a worker claims it, and the reaper enqueues old pending replies again), because
a broker can disappear between a commit and the publish.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from core.db import released_connection
from core.errors import BROKER_ERRORS, ServiceUnavailableError

log = logging.getLogger(__name__)
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_broker = None


def executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.ARENA_INPROCESS_WORKERS, thread_name_prefix="arena-task"
            )
        return _executor


def run_inprocess(task_name: str, *args) -> None:
    try:
        with released_connection():
            import_string(task_name)(*args)
    except Exception:
        log.exception("in-process task %s%r failed", task_name, args)


def _broker_client():
    global _broker
    with _lock:
        if _broker is None:
            import redis

            # Short timeouts: a visitor waits on this check, and a dead broker must be a quick
            # "try again later", not a hung request.
            _broker = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2
            )
        return _broker


def broker_check() -> None:
    """Raise ServiceUnavailableError unless the Celery broker (Redis) answers a PING."""
    try:
        _broker_client().ping()
    except BROKER_ERRORS as exc:
        log.warning("the broker is unreachable: %s", exc)
        raise ServiceUnavailableError from exc


def enqueue_now(task_name: str, *args) -> None:
    """Hand the task over now; ServiceUnavailableError if the broker cannot take it."""
    if settings.ARENA_TASK_MODE == "celery":
        try:
            # send_task routes by name (CELERY_TASK_ROUTES) like apply_async does.
            current_app.send_task(task_name, args=args)
        except BROKER_ERRORS as exc:
            raise ServiceUnavailableError from exc
    else:
        executor().submit(run_inprocess, task_name, *args)


def _enqueue_committed(task_name: str, args: tuple) -> None:
    try:
        enqueue_now(task_name, *args)
    except ServiceUnavailableError:
        # The rows are committed and say what is left to do; the reaper enqueues it again.
        log.warning(
            "task %s%r not enqueued: the broker went away after the commit; the reaper will "
            "enqueue it again",
            task_name,
            args,
        )


def enqueue_many(task_name: str, calls: list[tuple]) -> None:
    """Enqueue one task per argument tuple on commit, so a worker never looks for rows that
    are not yet visible.

    In service mode the broker is checked once first, inside the caller's transaction: if it
    is down, ServiceUnavailableError rolls the caller's writes back (nothing is left
    half-done) and the visitor gets a 503 asking them to try again.
    """
    if not calls:
        return
    if settings.ARENA_TASK_MODE == "celery":
        broker_check()
    for args in calls:
        transaction.on_commit(lambda args=args: _enqueue_committed(task_name, args))
