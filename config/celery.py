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
def _sdk_warm_up(**_kwargs) -> None:
    """A worker calls models: load the SDK now, not in the first reply it generates."""
    from llm_providers.client import sdk_warm_up

    sdk_warm_up()
