"""A local OpenAI-compatible LLM server for tests, demos and benchmarks (no Django import)."""

from llm_providers.testing.server import (
    MODELS,
    Behaviour,
    TestLLMServer,
    create_app,
    generate_text,
    requests_log,
    reset,
    resolve_behaviour,
    running_server,
    serve,
    tokenize,
)

__all__ = [
    "MODELS",
    "Behaviour",
    "TestLLMServer",
    "create_app",
    "generate_text",
    "requests_log",
    "reset",
    "resolve_behaviour",
    "running_server",
    "serve",
    "tokenize",
]
