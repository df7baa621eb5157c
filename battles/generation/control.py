"""What the battle services ask of generation: start replies, restart a turn's stream, stop
a turn. Tasks are enqueued by name (core.dispatch), so nothing here imports them."""

from battles.generation.run import stop_key
from battles.generation.runner import GENERATE_TASK
from battles.models import Turn
from core.dispatch import enqueue_many
from core.hub import get_hub


def replies_enqueue(reply_ids: list[int]) -> None:
    """Generate these replies once the current transaction commits: one task for all of them
    (a turn's two sides), so the broker, the web and the worker handle one message, not one
    per reply (Celery's own work per message was a large share of both processes' CPU:
    benchmarks/load/README.md)."""
    if reply_ids:
        enqueue_many(GENERATE_TASK, [tuple(reply_ids)])


def turn_stream_reset(turn: Turn) -> None:
    """Start the turn's event stream afresh for a retry or regenerate.

    The page then opens a new stream; replaying the old one would end it at the old turn-end.
    A stop requested earlier must not stop the new answers either. Tasks are enqueued on
    commit, so nothing new is published before this.
    """
    hub = get_hub()
    hub.discard(turn.stream_key())
    hub.clear_flag(stop_key(turn.pk))


def turn_stop_request(turn: Turn) -> None:
    """Ask the turn's running replies to stop (they see it within a quarter of a second)."""
    get_hub().set_flag(stop_key(turn.pk))
