"""No password guessing on the login pages (/accounts/login/ and /admin/login/).

django-axes records every failed login (`AccessAttempt` rows, readable and deletable by
staff in admin) and refuses further attempts for a cool-down. This module holds the arena's
rules on top of it:

- two limits: ARENA_LOGIN_FAILURES per user name from one address, and the longer
  ARENA_LOGIN_FAILURES_PER_ADDRESS from one address whatever the user name, so guessing from
  one place cannot lock the account out for its owner anywhere else, and one place cannot
  spray guesses over many accounts;
- the address is the arena's one rule, `core.visitors.client_ip` (AXES_CLIENT_IP_CALLABLE);
- a successful login forgets only its own user name's failures from that address (axes would
  forget every failure from the address, so an account of one's own would reset the count);
- a refused attempt answers 429 with a plain message and `Retry-After`.
"""

import math

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


class LoginAttempts(AxesDatabaseHandler):
    """axes' database handler with a limit per user name and address and one per address.

    settings.AXES_LOCKOUT_PARAMETERS is `[["username", "ip_address"], "ip_address"]`, so axes
    hands over the attempts of that pair, then those of that address."""

    def get_failures(self, request, credentials=None) -> int:
        """The failures that count, in units of AXES_FAILURE_LIMIT (the per-pair limit).

        axes compares one number with one limit; the address's count is scaled so that
        reaching ARENA_LOGIN_FAILURES_PER_ADDRESS reads as reaching the pair's limit."""
        pair, address = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        per_pair = settings.ARENA_LOGIN_FAILURES
        return max(pair, address * per_pair // settings.ARENA_LOGIN_FAILURES_PER_ADDRESS)

    def reset_user_attempts(self, request, credentials=None) -> int:
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(
            username=username, ip_address=request.axes_ip_address
        ).delete()
        return count


def _seconds_left(request: HttpRequest, credentials) -> int:
    """Until the failures that locked this attempt out leave the cool-down window."""
    cool_off = get_cool_off(request)
    from_address = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
    limits = [
        (
            from_address.filter(username=get_client_username(request, credentials)),
            settings.ARENA_LOGIN_FAILURES,
        ),
        (from_address, settings.ARENA_LOGIN_FAILURES_PER_ADDRESS),
    ]
    now = timezone.now()
    waits = [1]
    for attempts, limit in limits:
        found = attempts.aggregate(total=Sum("failures_since_start"), last=Max("attempt_time"))
        if (found["total"] or 0) >= limit:
            waits.append(math.ceil((found["last"] + cool_off - now).total_seconds()))
    return max(waits)


def lockout_response(request: HttpRequest, original_response, credentials) -> HttpResponse:
    """429 with Retry-After and a plain page (axes' AXES_LOCKOUT_CALLABLE)."""
    retry_after = _seconds_left(request, credentials)
    context = {"retry_after": retry_after, "retry_minutes": math.ceil(retry_after / 60)}
    response = render(request, "arena/login_locked.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response
