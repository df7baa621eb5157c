"""The one place the project talks to models: OpenAI-compatible chat completions.

Built on the official `openai` SDK (its own retries off: retrying is decided here, only for
transient failures and only before the first token). Pure Python, no Django import, so
benchmarks and other tools can use it directly.

Timeouts: the SDK's read timeout only notices a silent socket after a whole read timeout, and
it cannot tell "no first token yet" from "stalled mid-answer". So each attempt reads the stream
in a helper thread and hands chunks over a queue; the calling thread enforces the first-token,
idle and total deadlines precisely, polls `should_stop`, and calls `on_delta` (so callbacks run
in the caller's thread, where e.g. the Django ORM is allowed). The SDK's read timeout stays as a
backstop that ends an abandoned helper thread.

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

import contextlib
import functools
import importlib
import json
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    httpx2 = Deferred("httpx2")
    openai = Deferred("openai")


logger = logging.getLogger(__name__)

NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
RETRY_AFTER_CAP = 20.0  # seconds: never wait longer than this on a provider's retry-after
STOP_POLL_INTERVAL = 0.05  # seconds between should_stop() calls
CONNECTION_TEST_TOKENS = 4
_BACKSTOP = 1.0  # seconds the SDK read timeout exceeds our own deadlines

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
    returned with `stopped=True`. `on_sent()` is called once, as soon as the first request is
    on its way: work done there overlaps the model's time to first token instead of adding
    to it; `on_delta` is not called before it returns. Raises ProviderError subclasses (see
    the module docstring).
    """
    call = _StreamCall(endpoint, messages, on_delta, should_stop, timeouts, on_sent)
    return call.run(max_retries=max_retries, backoff=backoff)


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


class _StreamCall:
    """One chat_stream call: the state shared by its attempts."""

    def __init__(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, Any]],
        on_delta: Callable[[str], None],
        should_stop: Callable[[], bool] | None,
        timeouts: Timeouts,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.on_sent = on_sent
        self.messages = messages
        self.on_delta = on_delta
        self.should_stop = should_stop
        self.timeouts = timeouts
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

    def run(self, *, max_retries: int, backoff: float) -> StreamResult:
        while True:
            if self._stop_requested(force=True):
                return self._result(stopped=True)
            try:
                return self._attempt()
            except ProviderError as exc:
                exc.retries = self.retries
                if not exc.retryable:
                    raise
                delay = _retry_delay(exc, self.retries, backoff)
                if self.retries >= max_retries or time.monotonic() + delay >= self.deadline:
                    raise
                _log_retry(self.endpoint, exc, self.retries, delay)
                if self._sleep_unless_stopped(delay):
                    return self._result(stopped=True)
                self.retries += 1

    def _attempt(self) -> StreamResult:
        # A retried attempt starts clean: only attempts that delivered no text are retried.
        self.refusal.clear()
        self.finish_reason = self.prompt_tokens = self.completion_tokens = None
        timeouts = self.timeouts
        read_timeout = min(max(timeouts.first_token, timeouts.idle), timeouts.total) + _BACKSTOP
        client = _sdk_client(self.endpoint, timeouts, read_timeout)
        request = _request_params(self.endpoint, self.messages)
        reader = _Reader(
            lambda: client.chat.completions.with_streaming_response.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
        )
        reader.start()
        first_token_deadline = time.monotonic() + timeouts.first_token
        last_chunk_at = 0.0
        finished = False
        try:
            if self.on_sent is not None:
                on_sent, self.on_sent = self.on_sent, None
                on_sent()
            while True:
                if self.parts:
                    deadline, kind = last_chunk_at + timeouts.idle, "hang"
                else:
                    deadline, kind = first_token_deadline, "first_token"
                if self.deadline <= deadline:
                    deadline, kind = self.deadline, "total"
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise self._timeout(kind)
                if self.should_stop is not None:
                    wait = min(wait, STOP_POLL_INTERVAL)
                try:
                    event, payload = reader.events.get(timeout=wait)
                except queue.Empty:
                    if self._stop_requested():
                        return self._result(stopped=True)
                    continue
                if event == "error":
                    if not isinstance(payload, openai.OpenAIError | json.JSONDecodeError):
                        raise payload
                    raise self._failure(payload)
                if event == "end":
                    finished = True
                    return self._finish()
                last_chunk_at = time.monotonic()
                self._take(payload)
                if self._stop_requested():
                    return self._result(stopped=True)
        finally:
            if not finished:
                reader.abandon()
            client.close()

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

    def _sleep_unless_stopped(self, delay: float) -> bool:
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, STOP_POLL_INTERVAL) if self.should_stop else left)
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


class _Reader(threading.Thread):
    """Opens one SDK streaming response and hands ("chunk"|"end"|"error", payload) events over.

    The SDK sends the request and raises its typed errors (status, connection, timeout); the
    body is decoded here, one `json.loads` per chunk. The SDK's own stream builds a pydantic
    object per chunk through a generic SSE decoder: about three quarters of the worker's CPU per
    token, for the three fields a reply needs.
    """

    def __init__(self, open_stream: Callable[[], Any]) -> None:
        super().__init__(name="llm-stream-reader", daemon=True)
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._open_stream = open_stream
        self._abandoned = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx2.Response | None = None

    def run(self) -> None:
        try:
            with self._open_stream() as api_response:
                response = api_response.http_response
                with self._lock:
                    self._response = response
                for chunk in _sse_json(response):
                    if self._abandoned.is_set():
                        return
                    self.events.put(("chunk", chunk))
            self.events.put(("end", None))
        except Exception as exc:  # handed to the calling thread, which classifies it
            self.events.put(("error", exc))

    def abandon(self) -> None:
        """Make the thread stop soon, even if it is blocked on a silent socket."""
        with self._lock:
            self._abandoned.set()
            response = self._response
        if response is None:
            return  # still waiting for headers: the SDK read timeout ends it
        # Closing a socket does not wake a read blocked on it in another thread; shutdown does.
        network_stream = response.extensions.get("network_stream")
        sock = network_stream.get_extra_info("socket") if network_stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _sse_json(response: httpx2.Response) -> Iterator[Any]:
    """The JSON payloads of a chat-completions event stream, as the SDK's stream reads them:
    `data:` lines joined per event, `[DONE]` ends it, an `error` object raises `APIError`,
    transport failures become the SDK's `APITimeoutError` / `APIConnectionError`."""
    data: list[str] = []
    try:
        for line in response.iter_lines():
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
    timeout = openai.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.connect, pool=timeouts.connect
    )
    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or NO_KEY,
        timeout=timeout,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=_ssl_context(), timeout=timeout),
    )


def _request_params(endpoint: Endpoint, messages: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    for name in ("temperature", "top_p", "max_tokens"):
        value = getattr(endpoint, name)
        if value is not None:
            params[name] = value
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
