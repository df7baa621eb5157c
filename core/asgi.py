"""Django's ASGI handler, with each request's thread kept for the next request.

Under ASGI Django runs a request's sync code (the middleware, sync views, `sync_to_async`
calls) in one thread of the request's own: asgiref's `ThreadSensitiveContext` makes a new
one-thread executor per request, starts its thread, and on the way out starts another thread
to join it. Two thread starts per request, on two cores shared by everything. This handler
hands each request a one-thread executor from a free list instead, and takes it back when the
request is done: still one thread per request in flight (the rule Django relies on: a
request's database connection and thread-locals stay in one thread), but no thread started
per request once the list is warm. Threads left over from a burst beyond KEEP are let go.

A request for an async view (the SSE stream) gets no thread of its own: it holds its
connection for minutes while its sync part (the middleware, a lookup or two, each a
self-contained call with its connection given back) takes milliseconds. That part runs in
asgiref's one shared thread for sync code outside a request context, so 500 open streams
are 500 coroutines, not 500 parked threads. The price: stream connects of one process take
turns in that thread (a few milliseconds each; pages are not affected).

Every request runs in a task of its own with an empty context. uvicorn starts a request that
arrives before the previous response on its connection is complete (pipelined, or sent right
after a 304's headers) from inside the previous request's task, so it would inherit that
request's context: its exited thread context, which asgiref refuses ("ThreadSensitiveContext
has exited": a 500 on a stream connect), and its context-local state.
"""

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler
from django.urls import Resolver404, get_resolver


@lru_cache(maxsize=4096)
def _async_view(path: str) -> bool:
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False
    return asyncio.iscoroutinefunction(match.func)


class ReusedThreadASGIHandler(ASGIHandler):
    KEEP = 64

    def __init__(self):
        super().__init__()
        self._free: list[ThreadPoolExecutor] = []

    def _executor(self) -> ThreadPoolExecutor:
        try:
            return self._free.pop()
        except IndexError:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        # Awaited, so a cancelled request cancels it (see the module docstring for why).
        await asyncio.create_task(self._serve(scope, receive, send), context=contextvars.Context())

    async def _serve(self, scope, receive, send):
        # Django resolves the path below the mount point (root_path); so does this.
        if _async_view(scope["path"].removeprefix(scope.get("root_path", ""))):
            await self.handle(scope, receive, send)
            return
        executor = self._executor()
        try:
            # Django's own __call__ is this line without the executor.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._free) < self.KEEP:
                self._free.append(executor)
            else:
                executor.shutdown(wait=False)


def get_application() -> ReusedThreadASGIHandler:
    """`django.core.asgi.get_asgi_application`, with the handler above."""
    import django

    django.setup(set_prefix=False)
    return ReusedThreadASGIHandler()
