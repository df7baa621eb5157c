"""Reads: the vote aggregation behind the ratings, and what the leaderboard pages show."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, F, FloatField, Q, QuerySet, Value, Window
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Round, RowNumber
from django.shortcuts import get_object_or_404
from django.utils import timezone

from battles.models import FlaggedVoter, Vote
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


# --- the analysis-time filters -------------------------------------------------------------
#
# Two filters from Chatbot Arena's pipeline (FastChat), both on arena votes only: imported
# dumps carry no prompt and no voter id of ours, and were cleaned by whoever published them.
#
# - prompt_dedup (FastChat's monitor/deduplication.py): count votes per identical prompt; the
#   cut-off is the ARENA_PROMPT_DEDUP_PERCENTILE quantile of those counts over distinct prompts
#   (linear interpolation, as pandas computes it); a prompt asked more often than the cut-off
#   keeps int(cut-off) of its votes. FastChat keeps a random sample (seed 42); here the
#   earliest votes are kept, so the choice is deterministic and stable as new votes arrive.
# - voter_flagged: visitors flagged by the sequential outlier test (services.voters_flag),
#   stored as FlaggedVoter rows so the rating aggregation stays one GROUP BY.


@dataclass(frozen=True)
class FilterPlan:
    """What the filters need to know at one cut-off, worked out once per recompute."""

    cutoff: dt.datetime | None = None
    dedup: bool = False
    dedup_threshold: float | None = None
    hot_prompts: tuple[str, ...] = ()
    voter_flags: bool = False

    @property
    def dedup_keep(self) -> int | None:
        return int(self.dedup_threshold) if self.dedup_threshold is not None else None

    def params(self) -> dict:
        return {
            "prompt_dedup": self.dedup,
            "prompt_dedup_percentile": getattr(settings, "ARENA_PROMPT_DEDUP_PERCENTILE", None)
            if self.dedup
            else None,
            "prompt_dedup_keep": self.dedup_keep if self.hot_prompts else None,
            "prompt_dedup_hot_prompts": len(self.hot_prompts),
            "voter_flags": self.voter_flags,
        }


def _interpolated_quantile(sorted_counts: list[int], ones: int, q: float) -> float:
    """pandas' default quantile over `ones` ones followed by `sorted_counts` (all ascending)."""
    n = ones + len(sorted_counts)

    def at(i: int) -> int:
        return 1 if i < ones else sorted_counts[i - ones]

    position = q * (n - 1)
    low = int(position)
    if low + 1 >= n:
        return float(at(n - 1))
    return at(low) + (position - low) * (at(low + 1) - at(low))


def _vote_scope(cutoff: dt.datetime | None) -> Q:
    scope = ~Q(prompt_hash="")
    return scope & Q(created_at__lte=cutoff) if cutoff is not None else scope


def filter_plan(
    *, cutoff: dt.datetime | None = None, voter_flags: bool | None = None
) -> FilterPlan:
    """The hot prompts at this cut-off (one GROUP BY over repeated prompts) and the switches.

    Only prompts asked at least twice come back from the database; the ones asked once are
    counted, not listed, so memory follows the number of repeated prompts.
    """
    dedup = getattr(settings, "ARENA_PROMPT_DEDUP", True)
    if voter_flags is None:
        voter_flags = getattr(settings, "ARENA_OUTLIER_DETECTION", True)
    if not dedup:
        return FilterPlan(cutoff=cutoff, voter_flags=voter_flags)
    scoped = Vote.objects.filter(_vote_scope(cutoff)).order_by()
    repeated = sorted(
        scoped.values("prompt_hash").annotate(n=Count("pk")).filter(n__gte=2)
        .values_list("n", "prompt_hash"),
    )
    distinct = scoped.values("prompt_hash").distinct().count()
    if not distinct:
        return FilterPlan(cutoff=cutoff, dedup=True, voter_flags=voter_flags)
    threshold = _interpolated_quantile(
        [n for n, _ in repeated],
        distinct - len(repeated),
        settings.ARENA_PROMPT_DEDUP_PERCENTILE,
    )
    hot = tuple(sorted(prompt for n, prompt in repeated if n > threshold))
    return FilterPlan(
        cutoff=cutoff,
        dedup=True,
        dedup_threshold=threshold,
        hot_prompts=hot,
        voter_flags=voter_flags,
    )


def _dedup_dropped(plan: FilterPlan) -> Q:
    """Votes on a hot prompt beyond its first `dedup_keep` (by time, then id)."""
    ranked = (
        Vote.objects.filter(_vote_scope(plan.cutoff), prompt_hash__in=plan.hot_prompts)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("prompt_hash")],
                order_by=[F("created_at").asc(), F("pk").asc()],
            )
        )
        .filter(rank__gt=plan.dedup_keep)
        .values("pk")
    )
    return Q(pk__in=ranked)


