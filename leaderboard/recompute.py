"""The ratings recompute: the tally's counts -> the rating engine -> one snapshot per category.

Under a lease (RecomputeLock, claimed with a conditional UPDATE), at one cut-off: read every
category's counts (tally.VoteTallies, through consistent_reads.ConsistentReads), flag outlier
voters and move their votes out (outliers), then fit each category (engine.fit) and write
its snapshot, unless the fingerprint of its counts and parameters says nothing changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from threadpoolctl import threadpool_limits

from battles.features import STYLE_FEATURES
from battles.services import sampling_standings_replace
from core import metrics
from leaderboard.aggregates import (
    StoredTallies,
    tallies_compare,
    tallies_fold,
    tallies_left_out_save,
    tallies_merge,
    tallies_ready,
)
from leaderboard.categories import (
    LANGUAGE_PREFIX,
    OVERALL,
    fixed_categories,
    is_valid_category,
    language_category,
)
from leaderboard.consistent_reads import ConsistentReads
from leaderboard.engine import (
    PairCounts,
    RatingOptions,
    RatingResult,
    StyleSums,
    fit,
    fragility,
)
from leaderboard.exclusions import (
    FilterPlan,
    excluded_statuses,
    filter_plan_recorded,
    hot_prompts_record,
)
from leaderboard.models import RecomputeLock, Snapshot, SnapshotRow
from leaderboard.outliers import voters_flag
from leaderboard.selectors import snapshot_current
from leaderboard.sql import bytes_update, commit_without_waiting, rows_insert
from leaderboard.tally import CategoryVotes, VoteTallies
from leaderboard.timing import stage
from llm_providers.models import LLMModel

LOCK_NAME = "ratings"
log = logging.getLogger(__name__)


class RecomputeBusyError(Exception):
    """Another recompute holds the lock; this one did nothing."""

    def __init__(self):
        super().__init__("Another ratings recompute is running; this one did nothing.")


# --- the lock --------------------------------------------------------------------------------


def _lock_claim() -> str:
    """Claim the recompute lease with a conditional UPDATE, or raise RecomputeBusyError."""
    RecomputeLock.objects.bulk_create([RecomputeLock(name=LOCK_NAME)], ignore_conflicts=True)
    now = timezone.now()
    token = uuid.uuid4().hex
    lease = dt.timedelta(seconds=settings.ARENA_RECOMPUTE_LEASE_SECONDS)
    claimed = (
        RecomputeLock.objects.filter(name=LOCK_NAME)
        .filter(Q(held_until__isnull=True) | Q(held_until__lt=now))
        .update(holder=token, held_until=now + lease)
    )
    if not claimed:
        raise RecomputeBusyError
    return token


def _lock_release(token: str) -> None:
    RecomputeLock.objects.filter(name=LOCK_NAME, holder=token).update(holder="", held_until=None)


# --- the recompute ---------------------------------------------------------------------------


# Threads for the categories' fits: numpy releases the interpreter in its array loops, so two
# fits run side by side nearly twice as fast on two cores (the 13 fits of a refresh at 2M
# votes: 0.35 -> 0.25 s on this machine under load; benchmarks/README.md).
FIT_THREADS = min(2, os.cpu_count() or 1)


def _options(*, bootstrap: int, anchor: int | None) -> RatingOptions:
    return RatingOptions(
        anchor=anchor,
        ci="bootstrap" if bootstrap else "sandwich",
        bootstrap_rounds=bootstrap or RatingOptions.bootstrap_rounds,
        both_bad_as_tie=settings.ARENA_BOTH_BAD_AS_TIE,
    )


def _pair_counts(votes: CategoryVotes, model_ids: np.ndarray) -> PairCounts:
    """The category's counts with models as indices into the sorted `model_ids`."""
    return PairCounts(
        model_a=np.searchsorted(model_ids, votes.model_a),
        model_b=np.searchsorted(model_ids, votes.model_b),
        wins_a=votes.counts[:, 0],
        wins_b=votes.counts[:, 1],
        ties=votes.counts[:, 2],
        both_bad=votes.counts[:, 3],
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fingerprint(votes: CategoryVotes, extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for array in (votes.model_a, votes.model_b, votes.counts):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    if votes.style_ids is not None:
        # Which votes the style sums came from, exactly: the float sums themselves differ in
        # their last bits from run to run (the database adds them up in no fixed order).
        digest.update(np.ascontiguousarray(votes.style_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _anchor_index(index: dict[int, int]) -> int | None:
    slug = settings.ARENA_RATING_ANCHOR
    if not slug:
        return None
    pk = LLMModel.objects.filter(slug=slug).values_list("pk", flat=True).first()
    return index.get(pk)


# --- the recompute, per category -------------------------------------------------------------


@dataclass
class _Prepared:
    """A category whose counts changed: what its fit needs and what its snapshot is made of."""

    category: str
    votes: CategoryVotes
    model_ids: list[int]
    index: dict[int, int]
    anchor: int | None
    options: RatingOptions
    params: dict
    fingerprint: str
    latest: Snapshot | None
    style: bool
    counts: PairCounts
    cutoff: dt.datetime
    fragility_fresh: bool
    seconds: float  # this category's own time so far (the fits may run beside others)


def _recompute_category(**job) -> Snapshot | _Fitted:
    """The category's latest snapshot if its counts did not change, else its new one, fitted
    but not written (_snapshots_write). The keyword arguments are _category_prepare's; with
    `fragility_fresh` off (the live board's refresh), the overall board's rank fragility is
    not computed but carried from the latest snapshot (_fragility_carried)."""
    return _recompute_categories([job])[0]


def _recompute_categories(jobs: list[dict]) -> list[Snapshot | _Fitted]:
    """_recompute_category for each job (its keyword arguments). The fits, numpy alone, run
    side by side on up to FIT_THREADS threads (the twelve fits of a refresh were a third of
    it, one after the other); what reads the database runs here, one category after the
    other."""
    prepared = [_category_prepare(**job) for job in jobs]
    fitting = [item for item in prepared if isinstance(item, _Prepared)]
    with _blas_one_thread():
        if len(fitting) > 1 and FIT_THREADS > 1:
            with ThreadPoolExecutor(FIT_THREADS, thread_name_prefix="fit") as pool:
                fits = list(pool.map(_category_fit, fitting))
        else:
            fits = [_category_fit(item) for item in fitting]
    in_order = iter(fits)  # one per fitted category, in their order
    return [
        _category_finish(item, next(in_order)) if isinstance(item, _Prepared) else item
        for item in prepared
    ]


def _category_prepare(
    *,
    category: str,
    votes: CategoryVotes,
    bootstrap: int,
    style: bool,
    cutoff: dt.datetime,
    plan: FilterPlan,
    fragility_fresh: bool = True,
) -> Snapshot | _Prepared:
    """The category's latest snapshot if its counts did not change, else what its fit needs."""
    started = time.perf_counter()
    style = style and votes.style_x is not None
    excluded = votes.excluded
    ids = np.union1d(votes.model_a, votes.model_b).astype(np.int64)
    model_ids = [int(pk) for pk in ids]
    index = {pk: i for i, pk in enumerate(model_ids)}
    anchor = _anchor_index(index)
    options = _options(bootstrap=bootstrap, anchor=anchor)
    params = {
        "scale": options.scale,
        "base": options.base,
        "init_rating": options.init_rating,
        "anchor": settings.ARENA_RATING_ANCHOR if anchor is not None else "",
        "ci": options.ci,
        "bootstrap_rounds": bootstrap,
        "alpha": options.alpha,
        "both_bad_as_tie": options.both_bad_as_tie,
        "style_control": style,
        "excluded_statuses": excluded_statuses(),
        "filters": plan.params(),
        # Ranks count only the models with this many votes (the others are listed unranked).
        "min_votes_to_rank": settings.ARENA_MIN_VOTES_TO_SHOW,
    }
    fingerprint = _fingerprint(votes, {"params": params, "excluded": excluded})
    latest = snapshot_current(category=category, matrices=False)
    # A full run computes the fragility a refresh only carried, even on unchanged counts.
    stale = fragility_fresh and latest is not None and latest.params.get("fragility_carried")
    if latest is not None and latest.fingerprint == fingerprint and not stale:
        return latest
    return _Prepared(
        category=category,
        votes=votes,
        model_ids=model_ids,
        index=index,
        anchor=anchor,
        options=options,
        params=params,
        fingerprint=fingerprint,
        latest=latest,
        style=style,
        counts=_pair_counts(votes, ids),
        cutoff=cutoff,
        fragility_fresh=fragility_fresh,
        seconds=time.perf_counter() - started,
    )


def _category_fit(item: _Prepared) -> tuple[RatingResult | None, RatingResult | None]:
    """(the fit, the style-controlled fit or None): numpy only, safe beside other fits."""
    started = time.perf_counter()
    n = len(item.model_ids)
    result = style_result = None
    if n:
        with stage("fit"):
            result = fit(item.counts, n, item.options)
        if item.style:
            with stage("style fit"):
                style_result = fit(
                    item.counts,
                    n,
                    RatingOptions(anchor=item.anchor, both_bad_as_tie=item.options.both_bad_as_tie),
                    style=StyleSums(item.votes.style_x, item.votes.style_xx),
                )
    item.seconds += time.perf_counter() - started
    return result, style_result


def _category_finish(
    item: _Prepared, fits: tuple[RatingResult | None, RatingResult | None]
) -> _Fitted:
    """The category's new snapshot and rows from its fits."""
    started = time.perf_counter()
    result, style_result = fits
    params, category, model_ids = item.params, item.category, item.model_ids
    if style_result is not None:
        params["style_coefs"] = dict(
            zip(STYLE_FEATURES, style_result.style_coefs.tolist(), strict=True)
        )
    if result is not None:
        params["iterations"] = result.iterations
        params["grad_norm"] = result.grad_norm
        ranked = result.battles >= settings.ARENA_MIN_VOTES_TO_SHOW
        rank = _rank_among(result, ranked)
        style_rank = _rank_among(style_result, ranked) if style_result is not None else None
    fragile = _BoardFragility({}, {}, None)
    # Rank fragility for the overall board only: a few refits per adjacent pair (about a second
    # at 50 models, several at 200: `make bench-fragility`), too much to repeat per category,
    # or at every refresh of the live board, which carries the last full run's figures.
    if result is not None and category == OVERALL:
        if item.fragility_fresh:
            with _blas_one_thread(), stage("fragility"):
                fragile = _fragility(item.counts, result, model_ids, item.options)
            params["fragility_at"] = item.cutoff.isoformat()
        else:
            fragile, computed_at = _fragility_carried(item.latest, item.index)
            params["fragility_carried"] = True
            params["fragility_at"] = computed_at
        params["fragility"] = True
        params["top_spot_votes"] = fragile.top_votes

    snapshot = Snapshot(
        category=category,
        method=result.method if result else f"bradley-terry/{item.options.ci}",
        params=params,
        data_cutoff=item.cutoff,
        vote_count=item.votes.counted,
        excluded=item.votes.excluded,
        excluded_by_model={str(pk): v for pk, v in sorted(item.votes.excluded_by_model.items())},
        models_order=model_ids,
        fingerprint=item.fingerprint,
    )
    rows = _row_values(result, style_result, rank, style_rank, fragile, model_ids) if result else []
    item.seconds += time.perf_counter() - started
    snapshot.duration_ms = int(item.seconds * 1000)
    standings = _standings(result, model_ids) if category == OVERALL and result else None
    matrices = (
        Snapshot.matrices_pack(result.win_rate_matrix, result.battle_count_matrix)
        if result
        else None
    )
    return _Fitted(snapshot, rows, standings, matrices, item.latest.pk if item.latest else None)


# SnapshotRow's fields after `snapshot`, in the order _row_values gives them.
_ROW_FIELDS = (
    "model",
    "rating",
    "lower",
    "upper",
    "rank_ub",
    "votes",
    "wins",
    "losses",
    "ties",
    "win_rate",
    "style_rating",
    "style_rank_ub",
    "swap_with",
    "swap_votes",
)


def _row_values(
    result: RatingResult,
    style_result: RatingResult | None,
    rank: np.ndarray,
    style_rank: np.ndarray | None,
    fragile: _BoardFragility,
    model_ids: list[int],
) -> list[tuple]:
    """Each model's SnapshotRow values (_ROW_FIELDS) as plain tuples: a refresh writes a
    few thousand rows, and building a model instance for each cost more than writing them."""
    decided = (result.wins + result.losses).tolist()
    win_rate = result.win_rate.tolist()
    ties = (result.ties + result.both_bad).tolist()
    style_ratings = style_result.ratings.tolist() if style_result is not None else None
    style_ranks = style_rank.tolist() if style_rank is not None else None
    return [
        (
            pk,
            rating,
            _finite(lower),
            _finite(upper),
            rank_ub,
            votes,
            wins,
            losses,
            ties[i],
            win_rate[i] if decided[i] else None,
            style_ratings[i] if style_ratings is not None else None,
            style_ranks[i] if style_ranks is not None else None,
            fragile.swap_with.get(i),
            fragile.swap_votes.get(i),
        )
        for i, (pk, rating, lower, upper, rank_ub, votes, wins, losses) in enumerate(
            zip(
                model_ids,
                result.ratings.tolist(),
                result.lower.tolist(),
                result.upper.tolist(),
                rank.tolist(),
                result.battles.astype(np.int64).tolist(),
                result.wins.tolist(),
                result.losses.tolist(),
                strict=True,
            )
        )
    ]


@dataclass(frozen=True)
class _Fitted:
    """A category's new snapshot and rows (_ROW_FIELDS values), not written yet
    (_snapshots_write)."""

    snapshot: Snapshot
    rows: list[tuple]
    standings: dict[int, tuple[float, float]] | None  # the overall board's, for sampling
    # (win_rate_matrix, battle_count_matrix) as bytes (Snapshot.matrices_pack), written
    # after the snapshot (sql.bytes_update); None without a fit.
    matrices: tuple[bytes, bytes] | None
    superseded: int | None  # the category's current snapshot until this one


def _snapshots_write(results: list[Snapshot | _Fitted]) -> list[Snapshot]:
    """Write the new snapshots and their rows in one transaction, a few statements in all
    (a refresh writes up to one per category); each category's current snapshot."""
    fitted = [result for result in results if isinstance(result, _Fitted)]
    if fitted:
        with stage("write snapshots"), transaction.atomic():
            commit_without_waiting()
            Snapshot.objects.bulk_create([result.snapshot for result in fitted])
            with_matrices = [result for result in fitted if result.matrices]
            bytes_update(
                Snapshot,
                ("win_rate_matrix", "battle_count_matrix"),
                [(result.snapshot.pk, *result.matrices) for result in with_matrices],
            )
            for result in with_matrices:
                result.snapshot.win_rate_matrix, result.snapshot.battle_count_matrix = (
                    result.matrices
                )
            rows_insert(
                SnapshotRow,
                ("snapshot", *_ROW_FIELDS),
                [(result.snapshot.pk, *row) for result in fitted for row in result.rows],
            )
            # Only a category's current matrices are shown; a superseded snapshot keeps its
            # rows (the rating history) but not the two n x n matrices, which would otherwise
            # grow the table by gigabytes a day under the live board's refreshes. The one each
            # replaces is all there is to clear: the older ones were cleared when it was
            # written, and the recompute's lease lets one writer at a time.
            Snapshot.objects.filter(
                pk__in=[r.superseded for r in fitted if r.superseded is not None]
            ).update(win_rate_matrix=b"", battle_count_matrix=b"")
            for result in fitted:
                if result.standings is not None:
                    # What the active sampling policy reads (battles owns that table).
                    sampling_standings_replace(standings=result.standings)
    return [result.snapshot if isinstance(result, _Fitted) else result for result in results]


def _rank_among(result, ranked: np.ndarray) -> np.ndarray:
    """Rank (UB) against the `ranked` models only: 1 + how many of them have their whole
    interval above this one's. A model with too few votes to be ranked has a wide interval
    that would otherwise push the ranked ones down while it is not ranked itself."""
    lower = np.sort(np.asarray(result.lower, dtype=float)[ranked])
    return 1 + len(lower) - np.searchsorted(lower, np.asarray(result.upper, dtype=float), "right")


def _standings(result: RatingResult, model_ids: list[int]) -> dict[int, tuple[float, float]]:
    """(rating, standard error) per model id, the error from the 95% interval's half-width."""
    out = {}
    for i, pk in enumerate(model_ids):
        half = (result.upper[i] - result.lower[i]) / 2
        if math.isfinite(half) and result.battles[i] > 0:
            out[pk] = (float(result.ratings[i]), float(half / 1.959964))
    return out


@dataclass(frozen=True)
class _BoardFragility:
    swap_with: dict[int, int]  # model index -> id of the next model down the board
    swap_votes: dict[int, int | None]
    top_votes: int | None


def _fragility_carried(
    latest: Snapshot | None, index: dict[int, int]
) -> tuple[_BoardFragility, str | None]:
    """The fragility figures of the latest overall snapshot, for the models still on the
    board, and when they were computed (None: never)."""
    if latest is None or not latest.params.get("fragility"):
        return _BoardFragility({}, {}, None), None
    swap_with, swap_votes = {}, {}
    for pk, with_id, votes in latest.rows.filter(model_id__in=index).values_list(
        "model_id", "swap_with_id", "swap_votes"
    ):
        swap_with[index[pk]] = with_id
        swap_votes[index[pk]] = votes
    carried = _BoardFragility(
        {i: pk for i, pk in swap_with.items() if pk is not None},
        swap_votes,
        latest.params.get("top_spot_votes"),
    )
    return carried, latest.params.get("fragility_at") or latest.data_cutoff.isoformat()


def _fragility(
    counts: PairCounts, result: RatingResult, model_ids: list[int], options: RatingOptions
) -> _BoardFragility:
    """Rank fragility along the default board: models with enough votes to be shown, retired
    ones left out (as the board hides them unless asked), by score."""
    retired = set(
        LLMModel.objects.filter(pk__in=model_ids, status=LLMModel.Status.RETIRED).values_list(
            "pk", flat=True
        )
    )
    shown = [
        i
        for i, pk in enumerate(model_ids)
        if result.battles[i] >= settings.ARENA_MIN_VOTES_TO_SHOW and pk not in retired
    ]
    ranked = sorted(shown, key=lambda i: -result.ratings[i])
    found = fragility(counts, len(model_ids), ranked, both_bad_as_tie=options.both_bad_as_tie)
    pairs = list(zip(ranked, ranked[1:], found.swap_votes, strict=False))
    return _BoardFragility(
        swap_with={upper: model_ids[lower] for upper, lower, _ in pairs},
        swap_votes={upper: votes for upper, _, votes in pairs},
        top_votes=found.top_votes,
    )


def _blas_one_thread():
    """The fits' matrices are small (models x models): BLAS threads waiting on each other and
    on the database cost more than they save (benchmarks/README.md)."""
    return threadpool_limits(limits=1, user_api="blas")


def _style_default() -> bool:
    return settings.ARENA_STYLE_CONTROL


def _tallies(
    *, cutoff: dt.datetime, style: bool, languages: bool, compare: bool = False
) -> tuple[FilterPlan, VoteTallies]:
    """Everything the database has to say at this cut-off: the filter plan, every category's
    counts, and (flags first, so every category leaves out the same voters) the outlier test.
    The plan's hot prompts and the flags are stored for the pages (filter_plan_recorded).
    With `compare`, the stored tallies are checked against these counts (and repaired)."""
    outliers = settings.ARENA_OUTLIER_DETECTION
    with ConsistentReads() as reads:
        with stage("reads"):
            tallies = VoteTallies(
                cutoff=cutoff,
                style=style,
                languages=languages,
                reads=reads,
                voter_min_votes=settings.ARENA_OUTLIER_MIN_VOTES if outliers else None,
            )
        plan = tallies.plan
        hot_prompts_record(plan=plan)
        if plan.voter_flags:
            voters_flag(cutoff=cutoff, tallies=tallies)
            with stage("flagged voters' votes"):
                tallies.flags_apply()
        if compare and style and languages:
            # In the reads' snapshot: the stored rows and the tail see the same votes.
            with stage("compare stored tallies"):
                report = tallies_compare(totals=tallies.totals(), cutoff=cutoff)
            if report.checked:
                log.info(
                    "stored tallies %s",
                    f"repaired ({report.differences} rows differed)"
                    if report.repaired
                    else "match the votes",
                )
    return plan, tallies


def _tallies_stored(*, cutoff: dt.datetime, style: bool) -> tuple[FilterPlan, VoteTallies]:
    """The counts from the stored tallies (aggregates.py) and the filters the last full
    recompute decided: its hot prompts and flagged voters (neither the prompt histogram nor
    the outlier test is read again)."""
    plan = dataclasses.replace(filter_plan_recorded(), cutoff=cutoff)
    with ConsistentReads() as reads:
        with stage("reads"):
            tallies = VoteTallies(
                cutoff=cutoff,
                plan=plan,
                style=style,
                languages=True,
                reads=reads,
                stored=StoredTallies.current(),
            )
        if plan.voter_flags:
            with stage("flagged voters' votes"):
                tallies.flags_apply()
    if tallies.left_out_blocks:
        with stage("store left-out votes"):
            tallies_left_out_save(tallies.left_out_blocks)
    return plan, tallies


def ratings_recompute(
    *, category: str = OVERALL, bootstrap: int = 0, style: bool | None = None
) -> Snapshot:
    """Rate one category's valid votes and write a snapshot (the latest one if nothing changed).

    `bootstrap` > 0 asks for that many bootstrap rounds instead of sandwich intervals. Style
    control applies to the overall board. Raises RecomputeBusyError if another recompute runs.
    """
    if not is_valid_category(category):
        raise ValueError(f"Unknown category {category!r}.")
    style = (_style_default() if style is None else style) and category == OVERALL
    token = _lock_claim()
    try:
        with metrics.RATING_REFRESH_SECONDS.time():
            cutoff = timezone.now()
            plan, tallies = _tallies(
                cutoff=cutoff, style=style, languages=category.startswith(LANGUAGE_PREFIX)
            )
            fitted = _recompute_category(
                category=category,
                votes=tallies.category(category),
                bootstrap=bootstrap,
                style=style,
                cutoff=cutoff,
                plan=plan,
            )
            return _snapshots_write([fitted])[0]
    finally:
        _lock_release(token)


def ratings_recompute_all(
    *,
    bootstrap: int = 0,
    style: bool | None = None,
    settled: dict[str, int] | None = None,
    stored: bool = False,
) -> list[Snapshot]:
    """Every category (the fixed ones and each language with enough votes) at one cut-off.

    Style control runs for the overall board only. With `settled` (per vote table, an id
    below which every vote has committed: leaderboard.refresh) the votes up to it are folded
    into the stored tallies first; then with `stored` the counts come from those tallies and
    the filters the last full recompute decided, and without, from every vote, which the
    stored tallies are checked against (aggregates.py).
    """
    token = _lock_claim()
    style = _style_default() if style is None else style
    try:
        with metrics.RATING_REFRESH_SECONDS.time():
            cutoff = timezone.now()
            if settled is not None:
                with stage("fold"):
                    tallies_fold(settled=settled)
                if not stored:
                    # The full run: the folds' blocks become one per vote table and kind.
                    with stage("merge stored tallies"):
                        tallies_merge()
            from_stored = stored and tallies_ready()
            if from_stored:
                plan, tallies = _tallies_stored(cutoff=cutoff, style=style)
            else:
                plan, tallies = _tallies(
                    cutoff=cutoff, style=style, languages=True, compare=settled is not None
                )
            minimum = settings.ARENA_LANGUAGE_CATEGORY_MIN_VOTES
            categories = [c.key for c in fixed_categories()] + [
                language_category(code) for code in tallies.languages(min_votes=minimum)
            ]
            results = _recompute_categories(
                [
                    dict(
                        category=category,
                        votes=tallies.category(category),
                        bootstrap=bootstrap,
                        style=style and category == OVERALL,
                        cutoff=cutoff,
                        plan=plan,
                        fragility_fresh=not from_stored,
                    )
                    for category in categories
                ]
            )
            # One transaction: a reader sees every category of this cut-off or none of them.
            return _snapshots_write(results)
    finally:
        _lock_release(token)
