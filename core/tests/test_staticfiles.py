"""Static files under ASGI: the whole file right after the headers, no stream to iterate
(core/staticfiles.py)."""

import asyncio

from django.conf import settings

from core.asgi import ReusedThreadASGIHandler
from core.tests.test_asgi import asgi_request

CSS = settings.BASE_DIR / "static" / "arena" / "arena.css"
URL = "/static/arena/arena.css"


def _serve(path: str = URL, **scope) -> tuple[dict, list[dict]]:
    """The response's start message (headers as a dict) and its body messages."""
    messages = asyncio.run(asgi_request(ReusedThreadASGIHandler(), path, **scope))
    start, *body = messages
    assert start["type"] == "http.response.start"
    start = start | {"headers": {k.decode().lower(): v.decode() for k, v in start["headers"]}}
    return start, body


def test_a_static_file_is_sent_whole_in_the_message_after_its_headers():
    start, body = _serve()
    assert start["status"] == 200
    assert start["headers"]["content-type"].startswith("text/css")
    assert int(start["headers"]["content-length"]) == CSS.stat().st_size
    assert start["headers"]["etag"]
    assert body == [{"type": "http.response.body", "body": CSS.read_bytes(), "more_body": False}]


def test_a_revalidated_static_file_answers_304_and_ends_with_its_headers():
    etag = _serve()[0]["headers"]["etag"]
    start, body = _serve(headers={"If-None-Match": etag})
    assert start["status"] == 304
    assert start["headers"]["etag"] == etag
    assert body == [{"type": "http.response.body", "body": b"", "more_body": False}]


def test_a_range_of_a_static_file_and_a_head_request_are_answered_too():
    start, body = _serve(headers={"Range": "bytes=0-9"})
    assert start["status"] == 206
    assert start["headers"]["content-range"] == f"bytes 0-9/{CSS.stat().st_size}"
    assert b"".join(m["body"] for m in body) == CSS.read_bytes()[:10]

    start, body = _serve(method="HEAD")
    assert start["status"] == 200
    assert int(start["headers"]["content-length"]) == CSS.stat().st_size
    assert b"".join(m["body"] for m in body) == b""
