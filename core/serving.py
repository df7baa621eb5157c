"""How the arena's web servers treat proxy headers: they leave them alone.

uvicorn (and gunicorn's uvicorn worker) rewrite the client address and scheme from
`X-Forwarded-For` / `X-Forwarded-Proto` whenever the peer is in their own `forwarded_allow_ips`
list, 127.0.0.1 by default, before Django sees the request. Anything on the same host (a
sidecar, another container sharing the network namespace, a local user) could then invent
its address and walk past the per-IP limits. The one rule for the client address is
`core.visitors.client_ip` (ARENA_TRUSTED_PROXIES); the scheme is Django's
(`TRUST_X_FORWARDED_PROTO`). Every place that starts a server uses these options:
`runarena`, gunicorn's worker class (`make web`, the image), and the test servers.
"""

from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker

# uvicorn.Config / uvicorn.run keyword arguments (the CLI's `--no-proxy-headers`).
UVICORN_OPTIONS: dict[str, Any] = {"proxy_headers": False}


class UvicornWorker(_UvicornWorker):
    """gunicorn's uvicorn worker with the server's own proxy handling off (see above)."""

    CONFIG_KWARGS = {**_UvicornWorker.CONFIG_KWARGS, **UVICORN_OPTIONS}
