import sys

from django.core.management.base import BaseCommand, CommandError

from leaderboard import dumps


class Command(BaseCommand):
    help = (
        "Write the counted votes as FastChat clean_battle JSON lines (model names public, "
        "judge = salted visitor hash)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", default="-", help="File to write (default: stdout).")
        parser.add_argument(
            "--include-imported",
            action="store_true",
            help="Also write votes that came in through import_battles.",
        )
        parser.add_argument(
            "--include-named",
            action="store_true",
            help="Also write side-by-side votes (models chosen by name), marked anony: false.",
        )

    def handle(self, *args, output: str, include_imported: bool, include_named: bool, **options):
        def progress(count: int) -> None:
            self.stderr.write(f"… {count:,} votes written")

        try:
            out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}.") from None
        try:
            count = dumps.battles_export(
                write=out.write,
                include_imported=include_imported,
                include_named=include_named,
                progress=progress,
            )
        finally:
            if out is not sys.stdout:
                out.close()
        self.stderr.write(f"Exported {count:,} votes" + ("" if output == "-" else f" to {output}."))
