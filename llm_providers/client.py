"""The one place the project talks to models: OpenAI-compatible chat completions.

Built on the official `openai` SDK (its own retries off: retrying is decided here, only for
transient failures and only before the first token). Pure Python, no Django import, so
benchmarks and other tools can use it directly.

Streams: every stream of a process is read by one event loop in one thread, with the SDK's
async client on aiohttp (a C HTTP parser; `openai[aiohttp]`): a quarter of the CPU per token of
the SDK's own streaming with a thread per stream, less than half of this client's earlier
reader thread per stream (`make bench-client`, benchmarks/README.md). The
caller's thread waits for the result. The loop enforces the first-token, idle and total
deadlines precisely (the SDK's read timeout only notices a silent socket after a whole read
timeout, and cannot tell "no first token yet" from "stalled mid-answer"; it stays as a
backstop), polls `should_stop` and calls `on_delta` in the loop's thread: both must be quick
and must not block (no database, no network round trip). `on_sent` runs in the caller's
thread, where the Django ORM is allowed.

Error codes (`ProviderError.code`):
- transient (`ProviderTransientError`, retried before the first token): rate_limited,
  server_error, connection, timeout (no first token in time, or the total time ran out)
- permanent (`ProviderPermanentError`): auth, model_not_found, context_too_long,
  content_refused, bad_request, empty, malformed (a chunk that is not valid JSON: a broken
  integration rather than a passing glitch, so never retried), and, once text was delivered,
  broken_stream, hang (no chunk within the idle timeout) and timeout (total time ran out).
After a failure mid-answer the text received so far is kept on `exc.partial_text`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import json
import logging
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp
    import httpx2
    import openai


class Deferred:
    """A module imported on its first attribute access.

    The SDK and its HTTP client take about half a second to import; the catalog models,
    the admin and the battle services import this module for its types (and the moderation
    check imports the SDK), so every web and worker process and every management command (a
    ratings recompute, say) would pay that without ever calling a model. `import_module`
    holds the import lock, so threads that get here first at the same time all see the
    whole module (importlib's LazyLoader is not thread-safe before Python 3.12).
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


if not TYPE_CHECKING:
    aiohttp = Deferred("aiohttp")
    httpx2 = Deferred("httpx2")
    openai = Deferred("openai")


logger = logging.getLogger(__name__)

NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
RETRY_AFTER_CAP = 20.0  # seconds: never wait longer than this on a provider's retry-after
STOP_POLL_INTERVAL = 0.05  # seconds between should_stop() calls
CONNECTION_TEST_TOKENS = 4
_BACKSTOP = 1.0  # seconds the SDK read timeout exceeds our own deadlines
_LOOP_GRACE = 30.0  # seconds past the total time limit a caller waits for the stream loop

MESSAGES = {
    "rate_limited": "The model's provider is receiving too many requests. Try again shortly.",
    "server_error": "The model's provider had an internal error.",
    "connection": "Could not reach the model's provider.",
    "timeout": "The model took too long to start answering.",
    "auth": "The provider rejected the API key.",
    "model_not_found": "The provider does not know this model.",
    "context_too_long": "The conversation is too long for this model.",
    "content_refused": "The model declined to answer this prompt.",
    "bad_request": "The provider rejected the request.",
    "empty": "The model returned an empty answer.",
    "malformed": "The model's provider sent a response that could not be read.",
    "broken_stream": "The connection to the model broke off in the middle of the answer.",
    "hang": "The model stopped sending text in the middle of the answer.",
}
_TOTAL_TIMEOUT_MESSAGE = "The model took too long to answer."


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    # Provider-specific request fields sent as they are (llama.cpp's `repeat_penalty`, …).
    extra_body: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `first_token` counts per attempt; `total` covers the whole call with retries."""

    connect: float = 10.0
    first_token: float = 60.0
    total: float = 300.0
    idle: float = 60.0  # max gap between chunks after the first token


class ProviderError(Exception):
    """A model call that failed. `str(exc)` is `exc.message`, safe to show a visitor.

    `retryable` defaults to the subclass's nature; callers recording their own failures
    (e.g. `ProviderError("internal", "Something went wrong.", retryable=False)`) may set it.
    """

    retryable = False

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        retryable: bool | None = None,
        detail: str = "",
        partial_text: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, "The model could not answer.")
        if retryable is not None:
            self.retryable = retryable
        self.detail = detail  # for logs and admins only; never holds the API key
        self.partial_text = partial_text
        self.retry_after = retry_after  # seconds the provider asked us to wait, if it did
        self.retries = 0  # retries made before giving up
        super().__init__(self.message)


class ProviderTransientError(ProviderError):
    retryable = True


class ProviderPermanentError(ProviderError):
    retryable = False


@dataclass
class StreamResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: int | None  # from the start of the call, retries included: what a visitor waited
    latency_ms: int
    retries: int
    stopped: bool


def chat_stream(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    *,
    on_delta: Callable[[str], None],
    should_stop: Callable[[], bool] | None = None,
    on_sent: Callable[[], None] | None = None,
    timeouts: Timeouts = Timeouts(),
    max_retries: int = 2,
    backoff: float = 0.5,
) -> StreamResult:
    """Stream a chat completion, calling `on_delta(text)` for each piece as it arrives.

    `should_stop()` is polled after chunks and while waiting, at most every
    STOP_POLL_INTERVAL; when it returns True the stream is closed and the partial text is
    returned with `stopped=True`. Both run in the process's stream loop (see the module
    docstring): quick, non-blocking work only. `on_sent()` is called once, in the caller's
    thread, as soon as the first request is on its way: work done there overlaps the model's
    time to first token instead of adding to it; `on_delta` is not called before it returns.
    Raises ProviderError subclasses (see the module docstring).
    """
    call = _StreamCall(endpoint, messages, on_delta, should_stop, timeouts)
    loop = _stream_loop()
    signals: queue.SimpleQueue[str] = queue.SimpleQueue()
    if on_sent is not None:
        call.sent_gate = asyncio.Event()  # bound to the loop on first use (Python >= 3.10)
        call.on_sent = lambda: signals.put("sent")
    future = asyncio.run_coroutine_threadsafe(
        call.run(max_retries=max_retries, backoff=backoff), loop
    )
    future.add_done_callback(lambda _: signals.put("done"))
    # The loop enforces every deadline; this bound only keeps a caller (whose heartbeat
    # thread would hide it from the reaper) from waiting forever should the loop itself fail.
    give_up_at = time.monotonic() + timeouts.total + _LOOP_GRACE
    try:
        while _signal(signals, give_up_at) == "sent":
            on_sent()
            loop.call_soon_threadsafe(call.sent_gate.set)
        return future.result()
    except BaseException:
        # e.g. on_sent failed: the gate stays shut, the stream is closed, the error goes up.
        future.cancel()
        raise


def _signal(signals: queue.SimpleQueue[str], give_up_at: float) -> str:
    try:
        return signals.get(timeout=max(0.0, give_up_at - time.monotonic()))
    except queue.Empty:
        raise ProviderPermanentError(
            "timeout", message=_TOTAL_TIMEOUT_MESSAGE, detail="the stream loop did not answer"
        ) from None


def chat_complete(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    *,
    timeouts: Timeouts = Timeouts(),
    max_retries: int = 2,
    backoff: float = 0.5,
) -> StreamResult:
    """Non-streaming chat completion, with the same errors and retry rules as chat_stream."""
    started = time.monotonic()
    deadline = started + timeouts.total
    retries = 0
    while True:
        try:
            text, finish_reason, prompt_tokens, completion_tokens = _complete_once(
                endpoint, messages, timeouts, deadline - time.monotonic()
            )
            return StreamResult(
                text=text,
                finish_reason=finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                ttft_ms=None,
                latency_ms=_ms_since(started),
                retries=retries,
                stopped=False,
            )
        except ProviderError as exc:
            exc.retries = retries
            if not exc.retryable:
                raise
            delay = _retry_delay(exc, retries, backoff)
            if retries >= max_retries or time.monotonic() + delay >= deadline:
                raise
            _log_retry(endpoint, exc, retries, delay)
            time.sleep(delay)
            retries += 1


def connection_test(endpoint: Endpoint, *, timeout: float = 15.0) -> tuple[bool, int, str]:
    """A tiny real call: (ok, latency_ms, plain message for the admin)."""
    probe = replace(endpoint, max_tokens=CONNECTION_TEST_TOKENS)
    timeouts = Timeouts(
        connect=min(10.0, timeout), first_token=timeout, total=timeout, idle=timeout
    )
    started = time.monotonic()
    try:
        result = chat_complete(
            probe, [{"role": "user", "content": "Say hello."}], timeouts=timeouts, max_retries=0
        )
    except ProviderError as exc:
        latency_ms = _ms_since(started)
        if exc.code == "empty":
            # Reasoning models can spend a tiny budget before writing any text.
            return (
                True,
                latency_ms,
                (
                    f"Connected in {latency_ms} ms; the model sent no text within "
                    f"{CONNECTION_TEST_TOKENS} tokens."
                ),
            )
        logger.info("connection test failed for %s: %s %s", endpoint.model, exc.code, exc.detail)
        return False, latency_ms, exc.message
    return True, result.latency_ms, f"Connected: the model answered in {result.latency_ms} ms."


def warm_up() -> None:
    """Load the SDK and its aiohttp transport (half a second) and start the stream loop, so
    that the first reply of a process does not wait for them."""
    client = openai.AsyncOpenAI(
        api_key=NO_KEY, base_url="http://127.0.0.1/", http_client=openai.DefaultAioHttpClient()
    )
    client.chat.completions.with_streaming_response  # noqa: B018 (the SDK's lazy imports)
    _stream_loop()


_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def _stream_loop() -> asyncio.AbstractEventLoop:
    """The process's stream loop (uvloop where it is installed), started on first use and
    again in a forked child."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid():
            try:
                import uvloop
            except ImportError:
                loop = asyncio.new_event_loop()
            else:
                loop = uvloop.new_event_loop()
            threading.Thread(target=loop.run_forever, name="llm-streams", daemon=True).start()
            _async_clients.clear()  # a forked child's: bound to the parent's loop
            _loop, _loop_pid = loop, os.getpid()
            atexit.register(_close_clients, loop)
        return _loop


