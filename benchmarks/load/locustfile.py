"""Locust visitors for `python -m benchmarks.load` (started by run.py, one headless run a step).

A `Visitor` does what a browser does: home page, start a battle (form POST with CSRF), the
conversation page, the turn's SSE stream until `turn-end`, a follow-up (HTMX POST), its stream,
the controls fragment, the vote, the leaderboard. Streams are read with `requests` and
`stream=True` (real HTTP, real SSE); their time to first delta and token rate are fired as
custom locust events (request_type "SSE") and kept raw for run.py.

Environment (set by run.py): LOAD_OUT (JSON written when locust quits), LOAD_TTFT (the test
server's configured first-token delay, seconds), LOAD_WAIT_MIN / LOAD_WAIT_MAX (seconds between
battles), LOAD_SSE_TIMEOUT (seconds a stream may take), LOAD_JOURNEY (`full`, the default, or
`short`: start, the first turn's stream, the vote, as issue 19's slow-model comparison does).
"""

import json
import os
import random
import re
import time
from collections import defaultdict

from locust import HttpUser, between, events, task
from locust.exception import RescheduleTask

CONFIGURED_TTFT = float(os.environ.get("LOAD_TTFT", "0"))
SSE_TIMEOUT = float(os.environ.get("LOAD_SSE_TIMEOUT", "120"))
SHORT_JOURNEY = os.environ.get("LOAD_JOURNEY", "full") == "short"
EVENTS_RE = re.compile(r'sse-connect="(/b/([0-9a-f-]{36})/turns/(\d+)/events/)"')
WORD_RE = re.compile(r"\S+")
BATTLE_RE = re.compile(r'id="b-([0-9a-f-]{36})"')
WORDS = ["compare", "explain", "sketch", "summarise", "list", "contrast", "outline"]
TOPICS = ["rivers", "tides", "compilers", "gardens", "bridges", "caches", "proofs", "clouds"]

# name -> raw samples in ms; counters. One process runs all users (no distributed mode).
samples: dict[str, list[float]] = defaultdict(list)
counters: dict[str, int] = defaultdict(int)
stream_gauge = {"open": 0, "max": 0}


@events.request.add_listener
def _keep(request_type, name, response_time, exception, **kwargs):
    if exception is None:
        samples[f"{request_type} {name}"].append(response_time)
    else:
        counters[f"error {request_type} {name}"] += 1
        counters["errors"] += 1


@events.quitting.add_listener
def _dump(environment, **kwargs):
    out = os.environ.get("LOAD_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(
                {"samples": samples, "counters": counters, "streams_max": stream_gauge["max"]}, f
            )


def _why(response) -> str:
    """The status, or for a transport failure (status 0) the exception behind it."""
    if response.status_code == 0 and getattr(response, "error", None) is not None:
        return f"{type(response.error).__name__}: {str(response.error)[:80]}"
    return f"status {response.status_code}"


def _prompt() -> str:
    return f"{random.choice(WORDS)} {random.choice(TOPICS)} #{random.randrange(10**9)}"


