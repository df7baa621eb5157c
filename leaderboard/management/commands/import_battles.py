from django.core.management.base import BaseCommand, CommandError

from leaderboard import dumps


class Command(BaseCommand):
    help = (
        "Load a FastChat clean_battle JSON-lines dump (e.g. a public Chatbot Arena dump) as "
        "imported votes. All or nothing: any bad line rolls the import back unless --skip-bad. "
        "Unknown model names become retired catalog entries."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The .jsonl file to import.")
        parser.add_argument(
            "--skip-bad",
            action="store_true",
            help="Import the good lines even if some lines are bad (they are still listed).",
        )

    def handle(self, *args, file: str, skip_bad: bool, **options):
        def progress(count: int) -> None:
            self.stderr.write(f"… {count:,} lines read")

        try:
            with open(file, encoding="utf-8") as lines:
                report = dumps.battles_import(lines=lines, skip_bad=skip_bad, progress=progress)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text; nothing was imported.") from None
        except dumps.ImportRejectedError as exc:
            self._errors(exc.report)
            raise CommandError(str(exc)) from None
        self._errors(report)
        self.stdout.write(
            f"Imported {report.imported:,} votes from {report.lines:,} lines "
            f"({report.duplicates:,} already there, {report.not_anonymous:,} non-anonymous "
            f"battles skipped, {report.bad_lines:,} bad lines skipped)."
        )
        if report.new_models:
            self.stdout.write(
                f"New retired catalog entries for {len(report.new_models)} unknown model(s): "
                + ", ".join(report.new_models)
            )
        self.stdout.write("Run ./manage.py recompute_ratings to update the leaderboard.")

    def _errors(self, report: dumps.ImportReport) -> None:
        for error in report.errors:
            self.stderr.write(error)
        unlisted = report.bad_lines - len(report.errors)
        if unlisted > 0:
            self.stderr.write(f"… and {unlisted:,} more bad lines.")
