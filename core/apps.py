from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The plumbing every app stands on; it imports none of them."""

    name = "core"
