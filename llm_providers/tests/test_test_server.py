"""The test LLM server itself, spoken to over raw HTTP like any OpenAI-compatible client would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from llm_providers.testing import requests_log, reset, running_server, tokenize


@pytest.fixture
def prompt(request: pytest.FixtureRequest) -> str:
    # A prompt unique to the test keeps the shared server's fail_times counters and log apart.
    return f"Tell me about {request.node.name}"


def chat(base_url: str, model: str, content: str, **body: Any) -> httpx2.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return httpx2.post(f"{base_url}/chat/completions", json=payload, timeout=10)


def reply(base_url: str, model: str, content: str, **body: Any) -> str:
    response = chat(base_url, model, content, **body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def sse_events(base_url: str, model: str, content: str, **body: Any) -> list[str]:
    """The `data:` payloads of a streamed answer, in order."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        **body,
    }
    with httpx2.stream("POST", f"{base_url}/chat/completions", json=payload, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    assert raw.endswith("\n\n")
    return [block.removeprefix("data: ") for block in raw.split("\n\n") if block]


def test_it_answers_the_same_request_with_the_same_text(llm_server: str, prompt: str):
    first = reply(llm_server, "alpha", prompt)

    assert reply(llm_server, "alpha", prompt) == first
    assert reply(llm_server, "alpha?tps=1000", prompt) == first  # knobs do not change the text
    assert reply(llm_server, "beta", prompt) != first
    assert reply(llm_server, "alpha", prompt + "!") != first


def test_it_writes_markdown_and_code_when_the_prompt_asks_for_code(llm_server: str):
    text = reply(llm_server, "alpha?tokens=400", "Write some Python code for me")

    assert "```python\n" in text
    assert "**" in text
    assert "\n- " in text
    assert "```" not in reply(llm_server, "alpha?tokens=400", "Tell me a story")


def test_it_streams_openai_chunks_with_usage_then_done(llm_server: str, prompt: str):
    events = sse_events(
        llm_server, "alpha?tokens=12", prompt, stream_options={"include_usage": True}
    )

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert "".join(contents) == reply(llm_server, "alpha?tokens=12", prompt)
    assert len(contents) == 12
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": len(prompt.split()),
        "completion_tokens": 12,
        "total_tokens": len(prompt.split()) + 12,
    }


def test_it_sends_no_usage_chunk_unless_asked(llm_server: str, prompt: str):
    events = sse_events(llm_server, "alpha?tokens=5", prompt)

    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_it_cuts_the_reply_at_max_tokens(llm_server: str, prompt: str):
    response = chat(llm_server, "alpha?tokens=50", prompt, max_tokens=8)

    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(tokenize(body["choices"][0]["message"]["content"])) == 8
    assert body["usage"]["completion_tokens"] == 8


def test_it_paces_tokens_by_ttft_and_tps(llm_server: str, prompt: str):
    payload = {"model": "alpha?ttft=0.3&tps=20&tokens=5", "stream": True}
    payload["messages"] = [{"role": "user", "content": prompt}]
    arrivals = []
    started = time.monotonic()
    with httpx2.stream("POST", f"{llm_server}/chat/completions", json=payload) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                arrivals.append(time.monotonic() - started)

    assert len(arrivals) == 5
    # The lower bounds are the pacing (the first token waits ttft; four gaps of 50 ms); the
    # upper bounds only rule out a wait of another order, so a busy machine does not fail them.
    assert 0.3 <= arrivals[0] < 2.0
    assert 0.2 - 0.05 <= arrivals[-1] - arrivals[0] < 2.0


def test_it_lists_a_few_models(llm_server: str):
    response = httpx2.get(f"{llm_server}/models")

    body = response.json()
    assert body["object"] == "list"
    assert {"test-model", "alpha", "beta"} <= {model["id"] for model in body["data"]}


def test_it_echoes_the_messages_it_received(llm_server: str):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second"},
    ]
    response = httpx2.post(
        f"{llm_server}/chat/completions", json={"model": "alpha?echo=1", "messages": messages}
    )

    assert json.loads(response.json()["choices"][0]["message"]["content"]) == messages


