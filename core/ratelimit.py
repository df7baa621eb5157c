"""Per-visitor and per-IP rate limits on the views that cost model calls or move the ratings.

Counting is django-ratelimit's (`get_usage`, fixed windows in the default cache: Redis in
service mode, the process's memory in the embedded default). Each limited request is counted
twice, once under the visitor's key and once under the client IP, so two visitors behind one
address share the IP budget and a visitor who changes address keeps their own budget.

When the cache cannot be reached a vote still goes through, uncounted here: it needs only the
database, and its daily caps per visitor and per address are counted there
(battles.services). Starts and follow-ups need the broker as well, so for them the outage
stands and the visitor gets the 503 page.
"""

import functools
import logging
import math

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

from core.errors import CACHE_ERRORS
from core.visitors import client_ip

log = logging.getLogger(__name__)

# group name -> the setting that holds its rate ("10/m") or None for no limit.
RATE_SETTINGS = {
    "start": "ARENA_RATE_START",
    "follow_up": "ARENA_RATE_FOLLOW_UP",
    "vote": "ARENA_RATE_VOTE",
}
# Groups that go on, uncounted, while the cache is unreachable (see the module's docstring).
WITHOUT_CACHE = {"vote"}


def _visitor_key(group: str, request: HttpRequest) -> str:
    return f"visitor:{request.visitor.key}"


def _ip_key(group: str, request: HttpRequest) -> str:
    return f"ip:{client_ip(request)}"


def rate_exceeded(request: HttpRequest, *, group: str) -> int | None:
    """Count this request; the seconds to wait if the visitor or the IP is over the limit."""
    rate = getattr(settings, RATE_SETTINGS[group])
    if rate is None:
        return None
    waits = []
    for key in (_visitor_key, _ip_key):
        try:
            usage = get_usage(request, group=f"arena.{group}", key=key, rate=rate, increment=True)
        except CACHE_ERRORS as exc:
            if group not in WITHOUT_CACHE:
                raise
            log.warning("%s rate limit not counted, the cache is unreachable: %s", group, exc)
            return None
        if usage is not None and usage["should_limit"]:
            # time_left is -1 when the cache could not count: ask for a short pause then.
            waits.append(max(1, usage["time_left"]))
    return max(waits) if waits else None


def rate_limited_response(request: HttpRequest, *, retry_after: int) -> HttpResponse:
    """429 with Retry-After: the full page, or for HTMX a small notice placed before the target."""
    context = {"retry_after": retry_after, "retry_minutes": math.ceil(retry_after / 60)}
    if request.htmx:
        response = render(request, "arena/rate_limited.html#rate-limited", context, status=429)
        # Put the notice beside what the visitor acted on instead of replacing it.
        response["HX-Reswap"] = "beforebegin"
    else:
        response = render(request, "arena/rate_limited.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def rate_limit(group: str):
    """View decorator: refuse with 429 before the view runs (so nothing is written)."""
    if group not in RATE_SETTINGS:
        raise ValueError(f"Unknown rate limit group {group!r}.")

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            wait = rate_exceeded(request, group=group)
            if wait is not None:
                return rate_limited_response(request, retry_after=wait)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
