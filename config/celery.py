"""The Celery app. Tasks take ids, stay thin and call services; the beat schedule lives in
settings (CELERY_BEAT_SCHEDULE)."""

import os

from celery import Celery
from celery.signals import worker_init, worker_shutdown, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("llmbattler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _warm_up(**_kwargs) -> None:
    """Load what replies need before the worker takes its first task, not inside it (a
    reply claimed while the SDK is still loading could be stopped before its first token)."""
    from config import warmup

    warmup.worker()


@worker_shutting_down.connect
def _stop_taking_replies(**_kwargs) -> None:
    """A warm shutdown begins: generation tasks still waiting for a free slot hand their
    reply back to the queue, so the pool can stop without waiting for slots."""
    from battles.generation import replies_stop_taking

    replies_stop_taking()


@worker_shutdown.connect
def _drain_replies(**_kwargs) -> None:
    """The task pool has stopped; the replies it handed to the loop still stream. Let them
    finish for ARENA_SHUTDOWN_GRACE_SECONDS, then end the rest as failed, plainly, instead of
    leaving them to the reaper."""
    from battles.generation import replies_drain

    replies_drain()
