"""Reads for the leaderboard pages: snapshots, the board's rows, a model's own record.

The pages read what the recompute stored (snapshots and their rows); only a model's page
reads votes, and only its own (model_votes).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, Value
from django.shortcuts import get_object_or_404
from django.utils import timezone

from battles.models import Vote
from leaderboard.categories import OVERALL
from leaderboard.exclusions import counted_filter, filter_plan_recorded
from leaderboard.models import ImportedVote, Snapshot, SnapshotRow
from llm_providers.models import LLMModel

SORTS = {
    "rank": ("rank_ub", "-rating"),
    "model": ("model__name",),
    "score": ("rating",),
    "votes": ("votes",),
    "win_rate": ("win_rate",),
    "org": ("model__organization", "model__name"),
    "license": ("model__license", "model__name"),
    "style": ("style_rank_ub", "-style_rating"),
}


def snapshot_current(*, category: str = OVERALL, matrices: bool = True) -> Snapshot | None:
    """The latest snapshot of a category; without its (large) matrices unless asked."""
    snapshots = Snapshot.objects.filter(category=category)
    if not matrices:
        snapshots = snapshots.defer("win_rate_matrix", "battle_count_matrix")
    return snapshots.first()


def snapshot_categories() -> list[str]:
    """Categories that have at least one snapshot."""
    return sorted(
        Snapshot.objects.order_by().values_list("category", flat=True).distinct(),
        key=lambda key: (key != OVERALL, key.startswith("lang:"), key),
    )


@dataclass(frozen=True)
class BoardFilters:
    q: str = ""
    organization: str = ""
    license: str = ""
    show_retired: bool = False
    sort: str = "rank"
    descending: bool = False


def snapshot_latest_id(*, category: str = OVERALL) -> int | None:
    """The id of a category's latest snapshot (what an open board asks about when it polls)."""
    return Snapshot.objects.filter(category=category).values_list("pk", flat=True).first()


def votes_exist() -> bool:
    """Whether any vote has been cast or imported (an empty board says which it waits for)."""
    return Vote.objects.exists() or ImportedVote.objects.exists()


def board_rows(*, snapshot: Snapshot, filters: BoardFilters) -> list[SnapshotRow]:
    """The rows a visitor sees, with the display fields the templates and exports need.

    Models with fewer than ARENA_MIN_VOTES_TO_SHOW votes come last (in the same order among
    themselves), marked `below_min`: listed so that every vote shows, their rating is not yet
    meaningful."""
    rows = snapshot.rows.select_related("model", "swap_with")
    if not filters.show_retired:
        rows = rows.exclude(model__status=LLMModel.Status.RETIRED)
    if filters.q:
        rows = rows.filter(
            Q(model__name__icontains=filters.q) | Q(model__organization__icontains=filters.q)
        )
    if filters.organization:
        rows = rows.filter(model__organization=filters.organization)
    if filters.license:
        rows = rows.filter(model__license=filters.license)
    order = SORTS.get(filters.sort, SORTS["rank"])
    if filters.descending:
        order = tuple(o[1:] if o.startswith("-") else f"-{o}" for o in order)
    rows = list(rows.order_by(*order, "model__name"))
    for row in rows:
        _decorate(row)
    return sorted(rows, key=lambda row: row.below_min)  # stable: the order above stays


def _decorate(row: SnapshotRow) -> None:
    row.below_min = row.votes < settings.ARENA_MIN_VOTES_TO_SHOW
    row.provisional = row.votes < settings.ARENA_PROVISIONAL_VOTES
    row.ci_plus = row.upper - row.rating if row.upper is not None else None
    row.ci_minus = row.rating - row.lower if row.lower is not None else None
    row.rank_delta = row.rank_ub - row.style_rank_ub if row.style_rank_ub is not None else None


def board_choices(*, snapshot: Snapshot) -> dict[str, list[str]]:
    """Organisations and licenses present in a snapshot, for the filter menus."""
    pairs = snapshot.rows.order_by().values_list("model__organization", "model__license")
    pairs = set(pairs.distinct())
    return {
        "organizations": sorted({org for org, _ in pairs if org}),
        "licenses": sorted({lic for _, lic in pairs if lic}),
    }


