"""The streaming client against the real test LLM server, over real HTTP (nothing mocked)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import openai._base_client as sdk_base
import pytest

from core import loop
from llm_providers.client import (
    MESSAGES,
    ChatStream,
    Endpoint,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    StreamResult,
    Timeouts,
    chat_complete,
    connection_test,
)
from llm_providers.testing import generate_text, requests_log
from llm_providers.tests.streams import chat_stream, run

FAST_RETRY = {"backoff": 0.01}


@pytest.fixture
def prompt(request: pytest.FixtureRequest) -> str:
    # A prompt unique to the test keeps the shared server's fail_times counters and log apart.
    return f"Tell me about {request.node.name}"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def stream(base_url: str, model: str, text: str, **kwargs: Any) -> tuple[StreamResult, list[str]]:
    deltas: list[str] = []
    result = chat_stream(Endpoint(base_url, model), user(text), on_delta=deltas.append, **kwargs)
    return result, deltas


def failure(base_url: str, model: str, text: str, **kwargs: Any) -> tuple[ProviderError, float]:
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        stream(base_url, model, text, **kwargs)
    return info.value, time.monotonic() - started


def requests_for(base_url: str, text: str) -> list[dict[str, Any]]:
    return [r for r in requests_log(base_url) if text in json.dumps(r["messages"])]


def test_it_streams_deltas_in_order_that_join_to_the_full_text(llm_server: str, prompt: str):
    result, deltas = stream(llm_server, "alpha?tokens=30&tps=500", prompt)

    assert len(deltas) == 30
    assert "".join(deltas) == result.text == generate_text("alpha", prompt, 30)
    assert result.finish_reason == "stop"
    assert (result.retries, result.stopped) == (0, False)


def test_it_reports_token_counts_from_the_usage_chunk(llm_server: str, prompt: str):
    result, _ = stream(llm_server, "alpha?tokens=25", prompt)

    assert result.prompt_tokens == len(prompt.split())
    assert result.completion_tokens == 25


def test_it_measures_time_to_first_token_and_latency(llm_server: str, prompt: str):
    # 0.3 s before the first token, then 5 more tokens 50 ms apart.
    result, _ = stream(llm_server, "alpha?ttft=0.3&tps=20&tokens=6", prompt)

    assert result.ttft_ms is not None
    assert 300 <= result.ttft_ms < 700
    assert 300 + 250 <= result.latency_ms < 1200


def test_it_sends_the_history_and_sampling_parameters(llm_server: str, prompt: str):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "An earlier answer."},
        {"role": "user", "content": "And a follow-up?"},
    ]
    endpoint = Endpoint(llm_server, "alpha?echo=1", temperature=0.3, top_p=0.9, max_tokens=99)

    result = chat_stream(endpoint, history, on_delta=lambda _: None)

    assert json.loads(result.text) == history
    [logged] = requests_for(llm_server, prompt)
    assert logged["params"]["temperature"] == 0.3
    assert logged["params"]["top_p"] == 0.9
    assert logged["params"]["max_tokens"] == 99
    assert logged["params"]["stream_options"] == {"include_usage": True}


def test_it_sends_stop_strings_and_the_models_extra_request_fields(llm_server: str, prompt: str):
    endpoint = Endpoint(
        llm_server,
        "alpha?tokens=3",
        stop=("\nQuestion:",),
        extra_body={"repeat_penalty": 1.2, "seed": 7},
    )

    chat_stream(endpoint, user(prompt), on_delta=lambda _: None)

    [logged] = requests_for(llm_server, prompt)
    assert logged["params"]["stop"] == ["\nQuestion:"]
    assert (logged["params"]["repeat_penalty"], logged["params"]["seed"]) == (1.2, 7)


def test_it_stops_at_max_tokens_with_finish_reason_length(llm_server: str, prompt: str):
    endpoint = Endpoint(llm_server, "alpha?tokens=50", max_tokens=7)
    deltas: list[str] = []

    result = chat_stream(endpoint, user(prompt), on_delta=deltas.append)

    assert len(deltas) == 7
    assert result.finish_reason == "length"
    assert result.completion_tokens == 7


@pytest.mark.parametrize(
    ("fault", "error_class", "code"),
    [
        ("429&retry_after=0", ProviderTransientError, "rate_limited"),
        ("500", ProviderTransientError, "server_error"),
        ("401", ProviderPermanentError, "auth"),
        ("404", ProviderPermanentError, "model_not_found"),
        ("context_length", ProviderPermanentError, "context_too_long"),
        ("content_filter", ProviderPermanentError, "content_refused"),
        ("empty", ProviderPermanentError, "empty"),
    ],
)
def test_each_fault_becomes_a_typed_error_with_a_plain_message(
    llm_server: str, prompt: str, fault: str, error_class: type[ProviderError], code: str
):
    error, _ = failure(llm_server, f"alpha?tokens=10&fault={fault}", prompt, max_retries=0)

    assert type(error) is error_class
    assert error.code == code
    assert error.retryable is (error_class is ProviderTransientError)
    assert error.message == str(error) == MESSAGES[code]
    assert error.detail
    assert error.partial_text == ""


@pytest.mark.parametrize(
    ("fault", "code"), [("broken_stream", "broken_stream"), ("malformed", "malformed")]
)
def test_a_stream_failing_after_the_first_token_is_final_and_keeps_the_partial_text(
    llm_server: str, prompt: str, fault: str, code: str
):
    error, _ = failure(llm_server, f"alpha?tokens=20&fault={fault}", prompt, max_retries=2)

    assert isinstance(error, ProviderPermanentError)
    assert (error.code, error.retryable, error.retries) == (code, False, 0)
    assert error.partial_text
    assert generate_text("alpha", prompt, 20).startswith(error.partial_text)
    assert len(requests_for(llm_server, prompt)) == 1


def test_it_retries_a_failing_server_until_it_answers(llm_server: str, prompt: str):
    result, _ = stream(
        llm_server, "alpha?tokens=10&fault=500&fail_times=2", prompt, max_retries=2, **FAST_RETRY
    )

    assert result.retries == 2
    assert result.text == generate_text("alpha", prompt, 10)
    assert len(requests_for(llm_server, prompt)) == 3


def test_on_sent_runs_once_before_any_delta_even_across_retries(llm_server: str, prompt: str):
    seen: list[str] = []
    result = chat_stream(
        Endpoint(llm_server, "alpha?tokens=5&ttft=0.2&fault=500&fail_times=1"),
        user(prompt),
        on_delta=lambda text: seen.append("delta"),
        on_sent=lambda: seen.append("sent"),
        max_retries=1,
        **FAST_RETRY,
    )

    assert result.retries == 1
    assert seen[0] == "sent" and seen.count("sent") == 1
    assert seen.count("delta") >= 1


def test_it_gives_up_when_failures_outlast_the_retries(llm_server: str, prompt: str):
    error, _ = failure(
        llm_server, "alpha?tokens=10&fault=500&fail_times=2", prompt, max_retries=1, **FAST_RETRY
    )

    assert isinstance(error, ProviderTransientError)
    assert (error.code, error.retries) == ("server_error", 1)
    assert len(requests_for(llm_server, prompt)) == 2


def test_it_retries_a_429_before_the_first_token_after_the_advertised_wait(
    llm_server: str, prompt: str
):
    model = "alpha?tokens=10&fault=429&fail_times=1&retry_after=0.4"
    result, _ = stream(llm_server, model, prompt, max_retries=2, **FAST_RETRY)

    assert result.retries == 1
    assert result.latency_ms >= 400


def test_it_does_not_retry_a_permanent_error(llm_server: str, prompt: str):
    error, _ = failure(llm_server, "alpha?fault=404", prompt, max_retries=2, **FAST_RETRY)

    assert error.code == "model_not_found"
    assert len(requests_for(llm_server, prompt)) == 1


def test_it_gives_up_on_a_server_that_never_sends_a_byte(llm_server: str, prompt: str):
    error, elapsed = failure(
        llm_server, "alpha?fault=hang", prompt, max_retries=0, timeouts=Timeouts(first_token=0.5)
    )

    assert isinstance(error, ProviderTransientError)
    assert error.code == "timeout"
    assert 0.45 <= elapsed < 1.0


def test_it_retries_a_slow_first_token_then_gives_up(llm_server: str, prompt: str):
    error, elapsed = failure(
        llm_server,
        "alpha?ttft=5",
        prompt,
        max_retries=1,
        timeouts=Timeouts(first_token=0.3),
        **FAST_RETRY,
    )

    assert (error.code, error.retries) == ("timeout", 1)
    assert 0.6 <= elapsed < 1.2
    assert len(requests_for(llm_server, prompt)) == 2


def test_it_gives_up_on_a_stream_that_stalls_mid_answer(llm_server: str, prompt: str):
    error, elapsed = failure(
        llm_server,
        "alpha?tokens=20&fault=hang_mid",
        prompt,
        max_retries=2,
        timeouts=Timeouts(idle=0.5),
    )

    assert isinstance(error, ProviderPermanentError)
    assert error.code == "hang"
    assert error.partial_text
    assert 0.45 <= elapsed < 1.0
    assert len(requests_for(llm_server, prompt)) == 1


def test_it_enforces_the_total_time_limit_on_a_slow_stream(llm_server: str, prompt: str):
    error, elapsed = failure(
        llm_server, "alpha?tokens=200&tps=40", prompt, timeouts=Timeouts(total=0.5)
    )

    assert isinstance(error, ProviderPermanentError)
    assert error.code == "timeout"
    assert error.partial_text
    assert 0.45 <= elapsed < 0.9


def test_it_stops_mid_stream_when_asked(llm_server: str, prompt: str):
    deltas: list[str] = []
    started = time.monotonic()

    def on_delta(text: str) -> None:
        deltas.append(text)
        if len(deltas) == 3:
            call.stop()

    call = ChatStream(
        Endpoint(llm_server, "alpha?tokens=100&tps=50"), user(prompt), on_delta=on_delta
    )
    result = run(call)

    assert result.stopped
    assert result.finish_reason is None
    assert 3 <= len(deltas) < 10
    assert result.text == "".join(deltas)
    assert generate_text("alpha", prompt, 100).startswith(result.text)
    assert time.monotonic() - started < 0.5


def test_it_stops_while_still_waiting_for_the_first_token(llm_server: str, prompt: str):
    started = time.monotonic()
    deltas: list[str] = []
    call = ChatStream(Endpoint(llm_server, "alpha?ttft=5"), user(prompt), on_delta=deltas.append)
    process_loop = loop.get_loop()
    process_loop.call_soon_threadsafe(process_loop.call_later, 0.2, call.stop)

    result = run(call)

    assert result.stopped
    assert (result.text, deltas) == ("", [])
    assert time.monotonic() - started < 0.5


def test_a_stop_during_the_wait_before_a_retry_ends_it_at_once(llm_server: str, prompt: str):
    started = time.monotonic()
    call = ChatStream(
        Endpoint(llm_server, "alpha?fault=500"),
        user(prompt),
        on_delta=lambda _: None,
        max_retries=2,
        backoff=5.0,  # the retry would wait seconds
    )
    process_loop = loop.get_loop()
    process_loop.call_soon_threadsafe(process_loop.call_later, 0.3, call.stop)

    result = run(call)

    assert result.stopped and result.text == ""
    assert len(requests_for(llm_server, prompt)) == 1
    assert time.monotonic() - started < 1.0


def test_it_reports_a_rejected_key_without_revealing_it(llm_server_with_key: tuple[str, str]):
    base_url, _ = llm_server_with_key
    wrong_key = "sk-wrong-0123456789abcdef"
    # The server echoes the key it was given, as careless providers do...
    raw = httpx2.post(
        f"{base_url}/chat/completions",
        json={"model": "alpha", "messages": user("hi")},
        headers={"Authorization": f"Bearer {wrong_key}"},
    )
    assert wrong_key in raw.text

    # ...so only the client's scrubbing keeps it out of what gets shown and logged.
    with pytest.raises(ProviderPermanentError) as info:
        chat_stream(
            Endpoint(base_url, "alpha", api_key=wrong_key), user("hi"), on_delta=lambda _: None
        )
    error = info.value
    assert error.code == "auth"
    assert error.message == "The provider rejected the API key."
    assert "401" in error.detail
    for shown in (error.message, error.detail, str(error), repr(error)):
        assert wrong_key not in shown


def test_it_sends_the_right_key_as_a_bearer_token(llm_server_with_key: tuple[str, str]):
    base_url, api_key = llm_server_with_key

    result = chat_stream(
        Endpoint(base_url, "alpha?tokens=5", api_key=api_key), user("hi"), on_delta=lambda _: None
    )

    assert result.completion_tokens == 5


def test_it_reports_an_unreachable_server_as_a_transient_connection_error(prompt: str):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    error, _ = failure(f"http://127.0.0.1:{port}/v1", "alpha", prompt, max_retries=1, **FAST_RETRY)

    assert isinstance(error, ProviderTransientError)
    assert (error.code, error.retries) == ("connection", 1)
    assert "127.0.0.1" not in error.message


def test_streams_share_the_process_loop_and_every_callback_runs_in_its_thread(
    llm_server: str, prompt: str
):
    calls = 8
    results: dict[int, StreamResult] = {}
    delta_threads: set[str] = set()
    sent_in: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = chat_stream(
            Endpoint(llm_server, "alpha?tokens=20&tps=200&ttft=0.05"),
            user(f"{prompt} {i}"),
            on_delta=lambda _: delta_threads.add(threading.current_thread().name),
            on_sent=lambda: sent_in.__setitem__(i, threading.current_thread().name),
        )

    threads = [threading.Thread(target=call, args=(i,), name=f"caller-{i}") for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == list(range(calls))
    for i, result in results.items():
        assert result.text == generate_text("alpha", f"{prompt} {i}", 20)
    assert delta_threads == {loop.THREAD_NAME}
    assert sent_in == dict.fromkeys(range(calls), loop.THREAD_NAME)


def test_replies_to_one_endpoint_reuse_its_connection(llm_server: str, prompt: str):
    endpoint = Endpoint(llm_server, "alpha?tokens=3", api_key=f"{prompt}-key")  # its own client
    for i in range(3):
        chat_stream(endpoint, user(f"{prompt} {i}"), on_delta=lambda _: None)

    clients = {tuple(r["client"]) for r in requests_for(llm_server, prompt)}
    assert len(requests_for(llm_server, prompt)) == 3
    assert len(clients) == 1  # one kept connection: no new handshake per reply


def test_a_streamed_reply_draws_no_random_key(llm_server: str, prompt: str, monkeypatch):
    # The SDK would draw a uuid4 per request for an idempotency key it does not send.
    def drawn():
        raise AssertionError("uuid4 drawn for a streamed reply")

    endpoint = Endpoint(llm_server, "alpha?tokens=3", api_key=f"{prompt}-key")  # its own client
    monkeypatch.setattr(sdk_base, "uuid", SimpleNamespace(uuid4=drawn))

    result = chat_stream(endpoint, user(prompt), on_delta=lambda _: None)

    assert result.text == generate_text("alpha", prompt, 3)
    [request] = requests_for(llm_server, prompt)
    assert "idempotency-key" not in request["headers"]


def test_a_failing_on_sent_closes_the_stream_and_raises_in_the_caller(llm_server: str, prompt: str):
    deltas: list[str] = []

    def on_sent() -> None:
        raise RuntimeError("page not published")

    with pytest.raises(RuntimeError, match="page not published"):
        chat_stream(
            Endpoint(llm_server, "alpha?tokens=50&tps=100&ttft=0.05"),
            user(prompt),
            on_delta=deltas.append,
            on_sent=on_sent,
        )
    time.sleep(0.3)
    assert deltas == []  # the gate held every delta back, and the stream was closed


def test_a_failing_on_delta_ends_the_stream_with_its_error(llm_server: str, prompt: str):
    started = time.monotonic()

    def on_delta(text: str) -> None:
        raise RuntimeError("hub unreachable")

    with pytest.raises(RuntimeError, match="hub unreachable"):
        chat_stream(
            Endpoint(llm_server, "alpha?tokens=100&tps=20&ttft=0"), user(prompt), on_delta=on_delta
        )
    assert time.monotonic() - started < 1.0  # not the 5 s the model would take


def test_a_server_that_drops_the_connection_is_a_connection_error_not_a_timeout(prompt: str):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def drop_connections() -> None:
        for _ in range(2):  # the attempt and its retry
            connection, _ = listener.accept()
            connection.recv(65536)
            connection.close()  # no status line: the server went away

    dropper = threading.Thread(target=drop_connections, daemon=True)
    dropper.start()
    try:
        error, elapsed = failure(
            f"http://127.0.0.1:{port}/v1", "alpha", prompt, max_retries=1, **FAST_RETRY
        )
    finally:
        dropper.join(timeout=5)
        listener.close()

    assert isinstance(error, ProviderTransientError)
    assert (error.code, error.retries) == ("connection", 1)
    assert error.message == MESSAGES["connection"]
    assert elapsed < 2


def test_chat_complete_returns_the_same_text_as_the_stream(llm_server: str, prompt: str):
    streamed, _ = stream(llm_server, "alpha?tokens=15", prompt)

    result = chat_complete(Endpoint(llm_server, "alpha?tokens=15"), user(prompt))

    assert result.text == streamed.text
    assert (result.completion_tokens, result.finish_reason, result.stopped) == (15, "stop", False)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("context_length", "context_too_long"),
        ("content_filter", "content_refused"),
        ("malformed", "malformed"),
        ("empty", "empty"),
    ],
)
def test_chat_complete_maps_errors_like_the_stream(
    llm_server: str, prompt: str, fault: str, code: str
):
    with pytest.raises(ProviderPermanentError) as info:
        chat_complete(Endpoint(llm_server, f"alpha?fault={fault}"), user(prompt))

    assert info.value.code == code


def test_chat_complete_retries_a_transient_failure(llm_server: str, prompt: str):
    endpoint = Endpoint(llm_server, "alpha?tokens=5&fault=broken_stream&fail_times=1")

    result = chat_complete(endpoint, user(prompt), max_retries=1, backoff=0.01)

    assert (result.retries, result.completion_tokens) == (1, 5)


def test_connection_test_makes_a_tiny_real_call(llm_server: str, prompt: str):
    ok, latency_ms, message = connection_test(Endpoint(llm_server, f"alpha?ttft=0.1&org={prompt}"))

    assert ok
    assert 100 <= latency_ms < 1000
    assert f"{latency_ms} ms" in message
    [logged] = [r for r in requests_log(llm_server) if prompt in r["model"]]
    assert logged["params"]["max_tokens"] == 4
    assert not logged["stream"]


def test_connection_test_explains_a_failure_plainly(llm_server: str):
    ok, _, message = connection_test(Endpoint(llm_server, "alpha?fault=404"))

    assert not ok
    assert message == "The provider does not know this model."


def test_connection_test_gives_up_within_its_timeout(llm_server: str):
    started = time.monotonic()

    ok, _, message = connection_test(Endpoint(llm_server, "alpha?fault=hang"), timeout=0.5)

    assert not ok
    assert message == MESSAGES["timeout"]
    assert time.monotonic() - started < 1.0


_FIRST_USE = """
import sys, threading
import llm_providers.client as client
assert "openai" not in sys.modules, "the SDK was imported with the client"
errors, barrier = [], threading.Barrier(16)
def touch():
    barrier.wait()
    try:
        assert issubclass(client.openai.APITimeoutError, client.openai.OpenAIError)
        assert client.openai.types.chat.ChatCompletion.__name__ == "ChatCompletion"
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=touch) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert not errors, errors
"""


def test_the_sdk_is_imported_on_first_use_whole_for_threads_arriving_together():
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_USE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
