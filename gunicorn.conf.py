"""Read by gunicorn from the directory it starts in: `make web` and the Docker image's command.

Before any worker starts, the master refuses a site that would answer every page with a 500
(see core/checks.py), with one sentence instead of a traceback per request.
"""

import os


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