def _close_clients(loop: asyncio.AbstractEventLoop) -> None:
    """At exit: close the kept clients' connections (aiohttp warns about open sessions)."""
    if loop is not _loop or _loop_pid != os.getpid():
        return

    async def close_all() -> None:
        await asyncio.gather(*(c.close() for c in _async_clients.values()))

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=2)


class _StreamCall:
    """One chat_stream call: the state shared by its attempts. Runs in the stream loop."""

    def __init__(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, Any]],
        on_delta: Callable[[str], None],
        should_stop: Callable[[], bool] | None,
        timeouts: Timeouts,
    ) -> None:
        self.endpoint = endpoint
        self.messages = messages
        self.on_delta = on_delta
        self.should_stop = should_stop
        self.timeouts = timeouts
        # chat_stream's on_sent handshake: the signal to the caller, and the gate the first
        # chunk waits behind until the caller's on_sent has returned.
        self.on_sent: Callable[[], None] | None = None
        self.sent_gate: asyncio.Event | None = None
        self.started = time.monotonic()
        self.deadline = self.started + timeouts.total
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.ttft_ms: int | None = None
        self.retries = 0
        self.last_stop_poll = float("-inf")
        self.last_chunk_at = 0.0
        # Set by each attempt: its reader task, its watch timer, what ended it early.
        self.first_token_deadline = 0.0
        self.reader: asyncio.Future[bool] | None = None
        self.watch: asyncio.TimerHandle | None = None
        self.ended_by: str | None = None
        self.watch_error: Exception | None = None

    async def run(self, *, max_retries: int, backoff: float) -> StreamResult:
        while True:
            if self._stop_requested(force=True):
                return self._result(stopped=True)
            try:
                return await self._attempt()
            except ProviderError as exc:
                exc.retries = self.retries
                if not exc.retryable:
                    raise
                delay = _retry_delay(exc, self.retries, backoff)
                if self.retries >= max_retries or time.monotonic() + delay >= self.deadline:
                    raise
                _log_retry(self.endpoint, exc, self.retries, delay)
                if await self._sleep_unless_stopped(delay):
                    return self._result(stopped=True)
                self.retries += 1

    async def _attempt(self) -> StreamResult:
        # A retried attempt starts clean: only attempts that delivered no text are retried.
        self.refusal.clear()
        self.finish_reason = self.prompt_tokens = self.completion_tokens = None
        timeouts = self.timeouts
        read_timeout = min(max(timeouts.first_token, timeouts.idle), timeouts.total) + _BACKSTOP
        client = _async_sdk_client(self.endpoint)
        self.first_token_deadline = time.monotonic() + timeouts.first_token
        self.ended_by = None
        self.reader = reader = asyncio.ensure_future(
            self._read(client, _sdk_timeout(timeouts, read_timeout))
        )
        self._watch()
        try:
            if self.on_sent is not None:
                on_sent, self.on_sent = self.on_sent, None
                on_sent()
            try:
                stopped = await reader
            except asyncio.CancelledError:
                if self.ended_by is None:
                    raise  # the call itself was cancelled
                if self.ended_by == "stop":
                    return self._result(stopped=True)
                if self.ended_by == "error":
                    raise self.watch_error from None
                raise self._timeout(self.ended_by) from None
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                raise self._failure(_aiohttp_error_as_such(exc)) from None
            return self._result(stopped=True) if stopped else self._finish()
        finally:
            if self.watch is not None:
                self.watch.cancel()
            if not reader.done():
                reader.cancel()  # closes the response: the connection is dropped
                await asyncio.wait((reader,))

    def _watch(self) -> None:
        """A timer callback, not a task: at the next deadline, or every STOP_POLL_INTERVAL
        while a stop may be asked for, end the reader if its time is up or a stop was asked."""
        if self.parts:
            deadline, kind = self.last_chunk_at + self.timeouts.idle, "hang"
        else:
            deadline, kind = self.first_token_deadline, "first_token"
        if self.deadline <= deadline:
            deadline, kind = self.deadline, "total"
        now = time.monotonic()
        if now >= deadline:
            self.ended_by = kind
        else:
            try:
                if self._stop_requested():
                    self.ended_by = "stop"
            except Exception as exc:  # raised in the caller, not lost in the loop's log
                self.ended_by, self.watch_error = "error", exc
        if self.ended_by is not None:
            self.watch = None
            self.reader.cancel()
            return
        if self.should_stop is not None:
            deadline = min(deadline, now + STOP_POLL_INTERVAL)
        self.watch = asyncio.get_running_loop().call_at(deadline, self._watch)

    async def _read(self, client: openai.AsyncOpenAI, timeout: openai.Timeout) -> bool:
        """Read the attempt's stream to its end; True if stopped on the way."""
        request = _request_params(self.endpoint, self.messages)
        async with client.chat.completions.with_streaming_response.create(
            **request, stream=True, stream_options={"include_usage": True}, timeout=timeout
        ) as api_response:
            if self.sent_gate is not None:
                await self.sent_gate.wait()
            async for chunk in _sse_json(api_response.http_response):
                self.last_chunk_at = time.monotonic()
                had_text = bool(self.parts)
                self._take(chunk)
                if self.parts and not had_text and self.watch is not None:
                    # The idle deadline replaces the first-token one: watch again from now.
                    self.watch.cancel()
                    self._watch()
                if self._stop_requested():
                    return True
        return False

    def _take(self, chunk: Any) -> None:
        """One decoded chunk (a JSON object) of the chat-completions stream."""
        if not isinstance(chunk, dict):
            raise ProviderPermanentError(
                "malformed", detail=f"unexpected chunk {chunk!r:.200}", partial_text=self.text
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens")
            self.completion_tokens = usage.get("completion_tokens")
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                refusal = delta.get("refusal")
                if refusal and isinstance(refusal, str):
                    self.refusal.append(refusal)
                content = delta.get("content")
                if content and isinstance(content, str):
                    if self.ttft_ms is None:
                        self.ttft_ms = _ms_since(self.started)
                    self.parts.append(content)
                    self.on_delta(content)
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                self.finish_reason = finish_reason

    def _finish(self) -> StreamResult:
        if self.finish_reason == "content_filter" or (self.refusal and not self.parts):
            raise ProviderPermanentError(
                "content_refused",
                partial_text=self.text,
                detail=f"finish_reason={self.finish_reason} refusal={''.join(self.refusal)!r}",
            )
        if not self.parts:
            raise ProviderPermanentError("empty", detail=f"finish_reason={self.finish_reason}")
        return self._result(stopped=False)

    def _failure(self, exc: Exception) -> ProviderError:
        if not self.parts:
            return _classify(exc, self.endpoint.api_key)
        detail = _describe(exc, self.endpoint.api_key)
        if isinstance(exc, json.JSONDecodeError):
            code = "malformed"
        elif isinstance(exc, openai.APITimeoutError):
            code = "hang"
        else:
            code = "broken_stream"
        return ProviderPermanentError(code, detail=detail, partial_text=self.text)

    def _timeout(self, kind: str) -> ProviderError:
        t = self.timeouts
        if kind == "first_token":
            return ProviderTransientError(
                "timeout", detail=f"no first token within {t.first_token}s"
            )
        if kind == "hang":
            return ProviderPermanentError(
                "hang", detail=f"no chunk for {t.idle}s mid-answer", partial_text=self.text
            )
        detail = f"total time limit of {t.total}s reached"
        if self.parts:
            return ProviderPermanentError(
                "timeout", message=_TOTAL_TIMEOUT_MESSAGE, detail=detail, partial_text=self.text
            )
        return ProviderTransientError("timeout", message=_TOTAL_TIMEOUT_MESSAGE, detail=detail)

    def _stop_requested(self, *, force: bool = False) -> bool:
        if self.should_stop is None:
            return False
        now = time.monotonic()
        if not force and now - self.last_stop_poll < STOP_POLL_INTERVAL:
            return False
        self.last_stop_poll = now
        return bool(self.should_stop())

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, STOP_POLL_INTERVAL) if self.should_stop else left)
            if self._stop_requested():
                return True
        return False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _result(self, *, stopped: bool) -> StreamResult:
        return StreamResult(
            text=self.text,
            finish_reason=None if stopped else self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=self.ttft_ms,
            latency_ms=_ms_since(self.started),
            retries=self.retries,
            stopped=stopped,
        )


