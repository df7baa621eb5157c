"""Who is asking: a logged-in user, or an anonymous visitor known by a signed cookie."""

import functools
import hashlib
import hmac
import ipaddress
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


@functools.lru_cache(maxsize=8)
def ip_networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Setting entries as networks: each an address (10.0.0.2) or a network
    (172.16.0.0/12). Settings refuse a malformed entry at start-up."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def address_in(address: str, networks) -> bool:
    """Whether the address (a string, maybe not an address at all) is in one of the networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: HttpRequest) -> str:
    """The client's address, by the arena's one rule: the peer, unless the peer is one of
    ARENA_TRUSTED_PROXIES; then the rightmost X-Forwarded-For entry that is not one of them.

    The web servers pass the peer through untouched (core.serving), so this is the only place
    a forwarded address is believed: rate limits, vote caps and login throttling all use it.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    networks = ip_networks(tuple(settings.ARENA_TRUSTED_PROXIES))
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if forwarded and networks and address_in(remote, networks):
        # Walk from the right: the first address that is not one of our proxies is the client.
        for candidate in reversed([p.strip() for p in forwarded.split(",") if p.strip()]):
            if not address_in(candidate, networks):
                return candidate
    return remote
