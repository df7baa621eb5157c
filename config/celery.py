"""The Celery app. Tasks take ids, stay thin and call services; the beat schedule lives in
settings (CELERY_BEAT_SCHEDULE)."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("llmbattler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _warm_up(**_kwargs) -> None:
    """Load what replies need now, not in the first reply the worker generates."""
    from config import warmup

    warmup.worker()
