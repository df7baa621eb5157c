"""Start the whole arena in one process tree: the embedded default's quick start.

Migrates, imports the local model catalog, starts one llama.cpp server per local entry, runs
the beat schedule in a thread and serves the site with uvicorn (ASGI, so answers stream).
"""

import contextlib
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from battles.generation import replies_drain
from core import scheduler, serving
from llm_providers import local
from llm_providers.services import CatalogFileError, catalog_load_yaml, catalog_parse_yaml


class Command(BaseCommand):
    help = "Run the arena on the embedded default with its tiny local models."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--models",
            default=str(settings.BASE_DIR / "config" / "local-models.yaml"),
            help="Catalog file to import before starting (default: config/local-models.yaml).",
        )
        parser.add_argument(
            "--no-local-model",
            action="store_true",
            help="Do not start llama.cpp servers (use models already in the catalog).",
        )

    def handle(self, *args, host: str, port: int, models: str, no_local_model: bool, **options):
        self.stdout.write("Applying database migrations…")
        call_command("migrate", interactive=False, verbosity=0)
        processes = []
        try:
            if not no_local_model:
                processes = self._start_local_models(Path(models))
            scheduler.start()
            self._serve(host, port)
        finally:
            # Replies still streaming finish (or end plainly) while their models still run.
            replies_drain()
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(Exception):
                    process.wait(timeout=10)

    def _start_local_models(self, path: Path) -> list:
        try:
            text = path.read_text(encoding="utf-8")
            entries = catalog_parse_yaml(text=text)
            report = catalog_load_yaml(text=text)
        except (OSError, CatalogFileError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        self.stdout.write(
            f"Catalog {path.name}: {len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged."
        )
        active = [e for e in entries if e.get("status") == "active"]
        try:
            servers = local.local_servers(active)
            for model in dict.fromkeys(servers.values()):
                self.stdout.write(f"Preparing the {local.LOCAL_MODELS[model].label} weights…")
                local.weights_path(model, settings.DATA_DIR)
        except local.LocalModelError as exc:
            raise CommandError(str(exc)) from None
        if not servers:
            return []
        log_path = settings.DATA_DIR / "local-model.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the servers
        processes = []
        for port, model in servers.items():
            self.stdout.write(f"Starting {local.LOCAL_MODELS[model].label} on port {port}…")
            processes.append(
                local.start_server(
                    model=model, port=port, data_dir=settings.DATA_DIR, log_file=log_file
                )
            )
        for port, process in zip(servers, processes, strict=True):
            try:
                local.wait_ready(port, process)
            except local.LocalModelError as exc:
                for p in processes:
                    p.terminate()
                raise CommandError(f"{exc}; see {log_path}") from None
        self.stdout.write(self.style.SUCCESS(f"{len(servers)} local model server(s) ready."))
        return processes

    def _serve(self, host: str, port: int) -> None:
        import uvicorn

        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nThe arena is running: open {url}\n"))
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.run(
                "config.asgi:application",
                host=host,
                port=port,
                log_level="info",
                lifespan="off",
                **serving.UVICORN_OPTIONS,
            )
