"""The `openai` SDK, imported on first use, and the SDK clients the calls share.

The SDK's own retries are off everywhere: retrying is decided by the calls, only for
transient failures and only before the first token.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import weakref
from typing import TYPE_CHECKING, Any

from core import loop as process_loop
from llm_providers.client.base import Endpoint, Timeouts

if TYPE_CHECKING:
    import aiohttp
    import httpx2
    import openai


class Deferred:
    """A module imported on its first attribute access.

    The SDK and its HTTP client take about half a second to import; the catalog models,
    the admin and the battle services import the client for its types, so every web and
    worker process and every management command (a ratings recompute, say) would pay that
    without ever calling a model. `import_module` holds the import lock, so threads that get
    here first at the same time all see the whole module (importlib's LazyLoader is not
    thread-safe before Python 3.12).
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


if not TYPE_CHECKING:
    aiohttp = Deferred("aiohttp")
    httpx2 = Deferred("httpx2")
    openai = Deferred("openai")

NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
# Connections one kept client may hold to its endpoint. The SDK's default (1,000) would make
# the next stream to a busy provider wait for a free connection; the process's cap on replies
# in flight (battles.generation) is the limit that matters.
MAX_CONNECTIONS = 100_000
_KEEP_ALIVE = 100  # idle connections kept per endpoint
_ASYNC_CLIENTS_KEPT = 64
_CLOSE_EVICTED_AFTER = 900.0  # seconds: longer than any stream lasts


@functools.cache
def _ssl_context():
    # Building one costs ~40 ms (CA bundle); one shared context makes a client per call cheap.
    return httpx2.create_ssl_context()


def sdk_timeout(timeouts: Timeouts, read: float) -> openai.Timeout:
    return openai.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.connect, pool=timeouts.connect
    )


def sync_client(endpoint: Endpoint, timeout: openai.Timeout) -> openai.OpenAI:
    """A client for one blocking call; the caller closes it."""
    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or NO_KEY,
        timeout=timeout,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=_ssl_context(), timeout=timeout),
    )


# Per event loop (a client is bound to the loop it was made in): base URL and key -> client.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def async_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    """The running loop's SDK client for an endpoint, on aiohttp (`openai[aiohttp]`, a C HTTP
    parser).

    One per base URL and key, kept: replies to the same provider reuse its connections (no
    TCP and TLS handshake, no DNS lookup per reply). Timeouts are set per request.
    """
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    key = (endpoint.base_url, endpoint.api_key or NO_KEY)
    client = clients.get(key)
    if client is None:
        if len(clients) >= _ASYNC_CLIENTS_KEPT:  # endpoints edited many times over
            evicted = clients.pop(next(iter(clients)))
            loop.call_later(_CLOSE_EVICTED_AFTER, lambda: loop.create_task(evicted.close()))
        client = clients[key] = _async_client_class()(
            base_url=key[0],
            api_key=key[1],
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(
                verify=_ssl_context(),
                limits=httpx2.Limits(
                    max_connections=MAX_CONNECTIONS, max_keepalive_connections=_KEEP_ALIVE
                ),
            ),
        )
    return client


@functools.cache
def _async_client_class() -> type[openai.AsyncOpenAI]:
    """The SDK's async client, less a uuid per request.

    For every POST the SDK draws `uuid4()` for an idempotency key, and the OpenAI client then
    sends none (it has no idempotency header): a random-number system call per request for
    nothing, and on this machine one of the largest entries in the worker's profile
    (benchmarks/load/README.md). Built on first use, as the SDK is imported then.
    """

    class AsyncOpenAI(openai.AsyncOpenAI):
        def _idempotency_key(self) -> str:
            return ""  # no key: a header, should the SDK ever add one, goes out only with one

    return AsyncOpenAI


def request_params(endpoint: Endpoint, messages: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    for name in ("temperature", "top_p", "max_tokens"):
        value = getattr(endpoint, name)
        if value is not None:
            params[name] = value
    if endpoint.stop:
        params["stop"] = list(endpoint.stop)
    if endpoint.extra_body:
        params["extra_body"] = dict(endpoint.extra_body)
    return params


def warm_up() -> None:
    """Load the SDK and its aiohttp transport (half a second) and start the process's loop,
    so that the first reply of a process does not wait for them."""
    client = openai.AsyncOpenAI(
        api_key=NO_KEY, base_url="http://127.0.0.1/", http_client=openai.DefaultAioHttpClient()
    )
    client.chat.completions.with_streaming_response  # noqa: B018 (the SDK's lazy imports)
    process_loop.get_loop()


@atexit.register
def _close_clients() -> None:
    """At exit: close the kept clients of loops still running in their own thread (the
    process loop's): aiohttp warns about sessions left open."""
    for loop, clients in list(_async_clients.items()):
        if clients and loop.is_running():
            with contextlib.suppress(Exception):
                closing = _close_all(list(clients.values()))
                asyncio.run_coroutine_threadsafe(closing, loop).result(timeout=2)


async def _close_all(clients: list[openai.AsyncOpenAI]) -> None:
    await asyncio.gather(*(client.close() for client in clients))