def rating_history(
    *, category: str, model_ids: list[int], limit: int = 200
) -> dict[int, list[tuple[dt.datetime, float, float | None, float | None]]]:
    """Rating per snapshot for the given models, oldest first (the last `limit` snapshots)."""
    recent = list(Snapshot.objects.filter(category=category).values_list("pk", flat=True)[:limit])
    series: dict[int, list] = {pk: [] for pk in model_ids}
    rows = (
        SnapshotRow.objects.filter(snapshot_id__in=recent, model_id__in=model_ids)
        .order_by("snapshot__created_at", "snapshot_id")
        .values_list("model_id", "snapshot__created_at", "rating", "lower", "upper")
    )
    for model_id, created_at, rating, lower, upper in rows:
        series[model_id].append((created_at, rating, lower, upper))
    return series


def model_get_public(*, slug: str) -> LLMModel:
    return get_object_or_404(LLMModel, slug=slug)


@dataclass
class HeadToHead:
    opponent: LLMModel
    wins: int = 0
    losses: int = 0
    ties: int = 0
    both_bad: int = 0

    @property
    def battles(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def win_rate(self) -> float | None:
        decisive = self.wins + self.losses
        return self.wins / decisive if decisive else None


@dataclass
class ModelVotes:
    """A model's own votes, as its page shows them."""

    head_to_head: list[HeadToHead]
    recent: dict[int, int]  # days -> arena votes (not imports) in them, whatever their reason


def model_votes(*, model: LLMModel, recent_days: tuple[int, ...] = (7, 30)) -> ModelVotes:
    """The model's counted votes against each opponent (both vote tables, every category, up
    to now; most battles first) and its recent arena votes, in one pass over its own votes.

    Counted as the last recompute counts: its hot prompts and flagged voters
    (exclusions.filter_plan_recorded), so the votes read are this model's (through the
    indexes on either side) and the hot prompts' few."""
    plan = filter_plan_recorded()
    now = timezone.now()
    keys = ["model_a_id", "model_b_id"]
    columns = [*keys, "wins_a", "wins_b", "ties", "both_bad", *(f"d{d}" for d in recent_days)]
    querysets = []
    for source in (Vote, ImportedVote):
        counted = counted_filter(source=source, plan=plan)
        recent = {
            f"d{days}": Count("pk", filter=Q(created_at__gte=now - dt.timedelta(days=days)))
            if source is Vote
            else Value(0)
            for days in recent_days
        }
        querysets.append(
            source.objects.filter(Q(model_a=model) | Q(model_b=model))
            .order_by()
            .values(*keys)
            .annotate(
                wins_a=Count("pk", filter=counted & Q(choice="a")),
                wins_b=Count("pk", filter=counted & Q(choice="b")),
                ties=Count("pk", filter=counted & Q(choice="tie")),
                both_bad=Count("pk", filter=counted & Q(choice="bothbad")),
                **recent,
            )
            .values_list(*columns)
        )
    records: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    totals = dict.fromkeys(recent_days, 0)
    for a, b, wins_a, wins_b, ties, both_bad, *recent_counts in querysets[0].union(
        *querysets[1:], all=True
    ):
        for days, count in zip(recent_days, recent_counts, strict=True):
            totals[days] += count
        if not wins_a + wins_b + ties + both_bad:
            continue
        mine, theirs, opponent = (wins_a, wins_b, b) if a == model.pk else (wins_b, wins_a, a)
        record = records[opponent]
        record[0] += mine
        record[1] += theirs
        record[2] += ties
        record[3] += both_bad
    opponents = LLMModel.objects.in_bulk(list(records))
    head_to_head = [HeadToHead(opponents[pk], *record) for pk, record in records.items()]
    head_to_head.sort(key=lambda h: (-h.battles, h.opponent.name))
    return ModelVotes(head_to_head=head_to_head, recent=totals)


def model_snapshot_row(*, model: LLMModel, snapshot: Snapshot | None) -> SnapshotRow | None:
    if snapshot is None:
        return None
    row = snapshot.rows.filter(model=model).first()
    if row is not None:
        _decorate(row)
    return row
