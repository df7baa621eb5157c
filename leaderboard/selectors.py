"""Reads: the vote aggregation behind the ratings, and what the leaderboard pages show."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, F, FloatField, Q, QuerySet, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Round
from django.shortcuts import get_object_or_404
from django.utils import timezone

from battles.models import Vote
from leaderboard.categories import OVERALL, category_filter, language_category
from leaderboard.models import ImportedVote, Snapshot, SnapshotRow
from llm_providers.models import LLMModel

# The columns battles.Vote and ImportedVote share; every rating input goes through these.
VOTE_SOURCES = (Vote, ImportedVote)
STYLE_FEATURES = ("length", "headers", "lists", "bold")
# Style differences are bucketed to tenths so the aggregation stays one row per
# (pair, bucket) instead of one row per vote.
STYLE_BUCKETS = 10
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


def excluded_statuses() -> list[str]:
    return list(getattr(settings, "ARENA_RATINGS_EXCLUDE_STATUSES", []))


def _exclusions() -> dict[str, Q]:
    """Why a vote is left out, in precedence order: each vote counts under its first reason."""
    reasons = {"identity_leak": Q(identity_leak=True), "flagged_invalid": Q(flagged_invalid=True)}
    statuses = excluded_statuses()
    if statuses:
        reasons["model_status"] = Q(model_a__status__in=statuses) | Q(model_b__status__in=statuses)
    return reasons


def _valid() -> Q:
    valid = Q()
    for reason in _exclusions().values():
        valid &= ~reason
    return valid


def _in_scope(source, *, category: str, cutoff: dt.datetime) -> QuerySet:
    return source.objects.filter(category_filter(category), created_at__lte=cutoff).order_by()


def votes_excluded(*, category: str, cutoff: dt.datetime) -> tuple[int, dict[str, int]]:
    """(counted votes, {reason: excluded votes}) over both vote tables."""
    reasons = _exclusions()
    counted = 0
    excluded = dict.fromkeys(reasons, 0)
    for source in VOTE_SOURCES:
        aggregates = {"counted": Count("pk", filter=_valid())}
        earlier = Q()
        for name, reason in reasons.items():
            aggregates[f"excluded_{name}"] = Count("pk", filter=reason & ~earlier)
            earlier |= reason
        result = _in_scope(source, category=category, cutoff=cutoff).aggregate(**aggregates)
        counted += result["counted"]
        for name in reasons:
            excluded[name] += result[f"excluded_{name}"]
    return counted, excluded


def _style_diff(feature: str):
    a = Coalesce(Cast(KT(f"style__a__{feature}"), FloatField()), Value(0.0))
    b = Coalesce(Cast(KT(f"style__b__{feature}"), FloatField()), Value(0.0))
    # (a - b) / (a + b + 1): in [-1, 1], zero when equal, and defined when both are zero.
    return Round((a - b) * STYLE_BUCKETS / (a + b + Value(1.0)))


def _choice_counts() -> dict[str, Count]:
    return {
        "wins_a": Count("pk", filter=Q(choice="a")),
        "wins_b": Count("pk", filter=Q(choice="b")),
        "ties": Count("pk", filter=Q(choice="tie")),
        "both_bad": Count("pk", filter=Q(choice="bothbad")),
    }


@dataclass(frozen=True)
class CountRow:
    model_a: int
    model_b: int
    wins_a: int
    wins_b: int
    ties: int
    both_bad: int
    style: tuple[float, ...] = field(default=())


def vote_counts(*, category: str, cutoff: dt.datetime, style: bool) -> list[CountRow]:
    """Valid votes aggregated to counts per (model_a, model_b[, style bucket]) in one query.

    Both vote tables are aggregated inside one UNION ALL; a pair may appear once per table.
    """
    keys = ["model_a_id", "model_b_id"]
    buckets = {f"style_{name}": _style_diff(name) for name in STYLE_FEATURES} if style else {}
    querysets = [
        _in_scope(source, category=category, cutoff=cutoff)
        .filter(_valid())
        .annotate(**buckets)
        .values(*keys, *buckets)
        .annotate(**_choice_counts())
        .values_list(*keys, *buckets, *_choice_counts())
        for source in VOTE_SOURCES
    ]
    rows = []
    for values in querysets[0].union(*querysets[1:], all=True):
        a, b = values[0], values[1]
        bucket = tuple(float(v) / STYLE_BUCKETS for v in values[2 : 2 + len(buckets)])
        wins_a, wins_b, ties, both_bad = values[2 + len(buckets) :]
        rows.append(CountRow(a, b, wins_a, wins_b, ties, both_bad, bucket))
    rows.sort(key=lambda r: (r.model_a, r.model_b, r.style))
    return rows


def vote_languages(*, min_votes: int) -> list[str]:
    """Languages with at least min_votes valid votes (over both tables), most votes first."""
    totals: dict[str, int] = defaultdict(int)
    for source in VOTE_SOURCES:
        for language, votes in (
            source.objects.filter(_valid()).exclude(language="").order_by()
            .values_list("language").annotate(n=Count("pk"))
        ):
            totals[language] += votes
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [language for language, votes in ranked if votes >= min_votes]


def rating_categories() -> list[str]:
    from leaderboard.categories import fixed_categories

    minimum = getattr(settings, "ARENA_LANGUAGE_CATEGORY_MIN_VOTES", 100)
    return [c.key for c in fixed_categories()] + [
        language_category(code) for code in vote_languages(min_votes=minimum)
    ]


# --- the pages -------------------------------------------------------------------------------


def snapshot_current(*, category: str = OVERALL) -> Snapshot | None:
    return Snapshot.objects.filter(category=category).first()


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


def board_rows(*, snapshot: Snapshot, filters: BoardFilters) -> list[SnapshotRow]:
    """The rows a visitor sees, with the display fields the templates and exports need."""
    rows = snapshot.rows.select_related("model").filter(
        votes__gte=settings.ARENA_MIN_VOTES_TO_SHOW
    )
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
    return rows


def _decorate(row: SnapshotRow) -> None:
    row.provisional = row.votes < settings.ARENA_PROVISIONAL_VOTES
    row.ci_plus = row.upper - row.rating if row.upper is not None else None
    row.ci_minus = row.rating - row.lower if row.lower is not None else None
    row.rank_delta = (
        row.rank_ub - row.style_rank_ub if row.style_rank_ub is not None else None
    )


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
    recent = list(
        Snapshot.objects.filter(category=category).values_list("pk", flat=True)[:limit]
    )
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


def model_head_to_head(*, model: LLMModel) -> list[HeadToHead]:
    """The model's valid votes against each opponent (both vote tables), most battles first."""
    keys = ["model_a_id", "model_b_id"]
    querysets = [
        source.objects.filter(_valid())
        .filter(Q(model_a=model) | Q(model_b=model))
        .order_by()
        .values(*keys)
        .annotate(**_choice_counts())
        .values_list(*keys, *_choice_counts())
        for source in VOTE_SOURCES
    ]
    records: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for a, b, wins_a, wins_b, ties, both_bad in querysets[0].union(*querysets[1:], all=True):
        mine, theirs, opponent = (wins_a, wins_b, b) if a == model.pk else (wins_b, wins_a, a)
        record = records[opponent]
        record[0] += mine
        record[1] += theirs
        record[2] += ties
        record[3] += both_bad
    opponents = LLMModel.objects.in_bulk(list(records))
    result = [HeadToHead(opponents[pk], *record) for pk, record in records.items()]
    return sorted(result, key=lambda h: (-h.battles, h.opponent.name))