def test_a_directive_in_the_prompt_overrides_the_model_knobs(llm_server: str, prompt: str):
    assert chat(llm_server, "alpha?fault=500", prompt).status_code == 500
    assert (
        chat(llm_server, "alpha?fault=500", f"{prompt} [[llmtest fault=none]]").status_code == 200
    )
    assert chat(llm_server, "alpha", f"[[llmtest fault=404]] {prompt}").status_code == 404


def test_a_directive_scoped_to_a_model_leaves_other_models_alone(llm_server: str, prompt: str):
    text = f"{prompt} [[llmtest model=alpha fault=500]] [[llmtest model=beta tokens=3]]"

    assert chat(llm_server, "alpha-large", text).status_code == 500
    assert len(tokenize(reply(llm_server, "beta", text))) == 3
    assert len(tokenize(reply(llm_server, "gamma?tokens=9", text))) == 9


def test_directives_do_not_change_the_text(llm_server: str, prompt: str):
    plain = reply(llm_server, "alpha?tokens=20", prompt)

    assert reply(llm_server, "alpha", f"{prompt} [[llmtest tokens=20]]") == plain


def test_fail_times_fails_only_the_first_identical_requests(llm_server: str, prompt: str):
    model = "alpha?fault=500&fail_times=2"

    statuses = [chat(llm_server, model, prompt).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]
    assert chat(llm_server, model, prompt + " (another request)").status_code == 500


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("429", 429, "rate_limit_exceeded"),
        ("500", 500, None),
        ("401", 401, "invalid_api_key"),
        ("404", 404, "model_not_found"),
        ("context_length", 400, "context_length_exceeded"),
    ],
)
def test_error_faults_answer_in_the_openai_error_shape(
    llm_server: str, fault: str, status: int, code: str | None
):
    response = chat(llm_server, f"alpha?fault={fault}", "hi", stream=True)

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == code


def test_a_429_says_when_to_retry(llm_server: str):
    response = chat(llm_server, "alpha?fault=429&retry_after=2.5", "hi")

    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "2500"


def test_content_filter_refuses_with_its_finish_reason(llm_server: str, prompt: str):
    events = sse_events(llm_server, "alpha?fault=content_filter", prompt)

    chunks = [json.loads(event) for event in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", None, None]
    assert chunks[1]["choices"][0]["delta"]["refusal"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_empty_streams_no_content(llm_server: str, prompt: str):
    events = sse_events(llm_server, "alpha?fault=empty", prompt)

    chunks = [json.loads(event) for event in events[:-1]]
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)
    assert events[-1] == "[DONE]"


def test_malformed_sends_a_chunk_that_is_not_json(llm_server: str, prompt: str):
    events = sse_events(llm_server, "alpha?tokens=6&fault=malformed", prompt)

    broken = []
    for event in events[:-1]:
        try:
            json.loads(event)
        except ValueError:
            broken.append(event)
    assert len(broken) == 1


def test_leak_names_the_model_and_its_org(llm_server: str, prompt: str):
    text = reply(llm_server, "alpha?fault=leak&org=Acme%20AI", prompt)

    assert text.startswith("I am alpha, made by Acme AI. ")


def test_broken_stream_drops_the_connection_after_some_tokens(llm_server: str, prompt: str):
    payload = {
        "model": "alpha?tokens=10&fault=broken_stream",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    received = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        httpx2.stream("POST", f"{llm_server}/chat/completions", json=payload) as response,
    ):
        for line in response.iter_lines():
            received.append(line)

    assert any('"content": "' in line for line in received[1:])
    assert not any("[DONE]" in line for line in received)


@pytest.mark.parametrize("fault", ["hang", "hang_mid"])
def test_hang_faults_go_silent(llm_server: str, prompt: str, fault: str):
    payload = {
        "model": f"alpha?tokens=10&fault={fault}",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    received = []
    with (
        pytest.raises(httpx2.ReadTimeout),
        httpx2.stream(
            "POST", f"{llm_server}/chat/completions", json=payload, timeout=0.3
        ) as response,
    ):
        for line in response.iter_lines():
            received.append(line)

    assert bool(received) is (fault == "hang_mid")


def test_an_unknown_knob_is_a_bad_request(llm_server: str):
    response = chat(llm_server, "alpha?speed=9", "hi")

    assert response.status_code == 400
    assert "speed" in response.json()["error"]["message"]
    assert chat(llm_server, "alpha?fault=explode", "hi").status_code == 400


def test_it_logs_requests_without_the_authorization_value(llm_server_with_key: tuple[str, str]):
    base_url, api_key = llm_server_with_key
    reset(base_url)
    headers = {"Authorization": f"Bearer {api_key}", "X-Trace": "abc"}
    httpx2.post(
        f"{base_url}/chat/completions",
        headers=headers,
        json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.5},
    )

    [entry] = requests_log(base_url)
    assert entry["model"] == "alpha"
    assert entry["messages"] == [{"role": "user", "content": "hi"}]
    assert entry["params"] == {"top_p": 0.5}
    assert entry["headers"]["x-trace"] == "abc"
    assert entry["headers"]["authorization"] == "[redacted]"
    assert api_key not in json.dumps(entry)

    reset(base_url)
    assert requests_log(base_url) == []


def test_it_requires_the_configured_api_key(llm_server_with_key: tuple[str, str]):
    base_url, api_key = llm_server_with_key

    missing = httpx2.get(f"{base_url}/models")
    wrong = httpx2.get(f"{base_url}/models", headers={"Authorization": "Bearer nope"})
    right = httpx2.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] == "invalid_api_key"


