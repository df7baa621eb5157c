"""CPU per streamed token: the arena's client against the `openai` SDK used as documented.

    .venv/bin/python -m benchmarks.client [--streams 32] [--seconds 12] [--tps 40] [--tokens 120]

Runs the project's test LLM server (in a thread of this process), then each reader in a fresh
process of its own (so imports and event loops do not mix): `--streams` concurrent streams,
one after another for `--seconds`, each answer `--tokens` tokens at `--tps` tokens/s. The SDK
and its HTTP client are imported and one request is made before the clock starts. The figure
is the reader process's CPU time over the tokens it received: what a worker pays per token.

- arena: `llm_providers.client.ChatStream` run as coroutines in the process's loop
  (`core.loop`), as a worker's generation loop runs every reply (aiohttp, one `json.loads` a
  chunk), with an `on_delta` that keeps the text as a reply does.
- sdk-sync: `openai.OpenAI().chat.completions.create(stream=True)`, one thread per stream,
  iterating the SDK's chunk objects (the SDK's documented streaming; default HTTP client).
- sdk-async: `openai.AsyncOpenAI()`, the same call awaited, all streams in one event loop.
- sdk-async-aiohttp: the same with `http_client=openai.DefaultAioHttpClient()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

from llm_providers.testing import running_server

VARIANTS = ("arena", "sdk-sync", "sdk-async", "sdk-async-aiohttp")
MESSAGES = [{"role": "user", "content": "Tell me about arenas."}]


def _threads(streams: int, seconds: float, one_call) -> tuple[int, float, float]:
    tokens = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop_at:
            count = one_call()
            with lock:
                tokens[0] += count

    threads = [threading.Thread(target=loop) for _ in range(streams)]
    cpu, wall = time.process_time(), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens[0], time.process_time() - cpu, time.monotonic() - wall


def _run_arena(base_url: str, model: str, streams: int, seconds: float):
    from core import loop
    from llm_providers.client import ChatStream, Endpoint, warm_up

    warm_up()
    endpoint = Endpoint(base_url, model)

    async def one() -> int:
        unsent: list[str] = []
        await ChatStream(endpoint, MESSAGES, on_delta=unsent.append).run()
        return len(unsent)

    async def main():
        await one()
        tokens = [0]
        stop_at = time.monotonic() + seconds

        async def repeat() -> None:
            while time.monotonic() < stop_at:
                count = await one()
                tokens[0] += count

        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(repeat() for _ in range(streams)))
        return tokens[0], time.process_time() - cpu, time.monotonic() - wall

    return loop.submit(main()).result()


def _count_chunk(chunk) -> int:
    return 1 if chunk.choices and chunk.choices[0].delta.content else 0


def _run_sdk_sync(base_url: str, model: str, streams: int, seconds: float):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    def one() -> int:
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        return sum(_count_chunk(chunk) for chunk in stream)

    one()
    return _threads(streams, seconds, one)


def _run_sdk_async(base_url: str, model: str, streams: int, seconds: float, *, aiohttp: bool):
    import openai

    async def main():
        http_client = openai.DefaultAioHttpClient() if aiohttp else None
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key="not-needed", max_retries=0, http_client=http_client
        )

        async def one() -> int:
            stream = await client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True
            )
            return sum([_count_chunk(chunk) async for chunk in stream])

        await one()
        tokens = [0]
        stop_at = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop_at:
                count = await one()  # not `tokens[0] += await one()`: that reads before awaiting
                tokens[0] += count

        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(loop() for _ in range(streams)))
        result = tokens[0], time.process_time() - cpu, time.monotonic() - wall
        await client.close()
        return result

    return asyncio.run(main())


def _child(variant: str, base_url: str, model: str, streams: int, seconds: float) -> None:
    if variant == "arena":
        result = _run_arena(base_url, model, streams, seconds)
    elif variant == "sdk-sync":
        result = _run_sdk_sync(base_url, model, streams, seconds)
    else:
        aiohttp = variant == "sdk-async-aiohttp"
        result = _run_sdk_async(base_url, model, streams, seconds, aiohttp=aiohttp)
    tokens, cpu, wall = result
    print(json.dumps({"tokens": tokens, "cpu": cpu, "wall": wall}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--tps", type=float, default=40.0)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = f"test-model?ttft=0.3&tps={args.tps:g}&tokens={args.tokens}"
    if args.child:
        _child(args.child, args.base_url, model, args.streams, args.seconds)
        return

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    with running_server() as base_url:
        for variant in args.variants:
            print(f"{variant}: {args.seconds:g} s of streams...", file=sys.stderr, flush=True)
            command = [sys.executable, "-m", "benchmarks.client", "--child", variant]
            for name in ("base_url", "streams", "seconds", "tps", "tokens"):
                value = base_url if name == "base_url" else getattr(args, name)
                command += [f"--{name.replace('_', '-')}", str(value)]
            child = subprocess.run(command, cwd=root, capture_output=True, text=True)
            if child.returncode != 0:
                sys.stderr.write(child.stderr)
                raise SystemExit(f"the {variant} reader failed (exit {child.returncode})")
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append((variant, figures))

    print(
        f"\n{args.streams} concurrent streams for {args.seconds:g} s, {args.tokens} tokens at "
        f"{args.tps:g} tokens/s each, {os.cpu_count()} cores\n"
    )
    print("| reader | tokens | tokens/s | process CPU s | CPU µs per token |")
    print("|---|---|---|---|---|")
    for variant, figures in rows:
        tokens, cpu, wall = figures["tokens"], figures["cpu"], figures["wall"]
        print(
            f"| {variant} | {tokens} | {tokens / wall:.0f} | {cpu:.2f} | "
            f"{cpu / max(tokens, 1) * 1e6:.0f} |"
        )


if __name__ == "__main__":
    main()
