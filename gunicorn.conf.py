"""Read by gunicorn from the directory it starts in: `make web` and the Docker image's command.

Before any worker starts, the master refuses a site that would answer every page with a 500
(see core/checks.py), with one sentence instead of a traceback per request.

The worker class defaults to the arena's (core/serving.py: uvicorn without its own proxy-header
handling), and gunicorn believes no proxy itself: ARENA_TRUSTED_PROXIES is the one rule for the
client address (core.visitors.client_ip), even under `-k uvicorn_worker.UvicornWorker`.
"""

import os

worker_class = "core.serving.UvicornWorker"
# gunicorn's own list of proxies it believes (X-Forwarded-Proto for its sync workers, and what
# the stock uvicorn worker hands to uvicorn): none; Django decides (TRUST_X_FORWARDED_PROTO).
forwarded_allow_ips = ""


def on_starting(server) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise RuntimeError(str(exc)) from None  # gunicorn prints it as "Error: …" and exits
    from core.checks import static_manifest

    errors = static_manifest()
    if errors:
        raise RuntimeError(errors[0].msg)


def child_exit(server, worker) -> None:
    """A dead worker's live gauges (its open SSE streams) stop counting in /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
