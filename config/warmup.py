"""Loading what a process will need before its first request needs it."""

import threading


def _sdk() -> None:
    # Half a second; llm_providers.client defers it. Starts the stream loop too.
    from llm_providers.client import warm_up

    warm_up()


def _language_model() -> None:
    from leaderboard.categories import prompt_language  # about a second of CPU to load

    prompt_language("Warming up the language identifier with a sentence.")


def web_server() -> None:
    """Votes need the language model (loaded in the background). In embedded mode replies
    are generated in this process too: the SDK is loaded before the first request, as a
    worker does (see worker)."""
    from django.conf import settings

    threading.Thread(target=_language_model, daemon=True, name="warm-up").start()
    if settings.ARENA_TASK_MODE == "inprocess":
        _sdk()


def worker() -> None:
    """A Celery worker generates replies: load the SDK now, before it takes a task."""
    _sdk()
