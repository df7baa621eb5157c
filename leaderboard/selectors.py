"""Reads: the vote aggregation behind the ratings, and what the leaderboard pages show."""

from __future__ import annotations

import datetime as dt
import logging
import operator
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber
from django.shortcuts import get_object_or_404
from django.utils import timezone

from battles.features import STYLE_FEATURES
from battles.models import FlaggedVoter, Vote
from leaderboard.categories import LANGUAGE_PREFIX, OVERALL, category_filter
from leaderboard.models import ImportedVote, Snapshot, SnapshotRow
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)

# The columns battles.Vote and ImportedVote share; every rating input goes through these.
VOTE_SOURCES = (Vote, ImportedVote)
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


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log how long one stage of a recompute took (INFO; benchmarks/recompute.py reads it)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log.info("recompute stage %s: %.3f s", name, time.perf_counter() - started)


def excluded_statuses() -> list[str]:
    return list(settings.ARENA_RATINGS_EXCLUDE_STATUSES)


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
            "prompt_dedup_percentile": settings.ARENA_PROMPT_DEDUP_PERCENTILE
            if self.dedup
            else None,
            "prompt_dedup_keep": self.dedup_keep if self.hot_prompts else None,
            "prompt_dedup_hot_prompts": len(self.hot_prompts),
            "voter_flags": self.voter_flags,
        }


def _quantile_of_counts(histogram: dict[int, int], q: float) -> float:
    """pandas' default (linear) quantile of prompt counts given as {count: how many prompts}."""
    total = sum(histogram.values())
    if not total:
        return 1.0
    position = q * (total - 1)
    low = int(position)
    ordered = sorted(histogram.items())

    def at(i: int) -> int:
        seen = 0
        for count, prompts in ordered:
            seen += prompts
            if i < seen:
                return count
        return ordered[-1][0]

    if low + 1 >= total:
        return float(at(total - 1))
    return at(low) + (position - low) * (at(low + 1) - at(low))


def _vote_scope(cutoff: dt.datetime | None) -> Q:
    scope = ~Q(prompt_hash="")
    return scope & Q(created_at__lte=cutoff) if cutoff is not None else scope


def _compiled(queryset) -> tuple[str, tuple]:
    return queryset.query.get_compiler(using=queryset.db).as_sql()


def _raw(sql: str, params) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def filter_plan(
    *, cutoff: dt.datetime | None = None, voter_flags: bool | None = None
) -> FilterPlan:
    """The hot prompts at this cut-off and the switches.

    One pass over the votes counts them per prompt; from that the database returns the
    histogram {votes per prompt: number of prompts} and the most-asked prompts, as many as
    can lie above the quantile ((1 - q) of the prompts, plus two), so memory follows the hot
    prompts, not the number of prompts.
    """
    dedup = settings.ARENA_PROMPT_DEDUP
    if voter_flags is None:
        voter_flags = settings.ARENA_OUTLIER_DETECTION
    if not dedup:
        return FilterPlan(cutoff=cutoff, voter_flags=voter_flags)
    quantile = settings.ARENA_PROMPT_DEDUP_PERCENTILE
    per_prompt = (
        Vote.objects.filter(_vote_scope(cutoff)).order_by()
        .values("prompt_hash").annotate(n=Count("pk")).values_list("prompt_hash", "n")
    )
    sql, params = _compiled(per_prompt)
    # Only the ORM's own compiled SQL and constants go into these statements (S608).
    rows = _raw(
        f"WITH per AS ({sql}) SELECT NULL, n, COUNT(*) FROM per GROUP BY n "  # noqa: S608
        "UNION ALL SELECT * FROM (SELECT prompt_hash, n, 1 FROM per ORDER BY n DESC "
        "LIMIT (SELECT CAST(COUNT(*) * %s AS INTEGER) + 2 FROM per)) top",
        (*params, 1 - quantile),
    )
    histogram = {n: prompts for prompt, n, prompts in rows if prompt is None}
    if not histogram:
        return FilterPlan(cutoff=cutoff, dedup=True, voter_flags=voter_flags)
    threshold = _quantile_of_counts(histogram, quantile)
    hot = tuple(sorted(prompt for prompt, n, _ in rows if prompt is not None and n > threshold))
    return FilterPlan(
        cutoff=cutoff,
        dedup=True,
        dedup_threshold=threshold,
        hot_prompts=hot,
        voter_flags=voter_flags,
    )


