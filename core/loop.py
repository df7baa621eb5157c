"""The process's event loop for background network work, in one thread of its own.

Every reply a process generates is streamed, published and watched here (battles.generation):
waiting on a model costs a coroutine, not a thread, so the replies a process can hold at once
are bounded by memory and a setting, not by a thread pool. Plain Python, no Django import.
"""

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

THREAD_NAME = "arena-loop"

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_lock = threading.Lock()


def get_loop() -> asyncio.AbstractEventLoop:
    """The running loop (uvloop where it is installed), started on first use and again in a
    forked child, whose copy of the parent's loop has no thread to run it."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            try:
                import uvloop
            except ImportError:
                loop = asyncio.new_event_loop()
            else:
                loop = uvloop.new_event_loop()
            threading.Thread(target=loop.run_forever, name=THREAD_NAME, daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def submit(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run a coroutine in the loop; the caller's thread may wait on the future it gets."""
    return asyncio.run_coroutine_threadsafe(coroutine, get_loop())
