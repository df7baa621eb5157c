from django.core.management.base import BaseCommand, CommandError

from leaderboard import recompute
from leaderboard.categories import is_valid_category


class Command(BaseCommand):
    help = (
        "Recompute the leaderboard now: every category, or one with --category. "
        "Does the same as the hourly ratings_recompute_task."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--bootstrap",
            type=int,
            default=0,
            metavar="N",
            help="Bootstrap rounds for the 95%% intervals (default 0: closed-form sandwich).",
        )
        parser.add_argument(
            "--category",
            default="",
            help="One category: overall, multi_turn, long_prompt, code or lang:<iso code>.",
        )
        parser.add_argument(
            "--no-style", action="store_true", help="Skip the style-controlled ratings."
        )

    def handle(self, *args, bootstrap: int, category: str, no_style: bool, **options):
        if bootstrap < 0:
            raise CommandError("--bootstrap must be 0 or a positive number of rounds.")
        if category and not is_valid_category(category):
            raise CommandError(
                f"Unknown category {category!r}: use overall, multi_turn, long_prompt, code "
                "or lang:<iso code> (e.g. lang:en)."
            )
        style = False if no_style else None
        try:
            if category:
                snapshots = [
                    recompute.ratings_recompute(category=category, bootstrap=bootstrap, style=style)
                ]
            else:
                snapshots = recompute.ratings_recompute_all(bootstrap=bootstrap, style=style)
        except recompute.RecomputeBusyError as exc:
            raise CommandError(str(exc)) from None
        for snapshot in snapshots:
            skipped = ", ".join(f"{k} {v}" for k, v in snapshot.excluded.items() if v)
            self.stdout.write(
                f"{snapshot.category}: {snapshot.rows.count()} models from "
                f"{snapshot.vote_count} votes ({snapshot.method}, {snapshot.duration_ms} ms"
                f"{'; excluded ' + skipped if skipped else ''}), snapshot #{snapshot.pk}"
            )
