"""A streamed chat completion, run as a coroutine in the caller's event loop.

Every stream of a process runs in one loop (`core.loop`), on the SDK's async client over
aiohttp, each chunk decoded with one `json.loads` (the SDK's per-chunk objects were most of
a worker's CPU per token: `make bench-client`). The loop enforces the first-token, idle and
total deadlines itself with one timer per stream (the SDK's read timeout only notices a
silent socket after a whole read timeout and cannot tell "no first token yet" from "stalled
mid-answer"; it stays as a backstop). Callbacks run in the loop: quick, non-blocking work
only (no database, no network round trip).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from llm_providers.client.base import (
    DEFAULT_TIMEOUTS,
    TOTAL_TIMEOUT_MESSAGE,
    Endpoint,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    StreamResult,
    Timeouts,
)
from llm_providers.client.classify import (
    aiohttp_error_as_such,
    classify,
    describe,
    log_retry,
    retry_delay,
)
from llm_providers.client.sdk import async_client, httpx2, openai, request_params, sdk_timeout

_BACKSTOP = 1.0  # seconds the SDK read timeout exceeds our own deadlines


class ChatStream:
    """One streamed chat completion: `await stream.run()` returns a StreamResult or raises a
    ProviderError (see `classify`); after a failure mid-answer the text received so far is
    kept on `exc.partial_text`.

    `on_delta(text)` is called for each piece of text as it arrives. `on_sent()` is called
    once, as soon as the first request is on its way (work done there overlaps the model's
    time to first token), always before the first `on_delta`. `stop()`, from the same loop,
    closes the stream at once: `run()` then returns the text so far with `stopped=True`.
    Transient failures before the first token are retried up to `max_retries` times.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, Any]],
        *,
        on_delta: Callable[[str], None],
        on_sent: Callable[[], None] | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self.endpoint = endpoint
        self.messages = messages
        self.on_delta = on_delta
        self.on_sent = on_sent
        self.timeouts = timeouts
        self.max_retries = max_retries
        self.backoff = backoff
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.ttft_ms: int | None = None
        self.retries = 0
        self.stopped = False
        self.started = 0.0
        self.deadline = 0.0
        self.last_chunk_at = 0.0
        # Set by each attempt: its reader task, its deadline timer, what ended it early.
        self.first_token_deadline = 0.0
        self.reader: asyncio.Future[None] | None = None
        self.watch: asyncio.TimerHandle | None = None
        self.ended_by: str | None = None
        self.waking: asyncio.Event | None = None  # set by stop() during a retry's wait

    def stop(self) -> None:
        """End the stream now (idempotent; a stream not yet started never starts)."""
        self.stopped = True
        if self.reader is not None and not self.reader.done() and self.ended_by is None:
            self.ended_by = "stop"
            self.reader.cancel()
        if self.waking is not None:
            self.waking.set()

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def run(self) -> StreamResult:
        self.started = time.monotonic()
        self.deadline = self.started + self.timeouts.total
        while True:
            if self.stopped:
                return self._result(stopped=True)
            try:
                return await self._attempt()
            except ProviderError as exc:
                exc.retries = self.retries
                if not exc.retryable:
                    raise
                delay = retry_delay(exc, self.retries, self.backoff)
                if self.retries >= self.max_retries or time.monotonic() + delay >= self.deadline:
                    raise
                log_retry(self.endpoint, exc, self.retries, delay)
                if await self._wait_unless_stopped(delay):
                    return self._result(stopped=True)
                self.retries += 1

    async def _attempt(self) -> StreamResult:
        # A retried attempt starts clean: only attempts that delivered no text are retried.
        self.refusal.clear()
        self.finish_reason = self.prompt_tokens = self.completion_tokens = None
        timeouts = self.timeouts
        read_timeout = min(max(timeouts.first_token, timeouts.idle), timeouts.total) + _BACKSTOP
        client = async_client(self.endpoint)
        self.first_token_deadline = time.monotonic() + timeouts.first_token
        self.ended_by = None
        self.reader = reader = asyncio.ensure_future(
            self._read(client, sdk_timeout(timeouts, read_timeout))
        )
        self._watch()
        try:
            if self.on_sent is not None:
                on_sent, self.on_sent = self.on_sent, None
                on_sent()  # the reader has not run yet: no delta comes before this
            try:
                await reader
            except asyncio.CancelledError:
                if self.ended_by is None:
                    raise  # the call itself was cancelled
                if self.ended_by == "stop":
                    return self._result(stopped=True)
                raise self._timeout(self.ended_by) from None
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                raise self._failure(aiohttp_error_as_such(exc)) from None
            return self._finish()
        finally:
            if self.watch is not None:
                self.watch.cancel()
            if not reader.done():
                reader.cancel()  # closes the response: the connection is dropped
                await asyncio.wait((reader,))

    def _watch(self) -> None:
        """A timer callback, not a task: at the next deadline, end the reader if its time is
        up, or watch again until the deadline that now applies."""
        if self.parts:
            deadline, kind = self.last_chunk_at + self.timeouts.idle, "hang"
        else:
            deadline, kind = self.first_token_deadline, "first_token"
        if self.deadline <= deadline:
            deadline, kind = self.deadline, "total"
        if time.monotonic() >= deadline:
            self.watch = None
            if self.ended_by is None:
                self.ended_by = kind
                self.reader.cancel()
            return
        self.watch = asyncio.get_running_loop().call_later(deadline - time.monotonic(), self._watch)

    async def _read(self, client: openai.AsyncOpenAI, timeout: openai.Timeout) -> None:
        """Read the attempt's stream to its end."""
        request = request_params(self.endpoint, self.messages)
        async with client.chat.completions.with_streaming_response.create(
            **request, stream=True, stream_options={"include_usage": True}, timeout=timeout
        ) as api_response:
            async for chunk in _sse_json(api_response.http_response):
                self.last_chunk_at = time.monotonic()
                had_text = bool(self.parts)
                self._take(chunk)
                if self.parts and not had_text and self.watch is not None:
                    # The idle deadline replaces the first-token one: watch again from now.
                    self.watch.cancel()
                    self._watch()

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
            return classify(exc, self.endpoint.api_key)
        detail = describe(exc, self.endpoint.api_key)
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
                "timeout", message=TOTAL_TIMEOUT_MESSAGE, detail=detail, partial_text=self.text
            )
        return ProviderTransientError("timeout", message=TOTAL_TIMEOUT_MESSAGE, detail=detail)

    async def _wait_unless_stopped(self, delay: float) -> bool:
        """Wait before a retry; True if stop() came meanwhile."""
        if self.stopped:
            return True
        self.waking = asyncio.Event()
        try:
            await asyncio.wait_for(self.waking.wait(), delay)
        except TimeoutError:
            pass
        finally:
            self.waking = None
        return self.stopped

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


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
