import threading

from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "leaderboard"

    def ready(self) -> None:
        # The language model loads in about a second; load it in the background at start-up
        # so the first vote does not wait for it.
        from leaderboard.categories import prompt_language

        threading.Thread(
            target=prompt_language,
            args=("Warming up the language identifier with a sentence.",),
            daemon=True,
            name="langid-warmup",
        ).start()
