"""Run a task after the current transaction commits, in whichever mode the arena runs.

Service mode hands it to Celery over Redis. The embedded default runs the very same task
function in a thread pool inside the web process, so the request that enqueued it returns at
once and nothing needs a broker.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections, transaction

log = logging.getLogger(__name__)
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.ARENA_INPROCESS_WORKERS, thread_name_prefix="arena-task"
            )
        return _executor


def run_inprocess(task, *args) -> None:
    close_old_connections()
    try:
        task(*args)
    except Exception:
        log.exception("in-process task %s%r failed", getattr(task, "name", task), args)
    finally:
        connections.close_all()


def enqueue_now(task, *args) -> None:
    if settings.ARENA_TASK_MODE == "celery":
        task.apply_async(args=args)
    else:
        executor().submit(run_inprocess, task, *args)


def enqueue(task, *args) -> None:
    """Enqueue on commit, so a worker never looks for rows that are not yet visible."""
    transaction.on_commit(lambda: enqueue_now(task, *args))
