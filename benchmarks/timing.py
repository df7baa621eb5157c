"""Can the page tell the faster model by its timing? A classifier on what the page receives,
with the timing-leak guard off, `together` and `padded` (battles/blind_timing.py).

make bench-timing  (python -m benchmarks.timing [--battles 100] [--concurrency 10])

The arena runs as the quick start does (SQLite, tasks in-process, one uvicorn process) over
the test LLM server with two active models: "fast" (first token after 0.2 s, 60 tokens/s) and
"slow" (1.0 s, 15 tokens/s), 40 tokens each. Each battle's events are read over HTTP as a
browser's EventSource does, with their arrival times; the sides' models are read from the
database afterwards. Features per side: the first delta's time, the mean spacing of deltas,
characters per second while streaming, and when the text ended. A classifier says which side
is the faster model: each single feature (the side with the smaller/larger value, direction
learned on the training folds) and a logistic regression on the four differences, scored by
5-fold cross-validation. 50% is chance.
"""

import argparse
import asyncio
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np

from benchmarks.load.run import free_port, load_average, wait_http

PY = sys.executable
MODELS = {"fast": "ttft=0.2&tps=60&tokens=40", "slow": "ttft=1.0&tps=15&tokens=40"}
FEATURES = ("first delta (s)", "delta spacing (s)", "chars/s", "text ended (s)")


def arena_env(tmp: Path, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ARENA_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
        SECURE_HSTS_SECONDS="0",
        ARENA_DATA_DIR=str(tmp / "var"),
        STATIC_ROOT=str(tmp / "static"),
        LOG_LEVEL="WARNING",
        ARENA_RATE_START="off",
        ARENA_RATE_FOLLOW_UP="off",
        ARENA_RATE_VOTE="off",
        ARENA_BLIND_TIMING=mode,
        PYTHONUNBUFFERED="1",
    )
    return env


def catalog(path: Path, llm_url: str) -> None:
    lines = ["models:"]
    for name, knobs in MODELS.items():
        lines += [
            f"  - id: timing-{name}",
            f"    name: Timing {name.title()}",
            f'    model: "{name}?{knobs}"',
            f"    base_url: {llm_url}",
            "    api_key_env: null",
            "    organization: Zeta Labs",
            "    license: MIT",
            "    status: active",
        ]
    path.write_text("\n".join(lines) + "\n")


async def one_battle(base: str, i: int) -> dict:
    async with httpx2.AsyncClient(base_url=base, timeout=60) as client:
        await client.get("/")
        headers = {"X-CSRFToken": client.cookies["csrftoken"]}
        response = await client.post(
            "/battle/", data={"prompt": f"Question {i}: how do arenas work?"}, headers=headers
        )
        page = await client.get(response.headers["location"])
        url = re.search(r'sse-connect="([^"]+)"', page.text).group(1)
        uuid = re.search(r"/b/([0-9a-f-]+)/", url).group(1)
        seen: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        start = time.monotonic()
        name, data, at = None, [], 0.0
        async with client.stream("GET", url) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    name, at = line[7:], time.monotonic() - start
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "":
                    if name == "turn-end":
                        break
                    if name and name.startswith("delta-"):
                        seen[name[-1]].append((at, len("\n".join(data))))
                    name, data = None, []
        return {"uuid": uuid, "seen": seen}


def side_features(deltas: list[tuple[float, int]]) -> list[float]:
    times = [t for t, _ in deltas]
    chars = sum(c for _, c in deltas)
    span = times[-1] - times[0]
    spacing = span / (len(times) - 1) if len(times) > 1 else 0.0
    rate = chars / span if span > 0 else 0.0
    return [times[0], spacing, rate, times[-1]]


def fast_side(db: Path, uuid: str) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT m.name FROM battles_battle b JOIN llm_providers_llmmodel m "
            "ON m.id = b.model_a_id WHERE b.uuid = ?",
            (uuid.replace("-", ""),),
        ).fetchone()
    return "a" if row[0] == "Timing Fast" else "b"


