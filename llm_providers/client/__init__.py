"""The one place the project talks to models: OpenAI-compatible chat completions on the
official `openai` SDK. No Django import, so benchmarks and other tools can use it directly.

- `base.py`: what a call takes and gives (`Endpoint`, `Timeouts`, `StreamResult`) and the
  typed errors (`ProviderTransientError` is retried before the first token,
  `ProviderPermanentError` is not), each with a plain message for visitors;
- `stream.py`: `ChatStream`, a streamed completion run as a coroutine in the process's loop;
- `complete.py`: blocking calls: `chat_complete`, `connection_test`, `moderation_check`;
- `classify.py`: which error an SDK failure is, and the retry delays;
- `sdk.py`: the SDK imported on first use, the kept clients, `warm_up`.
"""

from llm_providers.client.base import (
    MESSAGES,
    Endpoint,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    StreamResult,
    Timeouts,
)
from llm_providers.client.complete import (
    Moderation,
    chat_complete,
    connection_test,
    moderation_check,
)
from llm_providers.client.sdk import openai, warm_up
from llm_providers.client.stream import ChatStream

__all__ = [
    "MESSAGES",
    "ChatStream",
    "Endpoint",
    "Moderation",
    "ProviderError",
    "ProviderPermanentError",
    "ProviderTransientError",
    "StreamResult",
    "Timeouts",
    "chat_complete",
    "connection_test",
    "moderation_check",
    "openai",
    "warm_up",
]
