"""Telling failures apart: what the SDK raised, as a typed error with a plain message.

Error codes (`ProviderError.code`):
- transient (`ProviderTransientError`, retried before the first token): rate_limited,
  server_error, connection, timeout (no first token in time, or the total time ran out)
- permanent (`ProviderPermanentError`): auth, model_not_found, context_too_long,
  content_refused, bad_request, empty, malformed (a chunk that is not valid JSON: a broken
  integration rather than a passing glitch, so never retried), and, once text was delivered,
  broken_stream, hang (no chunk within the idle timeout) and timeout (total time ran out).
"""

from __future__ import annotations

import json
import logging
import random

from llm_providers.client.base import (
    Endpoint,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from llm_providers.client.sdk import aiohttp, httpx2, openai

logger = logging.getLogger("llm_providers.client")

RETRY_AFTER_CAP = 20.0  # seconds: never wait longer than this on a provider's retry-after


def classify(exc: Exception, api_key: str | None) -> ProviderError:
    """Map an SDK failure that happened before any text was delivered."""
    detail = describe(exc, api_key)
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


def aiohttp_error_as_such(exc: Exception) -> Exception:
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


def describe(exc: BaseException, api_key: str | None) -> str:
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


def retry_delay(exc: ProviderError, retries: int, backoff: float) -> float:
    # Exponential backoff with jitter, so callers that failed together do not retry together.
    delay = backoff * 2**retries * random.uniform(0.5, 1.0)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, RETRY_AFTER_CAP))
    return delay


def log_retry(endpoint: Endpoint, exc: ProviderError, retries: int, delay: float) -> None:
    logger.warning(
        "retrying %s after %s (retry %d in %.2fs): %s",
        endpoint.model,
        exc.code,
        retries + 1,
        delay,
        exc.detail,
    )
