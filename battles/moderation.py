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
from llm_providers.client import Endpoint, ProviderError, moderation_check

log = logging.getLogger(__name__)


class PromptRefusedError(Exception):
    """The prompt may not be sent; `message` is fit to show, `status` the HTTP code."""

    status = 422

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def moderation_enabled() -> bool:
    return bool(settings.ARENA_MODERATION_URL)


def _endpoint() -> Endpoint:
    key_env = settings.ARENA_MODERATION_API_KEY_ENV
    return Endpoint(
        base_url=settings.ARENA_MODERATION_URL,
        model=settings.ARENA_MODERATION_MODEL,
        api_key=os.environ.get(key_env) if key_env else None,
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
        # One try: the visitor is waiting, and the fail-open/closed rule covers an outage.
        result = moderation_check(_endpoint(), prompt, timeout=settings.ARENA_MODERATION_TIMEOUT)
    except ProviderError as exc:
        closed = settings.ARENA_MODERATION_FAIL_CLOSED
        log.warning(
            "moderation check failed (%s): %s %s",
            "refusing" if closed else "allowing",
            exc.code,
            exc.detail,
        )
        ModerationEvent.objects.create(
            outcome=ModerationEvent.Outcome.ERROR_REFUSED
            if closed
            else ModerationEvent.Outcome.ERROR_ALLOWED,
            detail=f"{exc.code}: {exc.detail}"[:300],
            **event,
        )
        if closed:
            raise PromptRefusedError(
                "We could not check this prompt right now, so it was not sent. "
                "Please try again in a minute."
            ) from None
        return
    if not result.flagged:
        return
    log.info(
        "moderation refused a %s prompt: %s", action, ", ".join(result.categories) or "flagged"
    )
    ModerationEvent.objects.create(
        outcome=ModerationEvent.Outcome.REFUSED, categories=result.categories, **event
    )
    raise PromptRefusedError(
        "This prompt was not sent: our content check flagged it. Rephrase it and try again."
    )