class Visitor(HttpUser):
    wait_time = between(
        float(os.environ.get("LOAD_WAIT_MIN", "1")), float(os.environ.get("LOAD_WAIT_MAX", "3"))
    )

    def _fire(self, name: str, ms: float, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=ms,
            response_length=0,
            exception=exc,
            context={},
        )

    def _csrf(self) -> str:
        return self.client.cookies.get("csrftoken", "")

    def _post(self, url: str, data: dict, name: str, htmx: bool):
        headers = {"X-CSRFToken": self._csrf()}
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.post(
            url, data=data, headers=headers, name=name, allow_redirects=False, catch_response=True
        )

    def _stream(self, url: str, t0: float, label: str) -> None:
        """Hold the SSE stream until turn-end; fire time-to-first-delta and token rates."""
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        count: dict[str, int] = defaultdict(int)
        first_tokens: dict[str, int] = {}
        failed = False
        ended = False
        start = time.perf_counter()
        stream_gauge["open"] += 1
        stream_gauge["max"] = max(stream_gauge["max"], stream_gauge["open"])
        try:
            with self.client.get(
                url,
                stream=True,
                name="sse stream",
                catch_response=True,
                headers={"Accept": "text/event-stream"},
                timeout=SSE_TIMEOUT,
            ) as response:
                if response.status_code != 200:
                    response.failure(_why(response))
                    return
                buffer = ""
                for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
                    now = time.perf_counter()
                    buffer += chunk
                    blocks = buffer.split("\n\n")
                    buffer = blocks.pop()
                    for block in blocks:
                        name, data, event_id = "", [], ""
                        for line in block.split("\n"):
                            if line.startswith("event: "):
                                name = line[7:]
                            elif line.startswith("data: "):
                                data.append(line[6:])
                            elif line.startswith("id: "):
                                event_id = line[4:]
                        if name.startswith("delta-"):
                            # The test server sends one word per token; a delta event may
                            # carry several tokens.
                            side = name[6:]
                            tokens = len(WORD_RE.findall("\n".join(data)))
                            if side not in first:
                                first[side] = now
                                first_tokens[side] = tokens
                                # A Redis stream id starts with the ms of its XADD (same
                                # machine, same clock): the hub-to-page part of the TTFT.
                                published_ms, _, _ = event_id.partition("-")
                                if published_ms.isdigit():
                                    samples["delivery ms"].append(
                                        time.time() * 1000 - int(published_ms)
                                    )
                            last[side] = now
                            count[side] += tokens
                        elif name.startswith("pane-") and "status-failed" in block:
                            failed = True
                        elif name == "turn-end":
                            ended = True
                    if ended or now - start > SSE_TIMEOUT:
                        break
                if ended:
                    samples["turn complete ms"].append((time.perf_counter() - t0) * 1000)
                if not ended:
                    response.failure("stream closed before turn-end")
                elif failed:
                    response.failure("a side failed")
                else:
                    response.success()
        except Exception as exc:
            self._fire(f"{label} stream broken", (time.perf_counter() - start) * 1000, exc)
            return
        finally:
            stream_gauge["open"] -= 1
        for side, t_first in first.items():
            self._fire("ttft overhead", (t_first - t0 - CONFIGURED_TTFT) * 1000)
            if count[side] > first_tokens[side] and last[side] > t_first:
                # Tokens per second after the first delta (kept raw; not a locust event).
                samples["rate tokens/s"].append(
                    (count[side] - first_tokens[side]) / (last[side] - t_first)
                )

    @task
    def battle(self) -> None:
        self.client.get("/", name="page home")
        t0 = time.perf_counter()
        with self._post("/battle/", {"prompt": _prompt()}, "battle start", htmx=False) as r:
            if r.status_code != 302:
                r.failure(_why(r))
                raise RescheduleTask()
            r.success()
            location = r.headers["Location"]
        page = self.client.get(location, name="page conversation")
        match = EVENTS_RE.search(page.text)
        battle_id = BATTLE_RE.findall(page.text)
        if match:
            events_url, uuid = match.group(1), match.group(2)
        elif battle_id:
            # Both sides already finished: the page no longer connects, the stream replays.
            uuid = battle_id[-1]
            events_url = f"/b/{uuid}/turns/0/events/"
        else:
            if page.status_code == 200:  # a failed request is already counted
                counters["errors"] += 1
                counters["error no battle on page"] += 1
            raise RescheduleTask()
        self._stream(events_url, t0, "turn 0")
        if SHORT_JOURNEY:
            self._vote(uuid)
            counters["battles completed"] += 1
            return

        t0 = time.perf_counter()
        with self._post(
            f"/b/{uuid}/follow-up/", {"prompt": _prompt()}, "battle follow-up", htmx=True
        ) as r:
            if r.status_code != 200:
                r.failure(_why(r))
                raise RescheduleTask()
            r.success()
            match = EVENTS_RE.search(r.text)
        if not match:
            counters["errors"] += 1
            counters["error no stream after follow-up"] += 1
            raise RescheduleTask()
        self._stream(match.group(1), t0, "turn 1")
        self.client.get(f"/b/{uuid}/actions/", name="fragment actions")
        self._vote(uuid)
        self.client.get("/leaderboard/", name="page leaderboard")
        counters["battles completed"] += 1

    def _vote(self, uuid: str) -> None:
        choice = random.choice(["a", "b", "tie", "bothbad"])
        with self._post(f"/b/{uuid}/vote/", {"choice": choice}, "battle vote", htmx=True) as r:
            if r.status_code != 200:
                r.failure(_why(r))
            else:
                r.success()
                counters["votes ok"] += 1
