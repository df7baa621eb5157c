"""One reply, from its claim to its end: the object that owns the reply's stream.

`ReplyRun.claim` (in the task's thread) takes the reply with a conditional UPDATE and reads
what the stream needs (`ReplyRun.of`, once the runner has claimed a task's replies together).
`run` (in the process's generation loop) streams it from its model with that side's own
history, hands each delta to the publisher, and ends it: every way out (an answer, a stop, a
provider error, a bug of ours, a shutdown) goes through `_end`, the one teardown. The
process-wide work (checkpoints, stop flags) is the runner's.
"""

import html
import logging

from django.conf import settings

from battles.generation.publisher import Publisher
from battles.generation.records import (
    Beat,
    Ending,
    pane_html,
    replies_claim,
    reply_messages,
    reply_record_end,
    reply_settle,
)
from battles.models import Reply
from core.db import DatabaseThreads
from llm_providers.client import ChatStream, ProviderError, Timeouts

log = logging.getLogger(__name__)

INTERRUPTED = (
    "interrupted",
    "The arena restarted before this answer was finished. Retry this side.",
)


def stop_key(turn_id: int) -> str:
    return f"stop:{turn_id}"


class ReplyRun:
    def __init__(self, reply: Reply, messages: list[dict], start_pane: str):
        self.reply = reply
        self.stream_key = reply.turn.stream_key()
        self.stop_key = stop_key(reply.turn_id)
        self.stream = ChatStream(
            reply.model.endpoint(),
            messages,
            on_delta=self._on_delta,
            # The "streaming" pane goes out while the model thinks, not before the request.
            on_sent=lambda: self._publisher.queue(self.stream_key, self._pane, start_pane),
            timeouts=Timeouts(
                connect=settings.LLM_TIMEOUT_CONNECT,
                first_token=settings.LLM_TIMEOUT_FIRST_TOKEN,
                idle=settings.LLM_TIMEOUT_IDLE,
                total=settings.LLM_TIMEOUT_TOTAL,
            ),
            max_retries=settings.LLM_MAX_RETRIES,
        )
        self._pane = f"pane-{reply.side}"
        self._delta = f"delta-{reply.side}"
        self._unsent: list[str] = []
        self._first_sent = False
        self._checkpointed = self._beating = 0  # pieces of text the last checkpoint saw
        self._interrupted = False
        self._publisher: Publisher

    @classmethod
    def claim(cls, reply_id: int) -> "ReplyRun | None":
        """Claim the reply; None if it is not ours to generate (see replies_claim)."""
        replies = replies_claim([reply_id])
        return cls.of(replies[0]) if replies else None

    @classmethod
    def of(cls, reply: Reply) -> "ReplyRun":
        """The run of a reply just claimed: its side's history and its "streaming" pane."""
        return cls(reply, reply_messages(reply), pane_html(reply))

    @property
    def reply_id(self) -> int:
        return self.reply.pk

    def stop(self) -> None:
        """The visitor asked to stop: the reply ends with its text so far (in the loop)."""
        self.stream.stop()

    def interrupt(self) -> None:
        """The process is going away: the reply ends now, failed, with its text so far."""
        self._interrupted = True
        self.stream.stop()

    async def run(self, *, publisher: Publisher, db: DatabaseThreads) -> Ending:
        """Stream the reply, then end it. Never raises but for cancellation."""
        self._publisher = publisher
        try:
            ending = await self._stream()
        except Exception as exc:
            log.exception("reply %s: unexpected failure", self.reply_id)
            ending = Ending.of_error(
                ProviderError(
                    "internal",
                    "Something went wrong on our side.",
                    retryable=False,
                    detail=repr(exc),
                ),
                partial=self.stream.text,
            )
        await self._end(ending, db)
        return ending

    async def _stream(self) -> Ending:
        try:
            result = await self.stream.run()
        except ProviderError as exc:
            return Ending.of_error(exc, partial=self.stream.text)
        if self._interrupted:
            code, message = INTERRUPTED
            error = ProviderError(code, message, retryable=False, detail="worker shutdown")
            return Ending.of_error(error, partial=result.text)
        return Ending.of_result(result)

    async def _end(self, ending: Ending, db: DatabaseThreads) -> None:
        """Final pane, then the row, then maybe the turn's end: in this order a turn-end event
        (sent once every reply of the turn has ended in the database) always follows the
        final pane of both sides in the stream."""
        self._publisher.take(self)  # the last deltas go out before the final pane
        try:
            pane = await db.run(reply_settle, self.reply, ending)
            await self._send(self._pane, pane)
            if await db.run(reply_record_end, self.reply, ending):
                await self._send("turn-end", "")
        except Exception:
            # The database is away: the row still says streaming, and with no heartbeat left
            # the reaper fails it once the database is back.
            log.exception("reply %s: its end could not be recorded", self.reply_id)

    async def _send(self, name: str, data: str) -> None:
        try:
            await self._publisher.send(self.stream_key, name, data)
        except Exception as exc:
            # The hub is down: the database still records the end; pages read it from there.
            log.warning("reply %s: %s not published: %s", self.reply_id, name, exc)

    def _on_delta(self, text: str) -> None:
        self._unsent.append(text)
        # The first token goes out at once; later text waits for the publisher's next batch.
        self._publisher.deltas_waiting(self, soon=not self._first_sent)

    def take_deltas(self) -> tuple[str, str, str] | None:
        if not self._unsent:
            return None
        # Deltas are swapped into the page as HTML: escape them (the final pane is sanitised
        # markdown, rendered by core.markdown).
        text = html.escape("".join(self._unsent), quote=False)
        self._unsent.clear()
        self._first_sent = True
        return (self.stream_key, self._delta, text)

    def beat(self) -> Beat:
        """This reply's next checkpoint (its text only if more arrived since the last)."""
        self._beating = len(self.stream.parts)
        text = self.stream.text if self._beating != self._checkpointed else None
        return Beat(self.reply_id, self.reply.attempt, text)

    def checkpointed(self) -> None:
        """The last beat is in the database."""
        self._checkpointed = self._beating
