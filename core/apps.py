from django.apps import AppConfig
from django.core import checks


class CoreConfig(AppConfig):
    """The plumbing every app stands on; it imports none of them."""

    name = "core"

    def ready(self) -> None:
        from core.checks import static_manifest

        # A deploy check: `manage.py check --deploy` and the web server's start run it
        # (gunicorn.conf.py), while migrate and collectstatic itself must not be stopped by it.
        checks.register(static_manifest, deploy=True)