async def _sse_json(response: httpx2.Response) -> AsyncIterator[Any]:
    """The JSON payloads of a chat-completions event stream, as the SDK's stream reads them:
    `data:` lines joined per event, `[DONE]` ends it, an `error` object raises `APIError`,
    transport failures become the SDK's `APITimeoutError` / `APIConnectionError`."""
    data: list[str] = []
    try:
        async for line in response.aiter_lines():
            if line:
                if line.startswith("data:"):
                    data.append(line[6:] if line.startswith("data: ") else line[5:])
                continue  # event:, id:, retry: and comments carry nothing a chat chunk needs
            if not data:
                continue
            text = "\n".join(data)
            data = []
            if text.startswith("[DONE]"):
                return
            payload = json.loads(text)
            if isinstance(payload, dict) and payload.get("error"):
                error = payload["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise openai.APIError(
                    message=message
                    if isinstance(message, str) and message
                    else "An error occurred during streaming",
                    request=response.request,
                    body=error,
                )
            yield payload
    except httpx2.TimeoutException as err:
        raise openai.APITimeoutError(request=response.request) from err
    except (httpx2.RequestError, ssl.SSLError) as err:
        raise openai.APIConnectionError(request=response.request) from err


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building one costs ~40 ms (CA bundle); one shared context makes a client per call cheap.
    return httpx2.create_ssl_context()