def model_recent_votes(*, model: LLMModel, days: int) -> int:
    """Arena votes (not imports) involving the model in the last `days` days, all reasons."""
    since = timezone.now() - dt.timedelta(days=days)
    return Vote.objects.filter(Q(model_a=model) | Q(model_b=model), created_at__gte=since).count()


def model_snapshot_row(*, model: LLMModel, snapshot: Snapshot | None) -> SnapshotRow | None:
    if snapshot is None:
        return None
    row = snapshot.rows.filter(model=model).first()
    if row is not None:
        _decorate(row)
    return row


def votes_for_export(*, include_imported: bool):
    """Counted arena votes for the FastChat dump, oldest first, streamed from the database."""
    columns = ("choice", "turns", "prompt_chars", "has_code", "language", "style", "created_at")
    votes = (
        Vote.objects.filter(_valid())
        .order_by("created_at", "pk")
        .values_list(
            "battle__uuid", F("model_a__name"), F("model_b__name"), "visitor_hash", *columns
        )
    )
    yield from votes.iterator(chunk_size=2000)
    if include_imported:
        imported = (
            ImportedVote.objects.filter(_valid())
            .order_by("created_at", "pk")
            .values_list("external_id", F("model_a__name"), F("model_b__name"), "judge", *columns)
        )
        yield from imported.iterator(chunk_size=2000)