def run_mode(mode: str, args, llm_url: str) -> tuple[np.ndarray, np.ndarray]:
    tmp = Path(tempfile.mkdtemp(prefix=f"llmbattler-timing-{mode}-"))
    env = arena_env(tmp, mode)
    for command in (["migrate"], ["collectstatic"]):
        subprocess.run([PY, "manage.py", *command, "--noinput", "-v", "0"], env=env, check=True)
    catalog(tmp / "models.yaml", llm_url)
    subprocess.run(
        [PY, "manage.py", "load_models", str(tmp / "models.yaml")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    web = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")

        async def main():
            gate = asyncio.Semaphore(args.concurrency)

            async def guarded(i):
                async with gate:
                    return await one_battle(base, i)

            return await asyncio.gather(*(guarded(i) for i in range(args.battles)))

        results = asyncio.run(main())
    finally:
        web.terminate()
        web.wait(10)
    x, y = [], []
    for result in results:
        seen = result["seen"]
        if not seen["a"] or not seen["b"]:
            continue
        a, b = side_features(seen["a"]), side_features(seen["b"])
        x.append(np.subtract(a, b))
        y.append(1 if fast_side(tmp / "var" / "arena.sqlite3", result["uuid"]) == "a" else 0)
    return np.array(x), np.array(y)


def logistic_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton's method (features standardised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + 1e-2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + 1e-2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def cross_validated(x: np.ndarray, y: np.ndarray, folds: int = 5) -> dict[str, float]:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    parts = np.array_split(order, folds)
    hits = {name: 0 for name in (*FEATURES, "logistic (all four)")}
    for k in range(folds):
        test = parts[k]
        train = np.concatenate([parts[j] for j in range(folds) if j != k])
        for f, name in enumerate(FEATURES):
            # Direction from the training folds: is "a is fast" when a's value is smaller?
            smaller = np.mean((x[train, f] < 0) == (y[train] == 1))
            guess = (x[test, f] < 0) if smaller >= 0.5 else (x[test, f] > 0)
            hits[name] += int(np.sum(guess == (y[test] == 1)))
        mean, std = x[train].mean(0), x[train].std(0) + 1e-9
        w = logistic_fit((x[train] - mean) / std, y[train])
        xt = np.hstack([(x[test] - mean) / std, np.ones((len(test), 1))])
        hits["logistic (all four)"] += int(np.sum(((xt @ w) > 0) == (y[test] == 1)))
    return {name: value / len(y) for name, value in hits.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--battles", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--modes", default="off,together,padded")
    args = parser.parse_args(argv)
    llm_port = free_port()
    llm = subprocess.Popen([PY, "-m", "llm_providers.testing", "--port", str(llm_port)])
    llm_url = f"http://127.0.0.1:{llm_port}/v1"
    rows = []
    try:
        wait_http(f"{llm_url}/models")
        for mode in args.modes.split(","):
            print(f"{mode}: {args.battles} battles, load average {load_average()}", flush=True)
            started = time.monotonic()
            x, y = run_mode(mode, args, llm_url)
            scores = cross_validated(x, y)
            # Median slow - fast difference of each feature (a median: a side whose text came
            # in one write has an unbounded rate).
            gaps = np.median(np.where((y == 1)[:, None], -x, x), axis=0)
            rows.append((mode, len(y), scores, gaps, time.monotonic() - started))
    finally:
        llm.terminate()
        llm.wait(10)
    print("\nAccuracy of saying which side is the faster model (5-fold cross-validation):\n")
    head = ["mode", "battles", *FEATURES, "logistic (all four)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for mode, n, scores, _, _ in rows:
        cells = [mode, str(n), *(f"{scores[name]:.0%}" for name in head[2:])]
        print("| " + " | ".join(cells) + " |")
    print("\nMedian of the slow side minus the fast side, as the page sees them:\n")
    print("| mode | " + " | ".join(FEATURES) + " | seconds for the mode |")
    print("|" + "---|" * (len(FEATURES) + 2))
    for mode, _, _, gaps, seconds in rows:
        print(f"| {mode} | " + " | ".join(f"{g:+.3f}" for g in gaps) + f" | {seconds:.0f} |")
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
