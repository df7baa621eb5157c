"""Blocking calls, for code that waits on them in its own thread: a whole (non-streamed)
chat completion, the admin's connection test, and the prompt moderation check."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from llm_providers.client.base import (
    DEFAULT_TIMEOUTS,
    Endpoint,
    ProviderError,
    ProviderPermanentError,
    StreamResult,
    Timeouts,
)
from llm_providers.client.classify import classify, log_retry, retry_delay
from llm_providers.client.sdk import openai, request_params, sdk_timeout, sync_client

logger = logging.getLogger("llm_providers.client")

CONNECTION_TEST_TOKENS = 4


def chat_complete(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    *,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    max_retries: int = 2,
    backoff: float = 0.5,
) -> StreamResult:
    """Non-streaming chat completion, with the same errors and retry rules as ChatStream."""
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
            delay = retry_delay(exc, retries, backoff)
            if retries >= max_retries or time.monotonic() + delay >= deadline:
                raise
            log_retry(endpoint, exc, retries, delay)
            time.sleep(delay)
            retries += 1


def connection_test(endpoint: Endpoint, *, timeout: float = 15.0) -> tuple[bool, int, str]:
    """A tiny real call: (ok, latency_ms, plain message for the admin)."""
    probe = replace(endpoint, max_tokens=CONNECTION_TEST_TOKENS)
    started = time.monotonic()
    try:
        result = chat_complete(
            probe,
            [{"role": "user", "content": "Say hello."}],
            timeouts=_one_limit(timeout),
            max_retries=0,
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


@dataclass(frozen=True)
class Moderation:
    flagged: bool
    categories: list[str]  # the categories any flagged result named, sorted


def moderation_check(endpoint: Endpoint, text: str, *, timeout: float) -> Moderation:
    """One try at an OpenAI-compatible `/moderations` endpoint (`endpoint.model` is the
    moderation model). Raises ProviderError when the endpoint fails or answers nonsense."""
    client = sync_client(endpoint, sdk_timeout(_one_limit(timeout), timeout))
    try:
        response = client.moderations.create(model=endpoint.model, input=text)
        flagged = [result for result in response.results if result.flagged]
        categories = sorted(
            {name for r in flagged for name, hit in r.categories.model_dump().items() if hit}
        )
    except (openai.OpenAIError, json.JSONDecodeError) as exc:
        raise classify(exc, endpoint.api_key) from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise ProviderPermanentError("malformed", detail=f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    return Moderation(flagged=bool(flagged), categories=categories)


def _one_limit(timeout: float) -> Timeouts:
    return Timeouts(connect=min(10.0, timeout), first_token=timeout, total=timeout, idle=timeout)


def _complete_once(
    endpoint: Endpoint, messages: list[dict[str, Any]], timeouts: Timeouts, remaining: float
) -> tuple[str, str | None, int | None, int | None]:
    # Nothing arrives before the whole answer is ready, so the read timeout is the time left.
    client = sync_client(endpoint, sdk_timeout(timeouts, max(0.01, remaining)))
    try:
        response = client.chat.completions.create(**request_params(endpoint, messages))
    except (openai.OpenAIError, json.JSONDecodeError) as exc:
        raise classify(exc, endpoint.api_key) from None
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


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
