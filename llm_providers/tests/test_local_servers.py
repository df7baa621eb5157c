"""Which catalog entries `make run` serves itself, and on which ports (no server started)."""

import pytest

from llm_providers import local


def entry(url: str, model: str) -> dict:
    return {"base_url": url, "model": model}


def test_only_bundled_models_on_this_machine_get_a_server():
    servers = local.local_servers(
        [
            entry("http://127.0.0.1:8089/v1", "smollm2-135m-instruct"),
            entry("http://localhost:8092/v1", "gemma-3-270m"),
            entry("http://localhost:11434/v1", "llama3.1:8b"),  # the user's own Ollama
            entry("http://gpu-box:8089/v1", "smollm2-135m-instruct"),  # another machine
        ]
    )
    assert servers == {8089: "smollm2-135m-instruct", 8092: "gemma-3-270m"}


def test_entries_of_one_model_may_share_a_port_but_two_models_may_not():
    same = [entry("http://127.0.0.1:8089/v1", "smollm2-135m-instruct")] * 2
    assert local.local_servers(same) == {8089: "smollm2-135m-instruct"}
    with pytest.raises(local.LocalModelError, match="port 8089 is given to two local models"):
        local.local_servers([*same, entry("http://127.0.0.1:8089/v1", "gemma-3-270m")])
