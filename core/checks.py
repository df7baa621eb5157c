"""System checks of the plumbing."""

from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.checks import Error


def static_manifest(app_configs=None, **kwargs) -> list[Error]:
    """With DEBUG off every page names its static files through collectstatic's manifest:
    without it each page fails with a 500, so a server must not start."""
    if not isinstance(staticfiles_storage, ManifestFilesMixin):
        return []
    storage = staticfiles_storage.manifest_storage
    if storage.exists(staticfiles_storage.manifest_name):
        return []
    return [
        Error(
            "Static files have not been collected (no "
            f"{storage.path(staticfiles_storage.manifest_name)}): run "
            "`python manage.py collectstatic --noinput` before starting the site with DEBUG "
            "off (`make web` does it).",
            id="core.E001",
        )
    ]