def _sdk_client(endpoint: Endpoint, timeouts: Timeouts, read: float) -> openai.OpenAI:
    timeout = _sdk_timeout(timeouts, read)
    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or NO_KEY,
        timeout=timeout,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=_ssl_context(), timeout=timeout),
    )


_async_clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
_ASYNC_CLIENTS_KEPT = 64
_CLOSE_EVICTED_AFTER = 900.0  # seconds: longer than any stream lasts


def _async_sdk_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    """The stream loop's SDK client for an endpoint, on aiohttp (`openai[aiohttp]`).

    One per base URL and key, kept: replies to the same provider reuse its connections (no
    TCP and TLS handshake, no DNS lookup per reply). Timeouts are set per request. Used only
    in the stream loop's thread.
    """
    key = (endpoint.base_url, endpoint.api_key or NO_KEY)
    client = _async_clients.get(key)
    if client is None:
        if len(_async_clients) >= _ASYNC_CLIENTS_KEPT:  # endpoints edited many times over
            evicted = _async_clients.pop(next(iter(_async_clients)))
            loop = asyncio.get_running_loop()
            loop.call_later(_CLOSE_EVICTED_AFTER, lambda: loop.create_task(evicted.close()))
        client = _async_clients[key] = openai.AsyncOpenAI(
            base_url=key[0],
            api_key=key[1],
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(verify=_ssl_context()),
        )
    return client


