"""Time to first token of the bundled local models when both sides of a battle ask at once.

    .venv/bin/python -m benchmarks.local_models [--rounds 6] [--batch-threads N]

Starts two SmolLM2-135M-Instruct servers as `make run` does (one process and one thread each,
on free ports), sends each one request to warm it up, then `--rounds` pairs of requests at the
same moment through the arena's `ChatStream` (the request a battle sends: system prompt,
temperature 0.2, 60 tokens at most), then the same requests to one server alone. Prints the
time to first token of every side. `--batch-threads` sets the servers' prompt-processing
threads (default: `llm_providers.local`'s, one), to compare with llama.cpp's default (one per
core).
"""

import argparse
import os
import statistics
import tempfile
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django

django.setup()

from django.conf import settings  # noqa: E402

from arena.tests.servers import free_port  # noqa: E402
from core import loop  # noqa: E402
from llm_providers import local  # noqa: E402
from llm_providers.client import ChatStream, Endpoint, Timeouts  # noqa: E402

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a helpful assistant. Answer accurately and concisely."
PROMPTS = ("Name three primary colours.", "What is the capital of France?", "Define a prime.")


def ttft_ms(port: int, prompt: str) -> int:
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", MODEL, temperature=0.2, max_tokens=60)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    call = ChatStream(
        endpoint, messages, on_delta=lambda _: None, timeouts=Timeouts(first_token=60, total=120)
    )
    return loop.submit(call.run()).result().ttft_ms


def _ask_into(results: list[int], port: int, prompt: str) -> None:
    results.append(ttft_ms(port, prompt))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-threads", type=int, default=None)
    args = parser.parse_args()
    ports = [free_port(), free_port()]
    with tempfile.TemporaryFile() as log:
        servers = [
            local.start_server(
                model=MODEL,
                port=port,
                data_dir=settings.DATA_DIR,
                log_file=log,
                batch_threads=args.batch_threads,
            )
            for port in ports
        ]
        try:
            for port, server in zip(ports, servers, strict=True):
                local.wait_ready(port, server)
                ttft_ms(port, "Hello.")
            together: list[int] = []
            for n in range(args.rounds):
                prompt = f"{PROMPTS[n % len(PROMPTS)]} ({n})"
                results: list[int] = []
                threads = [
                    threading.Thread(target=_ask_into, args=(results, port, prompt))
                    for port in ports
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                together += results
                time.sleep(0.5)
            alone = [ttft_ms(ports[0], f"{PROMPTS[n % len(PROMPTS)]} [{n}]") for n in range(3)]
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=10)
    batch = args.batch_threads or "default (1)"
    print(f"prompt-processing threads per server: {batch}")
    print(
        f"both sides at once, {len(together)} answers: TTFT median "
        f"{statistics.median(together)} ms, max {max(together)} ms"
    )
    print(f"one side alone, {len(alone)} answers: TTFT median {statistics.median(alone)} ms")


if __name__ == "__main__":
    main()
