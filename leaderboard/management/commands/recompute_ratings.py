from django.core.management.base import BaseCommand, CommandError

from leaderboard import recompute, refresh
from leaderboard.categories import is_valid_category


class Command(BaseCommand):
    help = (
        "Recompute the leaderboard now: every category, or one with --category. "
        "Does the same as the hourly ratings_recompute_task; with --if-new-votes, what the "
        "live board's refresh does."
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
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--if-new-votes",
            action="store_true",
            help="Only if a vote was cast or imported since the last refresh, from the stored "
            "tallies (what the live board's refresh does; every category).",
        )
        mode.add_argument(
            "--rebuild",
            action="store_true",
            help="Count every vote again, check the stored tallies against the count, log and "
            "repair any difference (what the hourly job and this command do by default).",
        )

    def handle(
        self,
        *args,
        bootstrap: int,
        category: str,
        no_style: bool,
        if_new_votes: bool,
        rebuild: bool,
        **options,
    ):
        if category and (if_new_votes or rebuild):
            raise CommandError(
                "--if-new-votes and --rebuild work on every category: drop --category."
            )
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
                # Through the refresh, so that the live board's next tick knows these votes
                # are counted.
                report = refresh.ratings_refresh(
                    force=not if_new_votes, interval=0, bootstrap=bootstrap, style=style
                )
                if report.reason == "busy":
                    raise recompute.RecomputeBusyError
                if not report.ran:
                    self.stdout.write("No new votes since the last refresh: nothing to do.")
                snapshots = report.snapshots
        except recompute.RecomputeBusyError as exc:
            raise CommandError(str(exc)) from None
        for snapshot in snapshots:
            skipped = ", ".join(f"{k} {v}" for k, v in snapshot.excluded.items() if v)
            self.stdout.write(
                f"{snapshot.category}: {snapshot.rows.count()} models from "
                f"{snapshot.vote_count} votes ({snapshot.method}, {snapshot.duration_ms} ms"
                f"{'; excluded ' + skipped if skipped else ''}), snapshot #{snapshot.pk}"
            )