def _sdk_timeout(timeouts: Timeouts, read: float) -> openai.Timeout:
    return openai.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.connect, pool=timeouts.connect
    )


def _request_params(endpoint: Endpoint, messages: list[dict[str, Any]]) -> dict[str, Any]:
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


def _complete_once(
    endpoint: Endpoint, messages: list[dict[str, Any]], timeouts: Timeouts, remaining: float
) -> tuple[str, str | None, int | None, int | None]:
    # Nothing arrives before the whole answer is ready, so the read timeout is the time left.
    client = _sdk_client(endpoint, timeouts, max(0.01, remaining))
    try:
        response = client.chat.completions.create(**_request_params(endpoint, messages))
    except (openai.OpenAIError, json.JSONDecodeError) as exc:
        raise _classify(exc, endpoint.api_key) from None
    finally:
        client.close()
    if not isinstance(response, openai.types.chat.ChatCompletion) or not response.choices:
        raise ProviderPermanentError("malformed", detail=f"unexpected response {response!r:.200}")
    choice = response.choices[0]
    message = choice.message
    text = (message.content if message is not None else None) or ""
    refusal = getattr(message, "refusal", None)
    if choice.finish_reason == "content_filter" or (refusal and not text):
        raise ProviderPermanentError(
            "content_refused",
            partial_text=text,
            detail=f"finish_reason={choice.finish_reason} refusal={refusal!r}",
        )
    if not text:
        raise ProviderPermanentError("empty", detail=f"finish_reason={choice.finish_reason}")
    usage = response.usage
    return (
        text,
        choice.finish_reason,
        usage.prompt_tokens if usage is not None else None,
        usage.completion_tokens if usage is not None else None,
    )


