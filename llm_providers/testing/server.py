"""An OpenAI-compatible chat completions server with deterministic text, latency and faults.

The project's tests, demos and benchmarks talk to it over real HTTP, so the real `openai`
client code path is exercised. It is a raw ASGI app served by uvicorn: hundreds of concurrent
streams cost one coroutine each.

Behaviour is chosen per request by knobs in the model name
(`test-model?ttft=0.2&tps=50&tokens=40&fault=none`) and by directives in the last user message
(`[[llmtest fault=500]]`, optionally scoped: `[[llmtest model=alpha fault=500]]`), which win.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx2
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_N = TypeVar("_N", int, float)

MODELS = ("test-model", "alpha", "beta", "gamma")
FAULTS = frozenset(
    {
        "none",
        "429",
        "500",
        "401",
        "404",
        "context_length",
        "content_filter",
        "hang",
        "hang_mid",
        "broken_stream",
        "malformed",
        "empty",
        "leak",
    }
)
REFUSAL = "I can't help with that."
DEFAULT_ORG = "Example Labs"
LOG_SIZE = 500

_DIRECTIVE = re.compile(r"\[\[llmtest\b([^\]]*)\]\]")
_CODE_WORDS = re.compile(r"\b(code|python|function|script|program|snippet)\b", re.IGNORECASE)
_TOKEN = re.compile(r"\s*\S+")
_VOCABULARY = """
the model answer arena token stream latency prompt vote battle reply quality signal careful
simple clear useful example result method detail context system value measure language
reason question evidence pattern balance choice practice approach problem solution idea step
data test rating pair rank score review outcome honest short long first second better
quickly often rarely always gently every small large brief
"""
_WORDS = _VOCABULARY.split()


class BadKnobError(ValueError):
    """A knob or directive the server does not understand (answered with a 400)."""


class _DroppedConnectionError(Exception):
    """Raised mid-response so uvicorn closes the socket without finishing the body."""


class _QuietDrops(logging.Filter):
    # A deliberate drop is the behaviour under test, not a server bug worth a traceback.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is _DroppedConnectionError)


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass(frozen=True)
class Behaviour:
    ttft: float = 0.0  # seconds before the first content token
    tps: float = 0.0  # tokens per second; 0 means as fast as possible
    tokens: int | None = None  # natural reply length; None derives it from the prompt
    fault: str = "none"
    fail_times: int | None = None  # apply the fault only to the first N identical requests
    echo: bool = False
    org: str = DEFAULT_ORG
    retry_after: float = 1.0  # seconds advertised by a 429


def _apply_knobs(behaviour: Behaviour, knobs: Mapping[str, str]) -> Behaviour:
    changes: dict[str, Any] = {}
    for key, value in knobs.items():
        if key in ("ttft", "tps", "retry_after"):
            changes[key] = max(0.0, _number(key, value, float))
        elif key in ("tokens", "fail_times"):
            changes[key] = max(0, _number(key, value, int))
        elif key == "fault":
            if value not in FAULTS:
                raise BadKnobError(f"unknown fault {value!r}; expected one of {sorted(FAULTS)}")
            changes[key] = value
        elif key == "echo":
            changes[key] = value.lower() in ("1", "true", "yes")
        elif key == "org":
            changes[key] = value
        else:
            raise BadKnobError(f"unknown llmtest knob {key!r}")
    return replace(behaviour, **changes)


def _number(key: str, value: str, kind: Callable[[str], _N]) -> _N:
    try:
        return kind(value)
    except ValueError:
        raise BadKnobError(f"llmtest knob {key}={value!r} is not a number") from None


def split_model(model: str) -> tuple[str, dict[str, str]]:
    """`name?k=v&k=v` → (name, knobs)."""
    name, _, query = model.partition("?")
    return name, dict(parse_qsl(query, keep_blank_values=True))


def _directives(text: str) -> list[dict[str, str]]:
    found = []
    for match in _DIRECTIVE.finditer(text):
        knobs = {}
        for part in match.group(1).split():
            key, sep, value = part.partition("=")
            if not sep:
                raise BadKnobError(f"directive part {part!r} is not key=value")
            knobs[key] = value
        found.append(knobs)
    return found


def resolve_behaviour(
    model: str, last_user_text: str, defaults: Mapping[str, str] | None = None
) -> Behaviour:
    """Server defaults, then model-name knobs, then matching directives (in message order)."""
    behaviour = _apply_knobs(Behaviour(), defaults or {})
    behaviour = _apply_knobs(behaviour, split_model(model)[1])
    for knobs in _directives(last_user_text):
        scope = knobs.pop("model", None)
        if scope is None or model.startswith(scope):
            behaviour = _apply_knobs(behaviour, knobs)
    return behaviour


def tokenize(text: str) -> list[str]:
    """Whitespace-split pieces, each keeping the whitespace before it, so they join back."""
    return _TOKEN.findall(text)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: count only the text parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


def _code_block(rng: random.Random) -> str:
    name = rng.choice(_WORDS)
    factor = rng.randint(2, 9)
    return (
        f"```python\ndef {name}_score(values):\n    return sum(v * {factor} for v in values)\n```"
    )


def generate_text(model: str, prompt: str, tokens: int | None) -> str:
    """Deterministic markdown reply for (model base name, prompt, length in tokens)."""
    seed = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    rng = random.Random(seed)
    wanted = tokens if tokens is not None else rng.randint(40, 120)
    blocks = [_paragraph(rng, rng.randint(2, 3))]
    if _CODE_WORDS.search(prompt):
        blocks.append(_code_block(rng))
    blocks.append(f"**{_sentence(rng)[:-1]}:** {_sentence(rng)}")
    blocks.append("\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(2, 4))))
    text = "\n\n".join(blocks)
    while len(tokenize(text)) < wanted:
        text += "\n\n" + _paragraph(rng, rng.randint(2, 4))
    return "".join(tokenize(text)[:wanted])


def _strip_directives(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def _request_key(model: str, messages: Any) -> str:
    return hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json.dumps(body).encode()


@dataclass
class _Plan:
    """What one chat request will answer, computed before anything is sent."""

    model: str
    fault: str
    behaviour: Behaviour
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int


class TestLLMServer:
    """The ASGI app plus its in-memory state (request log, per-request attempt counters)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        api_key: str | None = None,
        defaults: Mapping[str, str] | None = None,
        log_size: int = LOG_SIZE,
    ) -> None:
        self.api_key = api_key
        self.defaults = dict(defaults or {})
        _apply_knobs(Behaviour(), self.defaults)  # fail at start-up, not on the first request
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.attempts: dict[str, int] = {}
        self._seq = 0
        self._open_requests: set[asyncio.Event] = set()
        self._closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == "/v1/chat/completions" and method == "POST":
            await self._chat(scope, receive, send)
        elif path == "/v1/models" and method == "GET":
            await self._models(scope, send)
        elif path == "/_test/requests" and method == "GET":
            await _send_json(send, 200, {"requests": list(self.log)})
        elif path == "/_test/reset" and method == "POST":
            self.log.clear()
            self.attempts.clear()
            await _send_json(send, 200, {"ok": True})
        else:
            await _send_error(
                send, 404, f"Unknown route {method} {path}", "invalid_request_error", "unknown_url"
            )

    def _auth_error(self, scope: Scope) -> bytes | None:
        if self.api_key is None:
            return None
        given = _header(scope, "authorization")
        if given == f"Bearer {self.api_key}":
            return None
        presented = given.removeprefix("Bearer ") if given else ""
        # Echoes the key in full, as careless providers do, so clients prove they scrub it.
        return _error_body(
            f"Incorrect API key provided: {presented}.", "invalid_request_error", "invalid_api_key"
        )

    async def _models(self, scope: Scope, send: Send) -> None:
        if (error := self._auth_error(scope)) is not None:
            await _send_raw(send, 401, error)
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmtest"} for m in MODELS]
        await _send_json(send, 200, {"object": "list", "data": data})

    def _record(self, scope: Scope, body: Any) -> None:
        self._seq += 1
        headers = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            headers[name] = "[redacted]" if name == "authorization" else raw_value.decode("latin-1")
        params = dict(body) if isinstance(body, dict) else {}
        entry = {
            "seq": self._seq,
            "time": time.time(),
            "model": params.pop("model", None),
            "messages": params.pop("messages", None),
            "stream": bool(params.get("stream")),
            "params": params,
            "headers": headers,
            # The caller's address and port: tells a kept connection from a new one.
            "client": list(scope["client"]) if scope.get("client") else None,
        }
        self.log.append(entry)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except ValueError:
            self._record(scope, None)
            await _send_error(
                send, 400, "The request body is not valid JSON.", "invalid_request_error", None
            )
            return
        self._record(scope, body)
        if (error := self._auth_error(scope)) is not None:
            await _send_raw(send, 401, error)
            return
        try:
            plan = self._plan(body)
        except BadKnobError as exc:
            await _send_error(send, 400, str(exc), "invalid_request_error", "bad_llmtest_knob")
            return
        if await _send_status_fault(send, plan):
            return
        # Set when the client goes away, or by release_all() when the server shuts down.
        disconnected = asyncio.Event()
        self._open_requests.add(disconnected)
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
        try:
            if plan.fault == "hang":
                await disconnected.wait()
            elif body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                await _stream(send, plan, include_usage, disconnected)
            else:
                await _complete(send, plan, disconnected)
        finally:
            watcher.cancel()
            self._open_requests.discard(disconnected)
        if self._closing:
            raise _DroppedConnectionError()  # the quiet way to cut a request short at shutdown

    def release_all(self) -> None:
        """End every open request (hung ones included), so shutdown does not wait on them.

        Call it from the server's event loop.
        """
        self._closing = True
        for event in self._open_requests:
            event.set()

    def _plan(self, body: Any) -> _Plan:
        if not isinstance(body, dict):
            raise BadKnobError("the request body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise BadKnobError("'model' must be a non-empty string")
        if not isinstance(messages, list) or not messages:
            raise BadKnobError("'messages' must be a non-empty list")
        last_user = _last_user_text(messages)
        behaviour = resolve_behaviour(model, last_user, self.defaults)

        fault = behaviour.fault
        if behaviour.fail_times is not None:
            key = _request_key(model, messages)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] > behaviour.fail_times:
                fault = "none"

        base_model = split_model(model)[0]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        finish_reason = "stop"
        if behaviour.echo:
            tokens = tokenize(json.dumps(messages, ensure_ascii=False))
        else:
            text = generate_text(base_model, _strip_directives(last_user), behaviour.tokens)
            if fault == "leak":
                text = f"I am {base_model}, made by {behaviour.org}. {text}"
            tokens = tokenize(text)
            if isinstance(limit, int) and 0 <= limit < len(tokens):
                tokens, finish_reason = tokens[:limit], "length"
        if fault == "empty":
            tokens = []
        if fault == "content_filter":
            tokens, finish_reason = [], "content_filter"
        prompt_tokens = sum(
            len(tokenize(_content_text(m.get("content")))) for m in messages if isinstance(m, dict)
        )
        return _Plan(model, fault, behaviour, tokens, finish_reason, prompt_tokens)


