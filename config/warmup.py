"""Loading what a process will need before its first request needs it."""

import threading

from llm_providers.client import warm_up  # cheap: the client defers the SDK's import


def _language_model() -> None:
    from battles.features import prompt_language  # about a second of CPU to load

    prompt_language("Warming up the language identifier with a sentence.")


def web_server() -> None:
    """Votes need the language model (loaded in the background). In embedded mode replies
    are generated in this process too: the SDK is loaded and the stream loop started before
    the first request, as a worker does (see worker)."""
    from django.conf import settings

    threading.Thread(target=_language_model, daemon=True, name="warm-up").start()
    if settings.ARENA_TASK_MODE == "inprocess":
        warm_up()


def worker() -> None:
    """A Celery worker generates replies: load the SDK and start the stream loop now,
    before it takes a task."""
    warm_up()
