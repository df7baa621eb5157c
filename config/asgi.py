import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from core.asgi import get_application

application = get_application()

from config import warmup  # noqa: E402 (after setup)

warmup.web_server()
