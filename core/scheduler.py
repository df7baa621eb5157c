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


def start() -> threading.Thread:
    entries = [
        (name, entry["task"], float(entry["schedule"]))
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    ]

    def loop() -> None:
        due = {name: time.monotonic() + interval for name, _, interval in entries}
        while True:
            now = time.monotonic()
            for name, task_name, interval in entries:
                if now >= due[name]:
                    due[name] = now + interval
                    try:
                        enqueue_now(task_name)
                    except Exception:
                        log.exception("scheduled task %s could not start", name)
            time.sleep(1.0)

    thread = threading.Thread(target=loop, daemon=True, name="arena-beat")
    thread.start()
    return thread