def test_reset_clears_fail_times_counters(llm_server: str, prompt: str):
    model = "alpha?fault=500&fail_times=1"
    assert chat(llm_server, model, prompt).status_code == 500
    assert chat(llm_server, model, prompt).status_code == 200

    reset(llm_server)

    assert chat(llm_server, model, prompt).status_code == 500


def test_it_serves_hundreds_of_concurrent_streams(llm_server: str):
    # 200 streams of 10 tokens at 20 tokens/s take about 0.5 s each: 100 s one after another,
    # a few seconds when they really run concurrently (client and server share this process);
    # the bound is half the serial time, so a busy machine does not fail it.
    async def one(client: httpx2.AsyncClient, index: int) -> int:
        payload = {
            "model": "alpha?tokens=10&tps=20",
            "messages": [{"role": "user", "content": f"stream {index}"}],
            "stream": True,
        }
        async with client.stream("POST", f"{llm_server}/chat/completions", json=payload) as resp:
            body = (await resp.aread()).decode()
        return body.count('"content": "') - 1  # minus the opening role chunk

    async def all_streams() -> list[int]:
        limits = httpx2.Limits(max_connections=200)
        async with httpx2.AsyncClient(limits=limits, timeout=10) as client:
            return await asyncio.gather(*(one(client, index) for index in range(200)))

    started = time.monotonic()
    counts = asyncio.run(all_streams())

    assert counts == [10] * 200
    assert time.monotonic() - started < 50


def test_running_server_stops_promptly_with_hung_requests_open():
    outcomes: list[object] = []

    def hung_request(base_url: str) -> None:
        payload = {"model": "alpha?fault=hang", "messages": [{"role": "user", "content": "x"}]}
        try:
            outcomes.append(httpx2.post(f"{base_url}/chat/completions", json=payload, timeout=30))
        except httpx2.TransportError as exc:
            outcomes.append(exc)

    with running_server() as base_url:
        client = threading.Thread(target=hung_request, args=(base_url,))
        client.start()
        while not requests_log(base_url):
            time.sleep(0.01)
        started = time.monotonic()

    # A hung request would hold the server until the client's 30-s timeout.
    assert time.monotonic() - started < 15
    client.join(timeout=5)
    assert outcomes, "the hung client was not let go"


def test_it_runs_as_a_module_on_the_command_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "llm_providers.testing", "--port", str(port), "--tps", "0"]
    process = subprocess.Popen(command, cwd=root, env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx2.TransportError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert chat(f"http://127.0.0.1:{port}/v1", "alpha?tokens=3", "hi").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
