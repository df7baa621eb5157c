"""Running the stream client from a test's thread, as the generation loop runs it."""

from __future__ import annotations

from typing import Any

from core import loop
from llm_providers.client import ChatStream, Endpoint, StreamResult


def run(call: ChatStream, timeout: float = 60) -> StreamResult:
    """Run the call in the process's loop and wait for its result (or its error)."""
    return loop.submit(call.run()).result(timeout)


def chat_stream(endpoint: Endpoint, messages: list[dict[str, Any]], **kwargs: Any) -> StreamResult:
    return run(ChatStream(endpoint, messages, **kwargs))
