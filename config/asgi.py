import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from leaderboard.categories import language_model_warm_up  # noqa: E402 (after setup)

language_model_warm_up()
