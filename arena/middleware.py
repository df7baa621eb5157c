from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

from arena.visitors import COOKIE, COOKIE_MAX_AGE, COOKIE_SALT, visitor_from_request

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
