"""The Celery app. Tasks take ids, stay thin and call services; the beat schedule lives in
settings (CELERY_BEAT_SCHEDULE)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("llmbattler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
