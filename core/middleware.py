import logging

from django.conf import settings
from django.http import HttpResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import format_html

from core.errors import UNAVAILABLE_ERRORS, ServiceUnavailableError
from core.visitors import COOKIE, COOKIE_MAX_AGE, COOKIE_SALT, visitor_from_request

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class visitor_middleware(MiddlewareMixin):  # noqa: N801 - named like a function middleware
    """Attach `request.visitor` and keep the anonymous cookie set."""

    def process_request(self, request):
        request.visitor = visitor_from_request(request)

    def process_response(self, request, response):
        visitor = getattr(request, "visitor", None)
        if visitor is not None and visitor.new_cookie:
            response.set_signed_cookie(
                COOKIE,
                visitor.anonymous_id,
                salt=COOKIE_SALT,
                max_age=COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=settings.SESSION_COOKIE_SECURE,
            )
        return response


class security_headers_middleware(MiddlewareMixin):  # noqa: N801
    """A strict Content-Security-Policy: no inline script or style anywhere."""

    def process_response(self, request, response):
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


log = logging.getLogger(__name__)

# Standalone on purpose: the site layout queries the database (the sidebar), which may be the
# very service that is down.
UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Temporarily unavailable</h1><p role="alert">{}</p>
<p><a href="{}">Try again</a></p></main></body></html>
"""


class service_unavailable_middleware(MiddlewareMixin):  # noqa: N801
    """Answer 503 with a plain message when the database, Redis or the broker is unreachable.

    Without it Django answers a server error (a traceback page when DEBUG is on). The 503 tells
    the visitor, their browser and any load balancer that trying again later is the fix.
    """

    def process_exception(self, request, exception):
        if not isinstance(exception, UNAVAILABLE_ERRORS):
            return None
        log.warning(
            "%s %s: a backing service is unavailable: %s: %s",
            request.method,
            request.path,
            type(exception).__name__,
            exception,
        )
        message = (
            exception.message
            if isinstance(exception, ServiceUnavailableError)
            else ServiceUnavailableError().message
        )
        back = request.path if request.method == "GET" else "/"
        response = HttpResponse(format_html(UNAVAILABLE_PAGE, message, back), status=503)
        response["Retry-After"] = "60"
        return response


class sync_boundary_middleware:  # noqa: N801
    """Innermost on purpose: the middleware around it runs in one thread per request.

    Under ASGI Django runs each hook of a sync middleware (`MiddlewareMixin`: security,
    sessions, CSRF, auth, messages and ours) through `sync_to_async`, a round trip between the
    event loop and a thread per hook, about 14 per request, each waiting for a busy loop. A
    sync-only middleware innermost makes Django run everything outside it synchronously, in
    the request's thread: one switch in (below the async static-file middleware) and one
    back for the view. Async views (the SSE stream) still run on the event loop.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)
