"""What a model call takes and gives back, and how it fails."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
TOTAL_TIMEOUT_MESSAGE = "The model took too long to answer."


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


DEFAULT_TIMEOUTS = Timeouts()


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
