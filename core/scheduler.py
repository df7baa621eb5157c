"""Celery Beat's job in the embedded default: run the beat schedule from a daemon thread.

The schedule is the same CELERY_BEAT_SCHEDULE that Beat runs in service mode; each due task
goes through core.dispatch, i.e. the in-process thread pool.
"""

import logging
import threading
import time

from django.conf import settings

from core.dispatch import enqueue_now

log = logging.getLogger(__name__)
_TICK = 0.25  # seconds between looks at the schedule: well under its shortest interval


def start(*, stop: threading.Event | None = None) -> threading.Thread:
    """Run the schedule in a daemon thread until `stop` is set (for good when None)."""
    stop = stop or threading.Event()
    entries = [
        (name, entry["task"], float(entry["schedule"]), tuple(entry.get("args", ())))
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    ]

    def loop() -> None:
        due = {name: time.monotonic() + interval for name, _, interval, _ in entries}
        while not stop.is_set():
            now = time.monotonic()
            for name, task_name, interval, args in entries:
                if now >= due[name]:
                    due[name] = now + interval
                    try:
                        enqueue_now(task_name, *args)
                    except Exception:
                        log.exception("scheduled task %s could not start", name)
            stop.wait(_TICK)

    thread = threading.Thread(target=loop, daemon=True, name="arena-beat")
    thread.start()
    return thread