def _header(scope: Scope, name: str) -> str:
    wanted = name.encode("latin-1")
    for raw_name, raw_value in scope["headers"]:
        if raw_name.lower() == wanted:
            return raw_value.decode("latin-1")
    return ""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _send_raw(
    send: Send,
    status: int,
    body: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", f"req_{uuid.uuid4().hex}".encode()),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers + (extra_headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await _send_raw(send, status, json.dumps(payload).encode())


async def _send_error(
    send: Send,
    status: int,
    message: str,
    type_: str,
    code: str | None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await _send_raw(send, status, _error_body(message, type_, code), extra_headers=extra_headers)


async def _send_status_fault(send: Send, plan: _Plan) -> bool:
    """Answer the faults that are a plain HTTP error; True when one was sent."""
    fault, model = plan.fault, plan.model
    if fault == "429":
        wait = plan.behaviour.retry_after
        headers = [
            (b"retry-after", str(math.ceil(wait)).encode()),
            (b"retry-after-ms", str(int(wait * 1000)).encode()),
        ]
        await _send_error(
            send,
            429,
            f"Rate limit reached for {model}. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            headers,
        )
    elif fault == "500":
        await _send_error(
            send,
            500,
            "The server had an error while processing your request.",
            "server_error",
            None,
        )
    elif fault == "401":
        await _send_error(
            send, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
    elif fault == "404":
        await _send_error(
            send,
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )
    elif fault == "context_length":
        message = (
            "This model's maximum context length is 8192 tokens. However, your messages "
            f"resulted in {8192 + plan.prompt_tokens} tokens. Please reduce the length of the "
            "messages."
        )
        await _send_raw(
            send,
            400,
            _error_body(message, "invalid_request_error", "context_length_exceeded", "messages"),
        )
    else:
        return False
    return True


async def _sleep_until(deadline: float, disconnected: asyncio.Event) -> bool:
    """Sleep until a loop-time deadline; False if the client went away meanwhile."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(disconnected.wait(), delay)
    return not disconnected.is_set()


def _token_times(behaviour: Behaviour, start: float, count: int) -> Iterator[float]:
    for index in range(count):
        yield start + behaviour.ttft + (index / behaviour.tps if behaviour.tps else 0.0)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _stream(
    send: Send, plan: _Plan, include_usage: bool, disconnected: asyncio.Event
) -> None:
    start = asyncio.get_running_loop().time()
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": plan.model,
            "system_fingerprint": "fp_llmtest",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            payload["usage"] = None
        return _sse(payload)

    async def body(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-request-id", f"req_{uuid.uuid4().hex}".encode()),
            ],
        }
    )
    await body(chunk({"role": "assistant", "content": "", "refusal": None}))

    # Faults that cut a stream short strike after half the reply, so some text was delivered.
    cut = max(1, len(plan.tokens) // 2) if plan.tokens else 0
    for index, deadline in enumerate(_token_times(plan.behaviour, start, len(plan.tokens))):
        if index == cut and plan.fault == "hang_mid":
            await disconnected.wait()
            return
        if index == cut and plan.fault == "broken_stream":
            raise _DroppedConnectionError()
        if index == cut and plan.fault == "malformed":
            await body(
                b'data: {"id": "' + completion_id.encode() + b'", "choices": [{"delta": {\n\n'
            )
        if not await _sleep_until(deadline, disconnected):
            return
        await body(chunk({"content": plan.tokens[index]}))

    if plan.fault == "content_filter":
        if not await _sleep_until(start + plan.behaviour.ttft, disconnected):
            return
        await body(chunk({"refusal": REFUSAL}))
    await body(chunk({}, plan.finish_reason))
    if include_usage:
        await body(
            _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": plan.model,
                    "system_fingerprint": "fp_llmtest",
                    "choices": [],
                    "usage": _usage(plan),
                }
            )
        )
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _usage(plan: _Plan) -> dict[str, int]:
    completion = len(plan.tokens)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }


async def _complete(send: Send, plan: _Plan, disconnected: asyncio.Event) -> None:
    start = asyncio.get_running_loop().time()
    behaviour = plan.behaviour
    done = start + behaviour.ttft + (len(plan.tokens) / behaviour.tps if behaviour.tps else 0.0)
    if plan.fault == "hang_mid":
        await disconnected.wait()
        return
    if not await _sleep_until(done, disconnected):
        return
    if plan.fault == "broken_stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"100000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise _DroppedConnectionError()
    if plan.fault == "malformed":
        await _send_raw(send, 200, b'{"id": "chatcmpl-broken", "choices": [')
        return
    refused = plan.fault == "content_filter"
    message = {
        "role": "assistant",
        "content": None if refused else "".join(plan.tokens),
        "refusal": REFUSAL if refused else None,
    }
    await _send_json(
        send,
        200,
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": "fp_llmtest",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                }
            ],
            "usage": _usage(plan),
        },
    )


def create_app(
    *, api_key: str | None = None, defaults: Mapping[str, str] | None = None
) -> TestLLMServer:
    return TestLLMServer(api_key=api_key, defaults=defaults)


class _Server(uvicorn.Server):
    def __init__(self, app: TestLLMServer, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_level="warning", access_log=False
        )
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Hung requests never finish by themselves; end them so shutdown does not wait forever.
        self.app.release_all()
        await super().shutdown(sockets)


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    api_key: str | None = None,
    defaults: Mapping[str, str] | None = None,
) -> None:
    """Serve in the foreground until interrupted."""
    _Server(create_app(api_key=api_key, defaults=defaults), host, port).run()


@contextlib.contextmanager
def running_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    defaults: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run the server in a background thread; yields its base URL (`http://host:port/v1`).

    port=0 picks a free port; the socket is bound before the thread starts, so the URL is
    right as soon as it is yielded.
    """
    app = create_app(api_key=api_key, defaults=defaults)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    real_port = sock.getsockname()[1]
    server = _Server(app, host, real_port)
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"llmtest-server-{real_port}",
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test LLM server did not start")
            time.sleep(0.01)
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{real_port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def requests_log(base_url: str) -> list[dict[str, Any]]:
    """The server's recent requests, oldest first (authorization values redacted)."""
    response = httpx2.get(f"{_root(base_url)}/_test/requests", timeout=10)
    response.raise_for_status()
    return response.json()["requests"]


def reset(base_url: str) -> None:
    """Clear the request log and the `fail_times` attempt counters."""
    httpx2.post(f"{_root(base_url)}/_test/reset", timeout=10).raise_for_status()
