"""Session fixtures running the project's test LLM server on a free port.

The keyless `llm_server` fixture lives in the root conftest.py; this one adds a server that
requires an API key. No database is involved.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from llm_providers.testing import running_server


@pytest.fixture(scope="session")
def llm_server_with_key() -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a test LLM server that requires that key."""
    api_key = f"sk-test-{secrets.token_hex(12)}"
    with running_server(api_key=api_key) as base_url:
        yield base_url, api_key
