"""Generating replies: claim, stream from the model into the hub, checkpoint, finish; and
the reaper for replies whose worker died.

- `run.py`: `ReplyRun`, one reply from its claim to its end (the one teardown);
- `runner.py`: `ReplyRunner`, every reply of a process in its one event loop (slots, stop
  flags, checkpoints, warm shutdown); `reply_generate` is what the task calls;
- `publisher.py`: the hub writes of all those replies, a batch at a time;
- `records.py`: the database side (claim, history, checkpoints, the end, the pane);
- `control.py`: what the battle services ask (enqueue, reset a stream, stop a turn);
- `reaper.py`: replies whose heartbeat stopped, replies nobody picked up.
"""

from battles.generation.control import replies_enqueue, turn_stop_request, turn_stream_reset
from battles.generation.reaper import replies_reap
from battles.generation.records import pane_html
from battles.generation.runner import replies_drain, replies_stop_taking, reply_generate

__all__ = [
    "pane_html",
    "replies_drain",
    "replies_enqueue",
    "replies_reap",
    "replies_stop_taking",
    "reply_generate",
    "turn_stop_request",
    "turn_stream_reset",
]