def _dedup_dropped_ids(plan: FilterPlan):
    """Ids of the votes on a hot prompt beyond its first `dedup_keep` (by time, then id)."""
    return (
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


def _dedup_dropped(plan: FilterPlan) -> Q:
    return Q(pk__in=_dedup_dropped_ids(plan))


def _flagged_voters():
    return FlaggedVoter.objects.filter(cleared=False).values("visitor_hash")


def _exclusions(source, plan: FilterPlan) -> dict[str, Q | None]:
    """Why a vote is left out, in precedence order: each vote counts under its first reason.

    A reason that does not apply to this vote table (or has nothing to drop) is None. Flagged
    voters come last: the outlier test itself runs on the votes the other reasons keep.
    """
    reasons: dict[str, Q | None] = {
        "identity_leak": Q(identity_leak=True),
        "flagged_invalid": Q(flagged_invalid=True),
    }
    statuses = excluded_statuses()
    if statuses:
        reasons["model_status"] = Q(model_a__status__in=statuses) | Q(model_b__status__in=statuses)
    arena = source is Vote
    if plan.dedup:
        reasons["prompt_dedup"] = _dedup_dropped(plan) if arena and plan.hot_prompts else None
    if plan.voter_flags:
        reasons["voter_flagged"] = Q(visitor_hash__in=_flagged_voters()) if arena else None
    return reasons


def _valid(source, plan: FilterPlan | None = None) -> Q:
    valid = Q()
    for reason in _exclusions(source, plan or filter_plan()).values():
        if reason is not None:
            valid &= ~reason
    return valid


# --- the rating input: every category's counts in two passes -----------------------------------
#
# A recompute counts the votes twice, whatever the number of categories: once grouped by
# (model_a, model_b, reason) with a count per (category, choice) and the style sums, once
# grouped by (language, model_a, model_b, reason). The reason is the first of the row-level
# exclusions that applies (a small integer in SQL, its name, "" = counted, in Python). The
# votes a hot prompt drops and the votes of flagged voters are then moved out of the counted
# rows with the same two queries over just those votes (small, and picked by a top-level IN
# that the database hashes), so the outlier test can run between the counts and the fit.
# Along with the two counts, the filter plan and the outlier test's votes are read: four
# independent reads, side by side on PostgreSQL (_reads).

CHOICES = ("a", "b", "tie", "bothbad")
_FLAGGED = "voter_flagged"
_DEDUP = "prompt_dedup"


def _category_flags() -> dict[str, str]:
    """Fixed category -> the 0/1 column the tally reads ("" for overall: every vote)."""
    return {OVERALL: "", "multi_turn": "c_multi", "long_prompt": "c_long", "code": "c_code"}


def _row_exclusions(source) -> dict[str, Q]:
    """The row-level reasons to leave a vote out, in precedence order. The plan's reasons
    (hot prompts, flagged voters) are moved later, so no plan is needed."""
    return {name: q for name, q in _exclusions(source, FilterPlan()).items() if q is not None}


def _row_reasons(source) -> list[str]:
    """Reason names by the code _reason_case gives them: "" (0, counted), then the reasons."""
    return ["", *_row_exclusions(source)]


def _reason_case(source):
    """The number of the first row-level reason that applies (see _row_reasons; 0 = counted).
    The database groups and compares small integers faster than text."""
    whens = [
        When(q, then=Value(code))
        for code, q in enumerate(_row_exclusions(source).values(), start=1)
    ]
    if not whens:
        return Value(0, output_field=IntegerField())
    return Case(*whens, default=Value(0), output_field=IntegerField())


def _source_votes(source, *, cutoff: dt.datetime, columns: dict, scope: Q):
    """SQL of one vote table's votes up to the cut-off: `columns` plus `rs`, the reason."""
    queryset = source.objects.filter(scope, created_at__lte=cutoff).order_by()
    named = {**columns, "rs": _reason_case(source)}
    return _compiled(queryset.annotate(**named).values_list(*named))


def _tally_rows(
    *, cutoff: dt.datetime, by_language: bool, style: bool,
    sources=VOTE_SOURCES, scope: Q | None = None,
) -> tuple[list[tuple], np.ndarray]:
    """One GROUP BY per vote table: keys (..., model_a, model_b, reason) and their sums (both
    tables' rows may share a key; _Table adds them up)."""
    columns = {"ma": F("model_a_id"), "mb": F("model_b_id"), "ch": F("choice")}
    if by_language:
        columns["lg"] = F("language")
    else:
        for key, flag in _category_flags().items():
            if flag:
                columns[flag] = Case(
                    When(category_filter(key), then=Value(1)),
                    default=Value(0),
                    output_field=IntegerField(),
                )
    if style:
        # Stored generated columns (battles.models.style_difference): no JSON parsing here.
        columns.update({f"x{j}": F(f"style_{name}") for j, name in enumerate(STYLE_FEATURES)})
        columns["vid"] = F("pk")
    scope = scope if scope is not None else Q()
    if by_language:
        scope &= ~Q(language="")

    k = len(STYLE_FEATURES)
    pairs = [(i, j) for i in range(k) for j in range(i, k)]
    if by_language:
        # One row per (language, pair, reason): a row per choice would be four times as many.
        keys = "lg, ma, mb, rs"
        aggregates = [f"SUM(CASE WHEN ch = '{c}' THEN 1 ELSE 0 END)" for c in CHOICES]
    else:
        # One row per (pair, reason, choice) and a few plain sums: far cheaper to aggregate
        # than a CASE per (category, choice, style term).
        keys = "ma, mb, rs, ch"
        aggregates = ["COUNT(*)"] + [f"SUM({flag})" for flag in _category_flags().values() if flag]
        if style:
            aggregates += [f"SUM(x{j})" for j in range(k)]
            aggregates += [f"SUM(x{i} * x{j})" for i, j in pairs]
            # The sum of the vote ids tells one set of votes from another exactly, where the
            # float sums differ in their last bits with the order the database adds them in.
            aggregates.append("CAST(SUM(vid) AS BIGINT)")  # not numeric: no Decimals
    rows: list[tuple] = []
    keyed: list[tuple] = []  # the rows' keys, the reason by name
    reason_at = 3 if by_language else 2
    for source in sources:
        sql, params = _source_votes(source, cutoff=cutoff, columns=columns, scope=scope)
        # Only the ORM's compiled SQL and constants go into these statements (S608).
        read = _raw(
            f"SELECT {keys}, {', '.join(aggregates)} FROM ({sql}) votes GROUP BY {keys}",  # noqa: S608
            params,
        )
        names = _row_reasons(source)
        keyed += [(*row[:reason_at], names[row[reason_at]]) for row in read]
        rows += read
    if by_language:
        return keyed, np.array(
            [row[4:] for row in rows], dtype=float
        ).reshape(len(rows), len(CHOICES))
    # Lay the fixed rows out per (pair, reason): counts [category x choice], then per choice
    # the feature sums and the k x k outer-product sums (StyleSums' layout).
    index: dict[tuple, int] = {}
    at = np.array([index.setdefault(key, len(index)) for key in keyed], dtype=int)
    choice_of = {c: i for i, c in enumerate(CHOICES)}
    choice = np.array([choice_of[row[3]] for row in rows], dtype=int)
    width = 4 * len(CHOICES) + (len(CHOICES) * (k + k * k + 1) if style else 0)
    if not rows:
        return [], np.zeros((0, width))
    sums = np.nan_to_num(np.array([row[4:] for row in rows], dtype=float))
    out = np.zeros((len(index), width))
    columns = np.arange(4) * len(CHOICES) + choice[:, None]
    if style:
        upper = np.triu_indices(k)  # the order of `pairs`
        products = np.zeros((len(rows), k, k))
        products[:, upper[0], upper[1]] = sums[:, 4 + k:-1]
        products[:, upper[1], upper[0]] = sums[:, 4 + k:-1]
        sums = np.hstack([sums[:, :4 + k], products.reshape(len(rows), k * k), sums[:, -1:]])
        base = 4 * len(CHOICES) + choice * (k + k * k)
        ids = 4 * len(CHOICES) + len(CHOICES) * (k + k * k) + choice
        columns = np.hstack([columns, base[:, None] + np.arange(k + k * k), ids[:, None]])
    # A key may come from both vote tables: add, never overwrite.
    np.add.at(out, (at[:, None], columns), sums)
    return list(index), out


@dataclass
class CategoryVotes:
    """One category's rating input: counted votes per (model_a, model_b), and exclusions.

    `counts` has one row per pair as voted: A wins, B wins, ties, both bad. `style_x` /
    `style_xx` (overall only, when asked) are the StyleSums arrays for those rows, and
    `style_ids` the sum of the ids of the votes behind each row and outcome (a fingerprint of
    which votes the style sums came from).
    """

    model_a: np.ndarray
    model_b: np.ndarray
    counts: np.ndarray
    excluded: dict[str, int]
    style_x: np.ndarray | None = None
    style_xx: np.ndarray | None = None
    style_ids: np.ndarray | None = None

    @property
    def counted(self) -> int:
        return int(self.counts.sum())


class _Table:
    """Tally rows: key columns (..., model_a, model_b, reason) and a float matrix of sums."""

    def __init__(self, keys: list[tuple], values: np.ndarray):
        self.index: dict[tuple, int] = {}
        at = np.array([self.index.setdefault(key, len(self.index)) for key in keys], dtype=int)
        self.keys = list(self.index)
        if len(self.keys) == len(keys):  # each key once (the usual case): nothing to add up
            self.values = np.array(values, dtype=float)
        else:
            self.values = np.zeros((len(self.keys), values.shape[1]))
            order = np.argsort(at, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(at[order]) != 0])
            self.values[at[order][starts]] = np.add.reduceat(values[order], starts, axis=0)
        self._columns: tuple[np.ndarray, ...] | None = None

    def key_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model_a ids, model_b ids, reasons) of the rows, as arrays."""
        if self._columns is None or len(self._columns[0]) != len(self.keys):
            size = len(self.keys)
            self._columns = (
                np.fromiter((key[-3] for key in self.keys), np.int64, size),
                np.fromiter((key[-2] for key in self.keys), np.int64, size),
                np.array([key[-1] for key in self.keys], dtype=object),
            )
        return self._columns

    def move(self, other: _Table, reason: str) -> None:
        """Subtract `other`'s counted rows from ours and file them under `reason`."""
        counted = [i for i, key in enumerate(other.keys) if not key[-1]]
        new = {(*other.keys[i][:-1], reason) for i in counted} - self.index.keys()
        for key in sorted(new):
            self.index[key] = len(self.keys)
            self.keys.append(key)
        if new:
            self.values = np.vstack([self.values, np.zeros((len(new), self.values.shape[1]))])
        for i in counted:
            key = other.keys[i]
            self.values[self.index[key]] -= other.values[i]
            self.values[self.index[(*key[:-1], reason)]] += other.values[i]


