"""The ASGI handler keeps each request's thread for the next request (core/asgi.py)."""

import asyncio
import threading

import pytest
from django.core.signals import request_finished

from core.asgi import ReusedThreadASGIHandler


def _scope(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }


async def asgi_request(app, path: str, *, on_send=None, **scope) -> list[dict]:
    """One request through the ASGI app, as a server makes it; the messages the app sent.
    on_send(message) is called with each message as it is sent."""
    request_sent = False
    never = asyncio.Event()
    messages: list[dict] = []

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()  # no disconnect: Django stops listening when the response is sent

    async def send(message):
        messages.append(message)
        if on_send is not None:
            on_send(message)

    await app(_scope(path, **scope), receive, send)
    return messages


async def _get(app, path: str, on_send=None) -> int:
    """The response status of one GET through the ASGI app."""
    messages = await asgi_request(app, path, on_send=on_send)
    return next(m["status"] for m in messages if m["type"] == "http.response.start")


@pytest.mark.django_db(transaction=True)
def test_requests_one_after_another_run_in_one_reused_thread_and_together_in_two():
    app = ReusedThreadASGIHandler()
    threads: list[tuple[int, str]] = []

    def finished(**_kwargs):
        threads.append((threading.get_ident(), threading.current_thread().name))

    request_finished.connect(finished)
    try:

        async def main():
            one_by_one = [await _get(app, "/healthz") for _ in range(3)]
            together = await asyncio.gather(_get(app, "/healthz"), _get(app, "/healthz"))
            return one_by_one, together

        one_by_one, together = asyncio.run(main())
    finally:
        request_finished.disconnect(finished)

    assert one_by_one == [200, 200, 200] and list(together) == [200, 200]
    # Django closes each response in the request's thread: the same thread, three times over.
    assert len(set(threads[:3])) == 1 and threads[0][1].startswith("request")
    # Two requests at once still get a thread each (Django's one-thread-per-request rule).
    assert len(set(threads[3:])) == 2
    assert len(app._free) == 2


@pytest.mark.django_db(transaction=True)
def test_a_request_for_an_async_view_takes_no_request_thread():
    app = ReusedThreadASGIHandler()
    threads: list[str] = []

    def finished(**_kwargs):
        threads.append(threading.current_thread().name)

    request_finished.connect(finished)
    try:

        async def main():
            # The SSE stream's view, for a turn that does not exist: a 404, through the
            # middleware and the view's own database lookup.
            url = "/b/00000000-0000-0000-0000-000000000000/turns/0/events/"
            return await asyncio.gather(*[_get(app, url) for _ in range(5)])

        statuses = asyncio.run(main())
    finally:
        request_finished.disconnect(finished)

    assert statuses == [404] * 5
    assert app._free == []  # no request thread was taken, so none was handed back
    assert len(threads) == 5 and not any(name.startswith("request") for name in threads)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["/b/00000000-0000-0000-0000-000000000000/turns/0/events/", "/"])
def test_a_request_started_inside_the_previous_ones_task_is_served_in_a_context_of_its_own(
    second,
):
    # What uvicorn does with a request that arrives on a keep-alive connection before the
    # previous response is complete: it starts it when that response ends, from inside the
    # previous request's task. The stream view (async) used to fail with "ThreadSensitiveContext
    # has exited", as the previous request's thread context was gone by the time it asked.
    app = ReusedThreadASGIHandler()

    async def main():
        followers = []

        def on_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                followers.append(asyncio.create_task(_get(app, second)))

        first = await _get(app, "/healthz", on_send)
        return first, await followers[0]

    first, follower = asyncio.run(main())
    assert first == 200
    assert follower == (404 if "/events/" in second else 200)
