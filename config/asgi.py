import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from leaderboard.categories import language_model_warm_up  # noqa: E402 (after setup)
from llm_providers.client import sdk_warm_up  # noqa: E402

language_model_warm_up()
sdk_warm_up()  # embedded mode generates replies in this process
