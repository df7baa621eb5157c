"""`python -m llm_providers.testing --host 127.0.0.1 --port 8765 [--ttft 0.3 --tps 40]`."""

from __future__ import annotations

import argparse
import os

from llm_providers.testing.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llm_providers.testing",
        description="Serve the deterministic OpenAI-compatible test LLM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require `Authorization: Bearer $VAR` on every API request",
    )
    parser.add_argument("--ttft", type=float, help="default seconds before the first token")
    parser.add_argument("--tps", type=float, help="default tokens per second (0: unlimited)")
    args = parser.parse_args()
    defaults = {
        name: str(value)
        for name, value in (("ttft", args.ttft), ("tps", args.tps))
        if value is not None
    }
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    serve(args.host, args.port, api_key=api_key, defaults=defaults)


if __name__ == "__main__":
    main()