def _classify(exc: Exception, api_key: str | None) -> ProviderError:
    """Map an SDK failure that happened before any text was delivered."""
    detail = _describe(exc, api_key)
    if isinstance(exc, json.JSONDecodeError | openai.APIResponseValidationError):
        return ProviderPermanentError("malformed", detail=detail)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTransientError("timeout", detail=detail)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderTransientError("connection", detail=detail)
    if isinstance(exc, openai.RateLimitError):
        return ProviderTransientError(
            "rate_limited", detail=detail, retry_after=_retry_after(exc.response)
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderPermanentError("auth", detail=detail)
    if isinstance(exc, openai.NotFoundError):
        return ProviderPermanentError("model_not_found", detail=detail)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        text = f"{exc.code or ''} {exc.message}".lower()
        if status >= 500 or status in (408, 409):
            return ProviderTransientError("server_error", detail=detail)
        if status == 413 or "context_length" in text or "context length" in text:
            return ProviderPermanentError("context_too_long", detail=detail)
        if "content_filter" in text or "content_policy" in text:
            return ProviderPermanentError("content_refused", detail=detail)
        return ProviderPermanentError("bad_request", detail=detail)
    if isinstance(exc, openai.APIError):  # an error event inside an otherwise fine stream
        return ProviderTransientError("server_error", detail=detail)
    return ProviderPermanentError("bad_request", detail=detail)


def _aiohttp_error_as_such(exc: Exception) -> Exception:
    """The SDK's aiohttp transport passes on every aiohttp connection error (refused, reset,
    the server gone) as a connect *timeout*; the aiohttp error underneath tells them apart.
    Give those back as the connection errors they are, for every classification after."""
    if isinstance(exc, openai.APITimeoutError):
        cause = exc.__cause__
        while cause is not None:
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                cause, TimeoutError
            ):
                error = openai.APIConnectionError(request=exc.request)
                error.__cause__ = exc.__cause__
                return error
            cause = cause.__cause__
    return exc


def _describe(exc: BaseException, api_key: str | None) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    if isinstance(exc, openai.APIStatusError):
        parts.append(f"status={exc.status_code} request_id={exc.request_id}")
    if exc.__cause__ is not None:
        parts.append(f"caused by {type(exc.__cause__).__name__}: {exc.__cause__}")
    detail = " | ".join(parts)
    if api_key:
        detail = detail.replace(api_key, "[api key]")
    return detail


def _retry_after(response: httpx2.Response) -> float | None:
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare enough to fall back to our own backoff
    return None


def _retry_delay(exc: ProviderError, retries: int, backoff: float) -> float:
    # Exponential backoff with jitter, so callers that failed together do not retry together.
    delay = backoff * 2**retries * random.uniform(0.5, 1.0)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, RETRY_AFTER_CAP))
    return delay


def _log_retry(endpoint: Endpoint, exc: ProviderError, retries: int, delay: float) -> None:
    logger.warning(
        "retrying %s after %s (retry %d in %.2fs): %s",
        endpoint.model,
        exc.code,
        retries + 1,
        delay,
        exc.detail,
    )


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
