"""What a battle request can be refused with: a message fit to show and its HTTP status."""

from battles.moderation import PromptRefusedError


class BattleError(Exception):
    """A request the battle cannot take; `message` is fit to show, `status` the HTTP code,
    `retry_after` the seconds after which it may succeed, when that is known."""

    status = 409
    retry_after: int | None = None

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotEnoughModelsError(BattleError):
    status = 503


class AlreadyVotedError(BattleError):
    status = 409


class VoteCapError(BattleError):
    """Too many votes in 24 hours, until one more fits in `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class PromptNotAllowedError(BattleError):
    status = PromptRefusedError.status


class ModelUnavailableError(BattleError):
    """A model the visitor chose by name was retired or paused since the page showed it."""

    status = 409
