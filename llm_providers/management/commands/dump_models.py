from django.core.management.base import BaseCommand

from llm_providers.services import catalog_dump_yaml


class Command(BaseCommand):
    help = "Write the model catalog as models.yaml to stdout (or --output PATH)."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="File to write instead of stdout.")

    def handle(self, *args, output: str | None, **options):
        text = catalog_dump_yaml()
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.stderr.write(f"Wrote {output}")
        else:
            self.stdout.write(text, ending="")
