"""The leaderboard pages over millions of votes: time and database queries per request.

    python -m benchmarks.recompute --keep-db     # once: 2,000,000 votes and their snapshots
    python -m benchmarks.pages                    # then: every page over that database
    python -m benchmarks.pages --db NAME --runs 7

Serves each page in this process with Django's test client (views, templates and queries;
no network), against the database a `benchmarks.recompute --keep-db` run left, which already
holds the snapshots. Reports the median wall time of `--runs` requests and the queries of one.
The model pages are the most-voted model's and the median model's: the only pages that read
votes rather than snapshots.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter

from benchmarks import synthetic

DB_NAME = "llmbattler_bench_recompute"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", default=DB_NAME, help=f"database name (default {DB_NAME})")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    for name in [k for k in os.environ if k.startswith(("DJANGO_", "ARENA_"))]:
        del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"{synthetic.PG_SERVER.replace('postgresql', 'postgres')}/{args.db}",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from battles.models import Vote
    from llm_providers.models import LLMModel

    setup_test_environment()
    votes = Vote.objects.count()
    per_model: Counter[int] = Counter()
    for side in ("model_a_id", "model_b_id"):
        per_model.update(dict(Vote.objects.order_by().values_list(side).annotate(n=Count("pk"))))
    ranked = sorted(per_model.items(), key=lambda item: (item[1], item[0]))
    slugs = LLMModel.objects.in_bulk([pk for pk, _ in ranked])
    top_pk, top_votes = ranked[-1]
    median_pk, median_votes = ranked[len(ranked) // 2]
    top, median = slugs[top_pk].slug, slugs[median_pk].slug
    pages = [
        ("leaderboard page", "/leaderboard/", {}),
        ("leaderboard #board fragment", "/leaderboard/?sort=score", {"HX-Request": "true"}),
        ("leaderboard.json", "/leaderboard.json", {}),
        ("leaderboard.csv", "/leaderboard.csv", {}),
        (f"model page, most votes ({top_votes:,})", f"/leaderboard/m/{top}/", {}),
        (f"model page, median ({median_votes:,})", f"/leaderboard/m/{median}/", {}),
    ]
    client = Client()
    client.get("/leaderboard/")  # the visitor cookie, connections, template loading
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"leaderboard pages over {votes:,} votes, {len(ranked)} models "
        f"(load average {load}; median of {args.runs})"
    )
    print(f"  {'page':<40} {'ms':>8} {'queries':>8}")
    for label, url, headers in pages:
        times = []
        for _ in range(args.runs):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url, headers=headers)
                times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {response.status_code}")
        print(f"  {label:<40} {statistics.median(times):8.1f} {len(queries):8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
