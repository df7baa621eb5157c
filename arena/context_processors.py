from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from battles.selectors import sidebar_groups


def arena(request: HttpRequest) -> dict:
    visitor = getattr(request, "visitor", None)
    if visitor is None or request.path.startswith("/admin/"):
        return {}

    def groups():
        return sidebar_groups(visitor=visitor)

    # Lazy: only pages that render the sidebar pay for its query.
    data = SimpleLazyObject(groups)
    return {
        "sidebar": data,
        "max_prompt_chars": settings.ARENA_PROMPT_MAX_CHARS,
    }