def _listed(values, field: str, fetched: list | None = None) -> Q | None:
    """`field IN (values)`, None when `values` (a one-column queryset) is empty; `fetched`
    are its values when the caller has them already.

    On PostgreSQL the values are fetched and listed: with them in hand the planner picks an
    index lookup for a few and a hashed list for many, where the subquery form scans every
    vote. SQLite indexes an IN (subquery) by itself, and limits the number of parameters, so
    it keeps the subquery."""
    if connection.vendor != "postgresql":
        empty = not fetched if fetched is not None else not values.exists()
        return None if empty else Q(**{f"{field}__in": values})
    if fetched is None:
        fetched = list(values.values_list(field, flat=True))
    return Q(**{f"{field}__in": fetched}) if fetched else None


@dataclass
class VoterVotes:
    """Votes in (voter, time) order as arrays: the outlier test's input.

    `voter` numbers the voters 0, 1, … in order; `hashes[v]` is voter v's visitor hash."""

    voter: np.ndarray
    hashes: list[str]
    model_a: np.ndarray
    model_b: np.ndarray
    a_won: np.ndarray
    vote_id: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> VoterVotes:
        """From (visitor_hash, model_a_id, model_b_id, choice[, id]) rows in voter order."""
        size = len(rows)

        def column(i: int, dtype=np.int64) -> np.ndarray:  # (zip(*rows) is 5x slower)
            values = map(operator.itemgetter(i), rows)
            return np.fromiter(values, dtype, size) if dtype else np.array(list(values), object)

        marks = column(0, None)
        new = np.r_[True, marks[1:] != marks[:-1]][:size]
        return cls(
            voter=np.cumsum(new) - 1,
            hashes=marks[new].tolist(),
            model_a=column(1),
            model_b=column(2),
            a_won=column(3, None) == "a",
            vote_id=column(4) if rows and len(rows[0]) > 4 else np.arange(size),
        )

    def __len__(self) -> int:
        return len(self.voter)

    def without(self, vote_ids: set[int], *, min_votes: int) -> VoterVotes:
        """These votes less the given ids, and less the voters then left with too few."""
        if not vote_ids or not len(self):
            return self
        keep = ~np.isin(self.vote_id, np.fromiter(vote_ids, np.int64, len(vote_ids)))
        per_voter = np.bincount(self.voter[keep], minlength=len(self.hashes))
        keep &= per_voter[self.voter] >= min_votes
        kept_voters = np.flatnonzero(per_voter >= min_votes)
        renumber = np.cumsum(per_voter >= min_votes) - 1
        return VoterVotes(
            voter=renumber[self.voter[keep]],
            hashes=[self.hashes[v] for v in kept_voters],
            model_a=self.model_a[keep],
            model_b=self.model_b[keep],
            a_won=self.a_won[keep],
            vote_id=self.vote_id[keep],
        )


