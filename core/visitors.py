"""Who is asking: a logged-in user, or an anonymous visitor known by a signed cookie."""

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

COOKIE = "arena_visitor"
COOKIE_SALT = "arena.visitor"
COOKIE_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True)
class Visitor:
    key: str  # "u:<user pk>" or "v:<uuid>": the owner of conversations and battles
    anonymous_id: str
    new_cookie: bool

    @property
    def hashed(self) -> str:
        return salted_hash(self.key)


def salted_hash(value: str) -> str:
    return hmac.new(settings.ARENA_HASH_SALT.encode(), value.encode(), hashlib.sha256).hexdigest()[
        :32
    ]


def visitor_from_request(request: HttpRequest) -> Visitor:
    # A tampered or expired cookie is not an error: the visitor just gets a fresh identity.
    raw = request.get_signed_cookie(COOKIE, default=None, salt=COOKIE_SALT, max_age=COOKIE_MAX_AGE)
    new_cookie = False
    try:
        anonymous_id = str(uuid.UUID(raw)) if raw else None
    except ValueError:
        anonymous_id = None
    if anonymous_id is None:
        anonymous_id = str(uuid.uuid4())
        new_cookie = True
    user = getattr(request, "user", None)
    authenticated = user is not None and user.is_authenticated
    key = f"u:{user.pk}" if authenticated else f"v:{anonymous_id}"
    return Visitor(key=key, anonymous_id=anonymous_id, new_cookie=new_cookie)


def client_ip(request: HttpRequest) -> str:
    """The peer address; X-Forwarded-For is honoured only when the peer is a trusted proxy."""
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = settings.ARENA_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if forwarded and remote in trusted:
        # Walk from the right: the first address that is not one of our proxies is the client.
        for candidate in reversed([p.strip() for p in forwarded.split(",") if p.strip()]):
            if candidate not in trusted:
                return candidate
    return remote
