"""The Celery app. Tasks take ids, stay thin and call services; the beat schedule lives in
settings (CELERY_BEAT_SCHEDULE)."""

import os

from celery import Celery
from celery.signals import worker_init

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
