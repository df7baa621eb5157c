"""The optional prompt check against an OpenAI-compatible `/v1/moderations` endpoint.

Off unless ARENA_MODERATION_URL is set. A flagged prompt is refused before anything of the
battle is written, and recorded as a ModerationEvent for staff. When the endpoint itself fails
the prompt is allowed (fail open) unless ARENA_MODERATION_FAIL_CLOSED is on; either way the
failure is recorded, so staff can see how often the check was skipped.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings

from battles.models import ModerationEvent
from llm_providers.client import openai  # imported on first use: only a configured check needs it

log = logging.getLogger(__name__)

NO_KEY = "not-needed"  # the SDK insists on a key; a local endpoint ignores it


class PromptRefusedError(Exception):
    """The prompt may not be sent; `message` is fit to show, `status` the HTTP code."""

    status = 422

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def moderation_enabled() -> bool:
    return bool(settings.ARENA_MODERATION_URL)


def _client() -> openai.OpenAI:
    key_env = settings.ARENA_MODERATION_API_KEY_ENV
    return openai.OpenAI(
        base_url=settings.ARENA_MODERATION_URL,
        api_key=(os.environ.get(key_env) if key_env else None) or NO_KEY,
        timeout=settings.ARENA_MODERATION_TIMEOUT,
        # One try: the visitor is waiting, and the fail-open/closed rule covers an outage.
        max_retries=0,
    )


def prompt_moderate(*, prompt: str, action: str, visitor_hash: str, ip_hash: str) -> None:
    """Raise PromptRefusedError if the prompt is flagged (or unchecked and failing closed)."""
    if not moderation_enabled():
        return
    event = {
        "action": action,
        "visitor_hash": visitor_hash,
        "ip_hash": ip_hash,
        "prompt_excerpt": prompt[:300],
    }
    try:
        response = _client().moderations.create(
            model=settings.ARENA_MODERATION_MODEL, input=prompt
        )
        results = list(response.results)
    except (openai.OpenAIError, ValueError) as exc:
        closed = settings.ARENA_MODERATION_FAIL_CLOSED
        log.warning("moderation check failed (%s): %s", "refusing" if closed else "allowing", exc)
        ModerationEvent.objects.create(
            outcome=ModerationEvent.Outcome.ERROR_REFUSED
            if closed
            else ModerationEvent.Outcome.ERROR_ALLOWED,
            detail=type(exc).__name__,
            **event,
        )
        if closed:
            raise PromptRefusedError(
                "We could not check this prompt right now, so it was not sent. "
                "Please try again in a minute."
            ) from None
        return
    flagged = [result for result in results if result.flagged]
    if not flagged:
        return
    categories = sorted(
        {name for result in flagged for name, hit in result.categories.model_dump().items() if hit}
    )
    log.info("moderation refused a %s prompt: %s", action, ", ".join(categories) or "flagged")
    ModerationEvent.objects.create(
        outcome=ModerationEvent.Outcome.REFUSED, categories=categories, **event
    )
    raise PromptRefusedError(
        "This prompt was not sent: our content check flagged it. Rephrase it and try again."
    )