@dataclass
class Consensus:
    """Decisive votes per unordered pair: `pairs` (lo id, hi id) rows in sorted order and
    `wins` (lo wins, hi wins) rows."""

    pairs: np.ndarray
    wins: np.ndarray

    @classmethod
    def from_dict(cls, wins: dict[tuple[int, int], tuple[float, float]]) -> Consensus:
        pairs = sorted(wins)
        return cls(
            np.array(pairs, dtype=np.int64).reshape(-1, 2),
            np.array([wins[pair] for pair in pairs], dtype=float).reshape(-1, 2),
        )


def _voter_votes(*, cutoff: dt.datetime, min_votes: int) -> VoterVotes:
    """Decisive arena votes with no row-level reason, of voters with at least `min_votes` of
    them, in (visitor, time) order. Ties never enter the outlier test, so they are not sorted."""
    sql, params = _source_votes(
        Vote,
        cutoff=cutoff,
        columns={
            "vh": F("visitor_hash"), "ma": F("model_a_id"), "mb": F("model_b_id"),
            "ch": F("choice"), "ts": F("created_at"), "vid": F("pk"),
        },
        scope=Q(choice__in=("a", "b")),
    )
    # Byte order sorts the hashes fastest and the same on every database.
    collate = ' COLLATE "C"' if connection.vendor == "postgresql" else ""
    return VoterVotes.from_rows(
        _raw(
            f"SELECT vh, ma, mb, ch, vid FROM (SELECT vh, ma, mb, ch, ts, vid, "  # noqa: S608
            f"COUNT(*) OVER (PARTITION BY vh{collate}) AS n FROM ({sql}) votes "
            f"WHERE rs = 0) counted WHERE n >= %s ORDER BY vh{collate}, ts, vid",
            (*params, min_votes),
        )
    )


