from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from llm_providers.services import CatalogFileError, catalog_load_yaml


class Command(BaseCommand):
    help = "Create or update catalog models from a models.yaml file (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="Path to the YAML file.")
        parser.add_argument("--dry-run", action="store_true", help="Validate and report only.")

    def handle(self, *args, path: str, dry_run: bool, **options):
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path}: not UTF-8 text") from None
        try:
            report = catalog_load_yaml(text=text, dry_run=dry_run)
        except CatalogFileError as exc:
            raise CommandError(
                f"{path}: nothing was imported.\n" + "\n".join(f"  {e}" for e in exc.errors)
            ) from None
        prefix = "would be " if dry_run else ""
        for label, items in (
            ("created", report.created),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
        ):
            if items:
                self.stdout.write(f"{prefix}{label}: {', '.join(items)}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(report.created)} {prefix}created, {len(report.updated)} {prefix}updated, "
                f"{len(report.unchanged)} unchanged."
            )
        )