def _exclusions(source, plan: FilterPlan) -> dict[str, Q | None]:
    """Why a vote is left out, in precedence order: each vote counts under its first reason.

    A reason that does not apply to this vote table (or has nothing to drop) is None.
    """
    reasons: dict[str, Q | None] = {
        "identity_leak": Q(identity_leak=True),
        "flagged_invalid": Q(flagged_invalid=True),
    }
    statuses = excluded_statuses()
    if statuses:
        reasons["model_status"] = Q(model_a__status__in=statuses) | Q(model_b__status__in=statuses)
    arena = source is Vote
    if plan.voter_flags:
        flagged = FlaggedVoter.objects.filter(cleared=False).values("visitor_hash")
        reasons["voter_flagged"] = Q(visitor_hash__in=flagged) if arena else None
    if plan.dedup:
        reasons["prompt_dedup"] = _dedup_dropped(plan) if arena and plan.hot_prompts else None
    return reasons


def _valid(source, plan: FilterPlan | None = None) -> Q:
    valid = Q()
    for reason in _exclusions(source, plan or filter_plan()).values():
        if reason is not None:
            valid &= ~reason
    return valid


def _in_scope(source, *, category: str, cutoff: dt.datetime) -> QuerySet:
    return source.objects.filter(category_filter(category), created_at__lte=cutoff).order_by()


def votes_excluded(
    *, category: str, cutoff: dt.datetime, plan: FilterPlan | None = None
) -> tuple[int, dict[str, int]]:
    """(counted votes, {reason: excluded votes}) over both vote tables."""
    plan = plan or filter_plan(cutoff=cutoff)
    counted = 0
    excluded: dict[str, int] = {}
    for source in VOTE_SOURCES:
        reasons = _exclusions(source, plan)
        aggregates = {"counted": Count("pk", filter=_valid(source, plan))}
        earlier = Q()
        for name, reason in reasons.items():
            excluded.setdefault(name, 0)
            if reason is None:
                continue
            aggregates[f"excluded_{name}"] = Count("pk", filter=reason & ~earlier)
            earlier |= reason
        result = _in_scope(source, category=category, cutoff=cutoff).aggregate(**aggregates)
        counted += result["counted"]
        for name in reasons:
            excluded[name] += result.get(f"excluded_{name}", 0)
    return counted, excluded


def votes_by_voter(*, cutoff: dt.datetime, plan: FilterPlan, min_votes: int):
    """Valid arena votes of voters with at least `min_votes` of them, streamed in
    (visitor, time) order as (visitor_hash, model_a_id, model_b_id, choice)."""
    valid = Vote.objects.filter(_valid(Vote, plan), created_at__lte=cutoff).order_by()
    voters = (
        valid.values("visitor_hash").annotate(n=Count("pk")).filter(n__gte=min_votes)
        .values("visitor_hash")
    )
    votes = (
        valid.filter(visitor_hash__in=voters)
        .order_by("visitor_hash", "created_at", "pk")
        .values_list("visitor_hash", "model_a_id", "model_b_id", "choice")
    )
    yield from votes.iterator(chunk_size=2000)


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


def vote_counts(
    *, category: str, cutoff: dt.datetime, style: bool, plan: FilterPlan | None = None
) -> list[CountRow]:
    """Valid votes aggregated to counts per (model_a, model_b[, style bucket]) in one query.

    Both vote tables are aggregated inside one UNION ALL; a pair may appear once per table.
    """
    plan = plan or filter_plan(cutoff=cutoff)
    keys = ["model_a_id", "model_b_id"]
    buckets = {f"style_{name}": _style_diff(name) for name in STYLE_FEATURES} if style else {}
    querysets = [
        _in_scope(source, category=category, cutoff=cutoff)
        .filter(_valid(source, plan))
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
    plan = filter_plan()
    for source in VOTE_SOURCES:
        for language, votes in (
            source.objects.filter(_valid(source, plan)).exclude(language="").order_by()
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
    plan = filter_plan()
    querysets = [
        source.objects.filter(_valid(source, plan))
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
    plan = filter_plan()
    votes = (
        Vote.objects.filter(_valid(Vote, plan))
        .order_by("created_at", "pk")
        .values_list(
            "battle__uuid", F("model_a__name"), F("model_b__name"), "visitor_hash", *columns
        )
    )
    yield from votes.iterator(chunk_size=2000)
    if include_imported:
        imported = (
            ImportedVote.objects.filter(_valid(ImportedVote, plan))
            .order_by("created_at", "pk")
            .values_list("external_id", F("model_a__name"), F("model_b__name"), "judge", *columns)
        )
        yield from imported.iterator(chunk_size=2000)