_SNAPSHOT_ID_RE = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


class ConcurrentReadsError(RuntimeError):
    """A read on its own connection could not share the recompute's snapshot."""


def _snapshot_import(cursor, snapshot: str) -> None:
    """Make this transaction see what the one that exported `snapshot` sees."""
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    except DatabaseError as exc:
        raise ConcurrentReadsError(
            f"The ratings recompute could not share its database snapshot with the extra "
            f"connections of its concurrent reads ({exc}). Behind a transaction-mode pooler "
            "such as PgBouncer this cannot work: set ARENA_RECOMPUTE_CONCURRENT_READS=false."
        ) from exc


def _reads(jobs: dict[str, Callable[[], object]], *, concurrent: bool) -> dict[str, object]:
    """Run independent reads, each on its own connection at once when `concurrent`.

    Every concurrent read sees the caller's transaction snapshot (pg_export_snapshot), so
    they agree with each other and with the caller's later reads of the same cut-off. Each
    runs without parallel workers: passes side by side keep the cores busier than one pass
    split three ways (benchmarks/README.md)."""
    if not concurrent or len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    if not _SNAPSHOT_ID_RE.match(snapshot):  # it goes into SQL as a literal below
        raise ValueError(f"unexpected snapshot id {snapshot!r}")

    def run(name: str, job: Callable[[], object]) -> object:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                _snapshot_import(cursor, snapshot)
                _read_settings(cursor, parallel=False)
                with stage(f"read {name}"):
                    return job()
        finally:
            connection.close()

    # One more read at a time than there are cores, longest first: the extra one keeps a core
    # busy while another thread turns rows into Python objects; more only contend (two
    # cores: 3 at once 7.9 s median for the whole recompute at 2M votes, 4 at once 8.5 s).
    workers = min(len(jobs), (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recompute-read") as pool:
        futures = {name: pool.submit(run, name, job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


class VoteTallies:
    """Every category's counts at one cut-off (see the comment above _reason_case).

    Without a `plan` the filter plan is read too. With `voter_min_votes` the outlier test's
    votes (votes_by_voter) are read along with the counts. The reads are independent of each
    other and run at once when `concurrent` (recompute_reads says when that is possible)."""

    def __init__(self, *, cutoff: dt.datetime, plan: FilterPlan | None = None, style: bool,
                 languages: bool = True, voter_min_votes: int | None = None,
                 concurrent: bool = False):
        self.cutoff = cutoff
        self.style = style
        self.languages_read = languages
        # Longest first (see _reads).
        jobs: dict[str, Callable[[], object]] = {
            "counts": lambda: self._table(by_language=False),
        }
        if voter_min_votes is not None:
            jobs["voters' votes"] = lambda: _voter_votes(cutoff=cutoff, min_votes=voter_min_votes)
        if languages:
            jobs["language counts"] = lambda: self._table(by_language=True)
        if plan is None:
            jobs["filter plan"] = lambda: filter_plan(cutoff=cutoff)
        read = _reads(jobs, concurrent=concurrent)
        self.plan = plan if plan is not None else read["filter plan"]
        self.reasons = list(_exclusions(Vote, self.plan))
        self.fixed = read["counts"]
        self.by_language = read.get("language counts") or _Table([], np.zeros((0, 4)))
        self._voter_votes = (
            (voter_min_votes, read["voters' votes"]) if voter_min_votes is not None else None
        )
        # The votes the hot-prompt down-sampling drops, worked out once for every read below.
        self.dropped_ids: set[int] = set()
        self.dropped: Q | None = None
        if self.plan.dedup and self.plan.hot_prompts:
            ids = _dedup_dropped_ids(self.plan)
            fetched = list(ids.values_list("pk", flat=True))
            self.dropped_ids = set(fetched)
            self.dropped = _listed(ids, "pk", fetched)
        if self.dropped is not None:
            self._move(self.dropped, _DEDUP)

    def _table(self, *, by_language: bool, **kwargs) -> _Table:
        return _Table(
            *_tally_rows(
                cutoff=self.cutoff, by_language=by_language,
                style=self.style and not by_language, **kwargs,
            )
        )

    def _move(self, scope: Q, reason: str) -> None:
        self.fixed.move(self._table(by_language=False, sources=(Vote,), scope=scope), reason)
        if self.languages_read:
            self.by_language.move(
                self._table(by_language=True, sources=(Vote,), scope=scope), reason
            )

    def consensus(self) -> Consensus:
        """Counted decisive overall votes per unordered pair."""
        model_a, model_b, reasons = self.fixed.key_columns()
        counted = reasons == ""
        a, b, values = model_a[counted], model_b[counted], self.fixed.values[counted]
        a_is_lo = a <= b
        lo, hi = np.where(a_is_lo, a, b), np.where(a_is_lo, b, a)
        wins = np.column_stack([
            np.where(a_is_lo, values[:, 0], values[:, 1]),
            np.where(a_is_lo, values[:, 1], values[:, 0]),
        ])
        pairs, at = np.unique(np.column_stack([lo, hi]), axis=0, return_inverse=True)
        summed = np.zeros((len(pairs), 2))
        np.add.at(summed, at.ravel(), wins)
        return Consensus(pairs.reshape(-1, 2), summed)

    def flags_apply(self) -> None:
        """Move the counted votes of flagged voters (not cleared) to the voter_flagged reason."""
        if not self.plan.voter_flags:
            return
        scope = _listed(_flagged_voters(), "visitor_hash")
        if scope is None:
            return
        if self.dropped is not None:
            scope &= ~self.dropped
        self._move(scope, _FLAGGED)

    def _counted(self) -> Q:
        """Arena votes not dropped by the down-sampling (the row reasons are in `rs`)."""
        return ~self.dropped if self.dropped is not None else Q()

    def votes_by_voter(self, *, min_votes: int) -> VoterVotes:
        """Decisive counted arena votes of voters with at least `min_votes` of them, in
        (visitor, time) order. Flagged voters are not left out: this feeds their test.

        The votes read with the counts do not know the hot prompts yet: their dropped votes
        come out here, and with them any voter left with fewer than `min_votes`."""
        if self._voter_votes is not None and self._voter_votes[0] == min_votes:
            votes = self._voter_votes[1]
        else:
            votes = _voter_votes(cutoff=self.cutoff, min_votes=min_votes)
        return votes.without(self.dropped_ids, min_votes=min_votes)

    def votes_counted_by(self, visitor_hashes: list[str]) -> dict[str, int]:
        """Counted arena votes (ties included) of the given voters, by voter."""
        if not visitor_hashes:
            return {}
        sql, params = _source_votes(
            Vote, cutoff=self.cutoff, columns={"vh": F("visitor_hash")},
            scope=self._counted() & Q(visitor_hash__in=visitor_hashes),
        )
        return dict(
            _raw(f"SELECT vh, COUNT(*) FROM ({sql}) votes WHERE rs = 0 GROUP BY vh", params)  # noqa: S608
        )

    def _language_rows(self) -> dict[str, np.ndarray]:
        """Row numbers of the language table, per language."""
        if not hasattr(self, "_by_code"):
            codes = np.array([key[0] for key in self.by_language.keys], dtype=str)
            order = np.argsort(codes, kind="stable")
            names, starts = np.unique(codes[order], return_index=True)
            groups = np.split(order, starts[1:]) if len(names) else []
            self._by_code = dict(zip(names.tolist(), groups, strict=True))
        return self._by_code

    def languages(self, *, min_votes: int) -> list[str]:
        """Languages with at least min_votes counted votes, most votes first."""
        table = self.by_language
        counted = table.key_columns()[2] == ""
        per_row = table.values.sum(axis=1) * counted if len(table.keys) else np.zeros(0)
        totals = {code: float(per_row[rows].sum()) for code, rows in self._language_rows().items()}
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return [language for language, votes in ranked if votes >= min_votes]

    def category(self, key: str) -> CategoryVotes:
        if key.startswith(LANGUAGE_PREFIX):
            language = key.removeprefix(LANGUAGE_PREFIX)
            table = self.by_language
            picked = self._language_rows().get(language, np.zeros(0, dtype=int))
            offset = 0
        else:
            table = self.fixed
            picked = slice(None)  # every row: a view, not a copy of the (wide) sums
            offset = 4 * list(_category_flags()).index(key)
        model_a, model_b, reasons = (column[picked] for column in table.key_columns())
        counts = np.rint(table.values[picked, offset : offset + 4]).reshape(-1, 4)
        excluded = dict.fromkeys(self.reasons, 0)
        for reason in set(reasons.tolist()) - {""}:
            excluded[reason] += int(counts[reasons == reason].sum())
        keep = np.flatnonzero((reasons == "") & (counts.sum(axis=1) > 0))
        keep = keep[np.lexsort((model_b[keep], model_a[keep]))]
        result = CategoryVotes(model_a[keep], model_b[keep], counts[keep], excluded)
        if self.style and key == OVERALL:
            k = len(STYLE_FEATURES)
            kept = table.values[keep]
            style_end = 16 + len(CHOICES) * (k + k * k)
            sums = kept[:, 16:style_end].reshape(-1, len(CHOICES), k + k * k)
            result.style_x = sums[:, :, :k]
            result.style_xx = sums[:, :, k:].reshape(-1, len(CHOICES), k, k)
            result.style_ids = np.rint(kept[:, style_end:]).astype(np.int64)
        return result


def _read_settings(cursor, *, parallel: bool) -> None:
    """This transaction's PostgreSQL settings for the recompute's reads."""
    cursor.execute(
        "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)"
        + ("" if parallel else ", set_config('max_parallel_workers_per_gather', '0', true)"),
        [settings.ARENA_RECOMPUTE_WORK_MEM],
    )


@contextmanager
def recompute_reads() -> Iterator[bool]:
    """A transaction for the recompute's reads; on PostgreSQL with more sort/hash memory
    (ARENA_RECOMPUTE_WORK_MEM) and without JIT compilation, which costs more than it saves
    on these one-off queries.

    Yields whether the big reads may run at once on their own connections (_reads): on
    PostgreSQL with ARENA_RECOMPUTE_CONCURRENT_READS, and only when this transaction is the
    outermost one (other connections cannot see what an enclosing transaction wrote). The
    transaction is then REPEATABLE READ, so every read of the recompute, on any of the
    connections, sees the votes as they were when it began."""
    concurrent = (
        connection.vendor == "postgresql"
        and settings.ARENA_RECOMPUTE_CONCURRENT_READS
        and not connection.in_atomic_block
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if concurrent:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                _read_settings(cursor, parallel=True)
        yield concurrent


def _choice_counts() -> dict[str, Count]:
    return {
        "wins_a": Count("pk", filter=Q(choice="a")),
        "wins_b": Count("pk", filter=Q(choice="b")),
        "ties": Count("pk", filter=Q(choice="tie")),
        "both_bad": Count("pk", filter=Q(choice="bothbad")),
    }


# --- the pages -------------------------------------------------------------------------------


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
