"""Loading, in the background, what a process will need before its first request needs it."""

import importlib
import threading
from collections.abc import Callable


def _in_background(*steps: Callable[[], object]) -> None:
    def run() -> None:
        for step in steps:
            step()

    threading.Thread(target=run, daemon=True, name="warm-up").start()


def _sdk() -> None:
    importlib.import_module("openai")  # half a second; llm_providers.client defers it


def _language_model() -> None:
    from leaderboard.categories import prompt_language  # about a second of CPU to load

    prompt_language("Warming up the language identifier with a sentence.")


def web_server() -> None:
    """Votes need the language model; in embedded mode replies are generated here too."""
    _in_background(_language_model, _sdk)


def worker() -> None:
    """A Celery worker generates replies."""
    _in_background(_sdk)
