"""Reading votes into counts: the rating input of every category at one cut-off.

A recompute counts the votes twice, whatever the number of categories: once grouped by
(model_a, model_b, reason) with a count per (category, choice) and the style sums, once
grouped by (language, model_a, model_b, reason). The reason is the first of the row-level
exclusions that applies (a small integer in SQL, its name, "" = counted, in Python). The votes
a hot prompt drops and the votes of flagged voters are then moved out of the counted rows with
the same two queries over just those votes (small, and picked by a top-level IN that the
database hashes), so the outlier test can run between the counts and the fit. Along with the
two counts, the filter plan and the outlier test's votes are read: four independent reads,
side by side on PostgreSQL (consistent_reads.ConsistentReads).

The database does the counting: Python never sees one row per vote except in the outlier
test's sorted walk (VoterVotes).
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from django.db import connection
from django.db.models import Case, F, IntegerField, Q, Value, When

from battles.features import STYLE_FEATURES
from battles.models import Vote
from leaderboard.categories import LANGUAGE_PREFIX, OVERALL, category_filter
from leaderboard.consistent_reads import ConsistentReads, in_turn
from leaderboard.exclusions import (
    FilterPlan,
    dedup_dropped_ids,
    exclusion_reasons,
    filter_plan,
    flagged_voter_hashes,
)
from leaderboard.models import ImportedVote
from leaderboard.sql import compiled, fetch

# The vote tables the ratings read, through the columns of battles.AbstractVote.
VOTE_SOURCES = (Vote, ImportedVote)
# Outcomes in the rating engine's order: A wins, B wins, tie, both bad.
CHOICES = ("a", "b", "tie", "bothbad")
_FLAGGED = "voter_flagged"
_DEDUP = "prompt_dedup"


def _category_flags() -> dict[str, str]:
    """Fixed category -> the 0/1 column the tally reads ("" for overall: every vote)."""
    return {OVERALL: "", "multi_turn": "c_multi", "long_prompt": "c_long", "code": "c_code"}


def _row_exclusions(source) -> dict[str, Q]:
    """The row-level reasons to leave a vote out, in precedence order. The plan's reasons
    (hot prompts, flagged voters) are moved later, so no plan is needed."""
    reasons = exclusion_reasons(source=source, plan=FilterPlan())
    return {name: q for name, q in reasons.items() if q is not None}


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


def _source_votes(
    source, *, cutoff: dt.datetime | None, columns: dict, scope: Q, reasons: bool = True
):
    """SQL of one vote table's votes up to the cut-off (every vote without one): `columns`
    plus `rs`, the reason (0 for every vote when not `reasons`)."""
    queryset = source.objects.filter(scope).order_by()
    if cutoff is not None:
        queryset = queryset.filter(created_at__lte=cutoff)
    reason = _reason_case(source) if reasons else Value(0, output_field=IntegerField())
    named = {**columns, "rs": reason}
    return compiled(queryset.annotate(**named).values_list(*named))


def row_reasons_any(source) -> Q | None:
    """The votes of `source` with a row-level reason to be left out, or None if none can."""
    reasons = list(_row_exclusions(source).values())
    if not reasons:
        return None
    found = reasons[0]
    for reason in reasons[1:]:
        found |= reason
    return found


def _tally_rows(
    *,
    cutoff: dt.datetime | None,
    by_language: bool,
    style: bool,
    sources=VOTE_SOURCES,
    scope: Q | None = None,
    reasons: bool = True,
) -> tuple[list[tuple], np.ndarray]:
    """One GROUP BY per vote table: keys (..., model_a, model_b, reason) and their sums (both
    tables' rows may share a key; _Table adds them up). Without `reasons` every vote is under
    "" (counted), as the stored tallies keep them (aggregates.py)."""
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
        sql, params = _source_votes(
            source, cutoff=cutoff, columns=columns, scope=scope, reasons=reasons
        )
        # Only the ORM's compiled SQL and constants go into these statements (S608).
        read = fetch(
            f"SELECT {keys}, {', '.join(aggregates)} FROM ({sql}) votes GROUP BY {keys}",  # noqa: S608
            params,
        )
        names = _row_reasons(source)
        keyed += [(*row[:reason_at], names[row[reason_at]]) for row in read]
        rows += read
    if by_language:
        return keyed, np.array([row[4:] for row in rows], dtype=float).reshape(
            len(rows), len(CHOICES)
        )
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
        products[:, upper[0], upper[1]] = sums[:, 4 + k : -1]
        products[:, upper[1], upper[0]] = sums[:, 4 + k : -1]
        sums = np.hstack([sums[:, : 4 + k], products.reshape(len(rows), k * k), sums[:, -1:]])
        base = 4 * len(CHOICES) + choice * (k + k * k)
        ids = 4 * len(CHOICES) + len(CHOICES) * (k + k * k) + choice
        columns = np.hstack([columns, base[:, None] + np.arange(k + k * k), ids[:, None]])
    # A key may come from both vote tables: add, never overwrite.
    np.add.at(out, (at[:, None], columns), sums)
    return list(index), out


class StoredCounts(Protocol):
    """Where VoteTallies takes its two count tables from instead of reading every vote
    (aggregates.StoredTallies)."""

    def fixed(self, *, cutoff: dt.datetime, style: bool) -> _Table: ...

    def by_language(self, *, cutoff: dt.datetime) -> _Table: ...


def _per_model(
    model_a: np.ndarray, model_b: np.ndarray, reasons: np.ndarray, votes: np.ndarray
) -> dict[int, dict[str, int]]:
    """Left-out votes per model and reason, from the tally's (model_a, model_b, reason) rows."""
    out: dict[int, dict[str, int]] = {}
    left_out = (reasons != "") & (votes > 0)
    for side in (model_a, model_b):
        for pk, reason, n in zip(
            side[left_out].tolist(),
            reasons[left_out].tolist(),
            votes[left_out].tolist(),
            strict=True,
        ):
            by_reason = out.setdefault(int(pk), {})
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    return out


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
    # Per model id, the votes it took part in that were left out, by reason (a vote counts for
    # both its models): the transparency report's figures.
    excluded_by_model: dict[int, dict[str, int]] = field(default_factory=dict)

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

    @classmethod
    def combined(cls, parts: list[tuple[_Table, float]], width: int) -> _Table:
        """The sum of the tables, each times its sign (rows of one key added up)."""
        keys = [key for table, _ in parts for key in table.keys]
        values = [sign * table.values[:, :width] for table, sign in parts if len(table.keys)]
        return cls(keys, np.vstack(values) if values else np.zeros((0, width)))

    def reassigned(self) -> _Table:
        """Minus these rows under "" (counted) and plus them under their own reason: what
        moves votes stored as counted to the reason they have now."""
        return _Table(
            [(*key[:-1], "") for key in self.keys] + self.keys,
            np.vstack([-self.values, self.values]) if self.keys else self.values,
        )

    def totals(self) -> _Table:
        """Every row under "" (the votes whatever their reason), zero rows left out."""
        table = _Table([(*key[:-1], "") for key in self.keys], self.values)
        return table.nonzero()

    def nonzero(self) -> _Table:
        """The rows with a vote: a row whose counts (its first four columns: overall, or the
        language, per choice) are all zero holds none, whatever float dust its style sums
        kept from votes added and taken away."""
        keep = np.flatnonzero(np.any(self.values[:, :4] != 0, axis=1)) if self.keys else []
        return _Table([self.keys[i] for i in keep], self.values[keep])

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

        def column(i: int, dtype=np.int64) -> np.ndarray:  # far faster than zip(*rows)
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
            "vh": F("visitor_hash"),
            "ma": F("model_a_id"),
            "mb": F("model_b_id"),
            "ch": F("choice"),
            "ts": F("created_at"),
            "vid": F("pk"),
        },
        scope=Q(choice__in=("a", "b")),
    )
    # Byte order sorts the hashes fastest and the same on every database.
    collate = ' COLLATE "C"' if connection.vendor == "postgresql" else ""
    return VoterVotes.from_rows(
        fetch(
            f"SELECT vh, ma, mb, ch, vid FROM (SELECT vh, ma, mb, ch, ts, vid, "  # noqa: S608
            f"COUNT(*) OVER (PARTITION BY vh{collate}) AS n FROM ({sql}) votes "
            f"WHERE rs = 0) counted WHERE n >= %s ORDER BY vh{collate}, ts, vid",
            (*params, min_votes),
        )
    )


class VoteTallies:
    """Every category's counts at one cut-off (see the module's docstring).

    Without a `plan` the filter plan is read too. With `voter_min_votes` the outlier test's
    votes (votes_by_voter) are read along with the counts. The reads are independent of each
    other: given `reads` (an entered ConsistentReads) they run through it, at once where it
    can; without, one after the other on this connection."""

    def __init__(
        self,
        *,
        cutoff: dt.datetime,
        plan: FilterPlan | None = None,
        style: bool,
        languages: bool = True,
        voter_min_votes: int | None = None,
        reads: ConsistentReads | None = None,
        stored: StoredCounts | None = None,
    ):
        self.cutoff = cutoff
        self.style = style
        self.languages_read = languages
        # Longest first: the reads run at once start in this order.
        jobs: dict[str, Callable[[], object]] = {
            "counts": (lambda: stored.fixed(cutoff=cutoff, style=style))
            if stored is not None
            else (lambda: self._table(by_language=False)),
        }
        if voter_min_votes is not None:
            jobs["voters' votes"] = lambda: _voter_votes(cutoff=cutoff, min_votes=voter_min_votes)
        if languages:
            jobs["language counts"] = (
                (lambda: stored.by_language(cutoff=cutoff))
                if stored is not None
                else (lambda: self._table(by_language=True))
            )
        if plan is None:
            jobs["filter plan"] = lambda: filter_plan(cutoff=cutoff)
        read = reads.run(jobs) if reads is not None else in_turn(jobs)
        self.plan = plan if plan is not None else read["filter plan"]
        self.reasons = list(exclusion_reasons(source=Vote, plan=self.plan))
        self.fixed = read["counts"]
        self.by_language = read.get("language counts") or _Table([], np.zeros((0, 4)))
        self._voter_votes = (
            (voter_min_votes, read["voters' votes"]) if voter_min_votes is not None else None
        )
        # The votes the hot-prompt down-sampling drops, worked out once for every read below.
        self.dropped_ids: set[int] = set()
        self.dropped: Q | None = None
        if self.plan.dedup and self.plan.hot_prompts:
            ids = dedup_dropped_ids(plan=self.plan)
            fetched = list(ids.values_list("pk", flat=True))
            self.dropped_ids = set(fetched)
            self.dropped = _listed(ids, "pk", fetched)
        if self.dropped is not None:
            self._move(self.dropped, _DEDUP)

    def _table(self, *, by_language: bool, **kwargs) -> _Table:
        return _Table(
            *_tally_rows(
                cutoff=self.cutoff,
                by_language=by_language,
                style=self.style and not by_language,
                **kwargs,
            )
        )

    def _move(self, scope: Q, reason: str) -> None:
        self.fixed.move(self._table(by_language=False, sources=(Vote,), scope=scope), reason)
        if self.languages_read:
            self.by_language.move(
                self._table(by_language=True, sources=(Vote,), scope=scope), reason
            )

    def totals(self) -> tuple[_Table, _Table]:
        """(fixed, by language) tables of every vote up to the cut-off under "", whatever its
        reason: moving votes between reasons leaves them as they are."""
        return self.fixed.totals(), self.by_language.totals()

    def consensus(self) -> Consensus:
        """Counted decisive overall votes per unordered pair."""
        model_a, model_b, reasons = self.fixed.key_columns()
        counted = reasons == ""
        a, b, values = model_a[counted], model_b[counted], self.fixed.values[counted]
        a_is_lo = a <= b
        lo, hi = np.where(a_is_lo, a, b), np.where(a_is_lo, b, a)
        wins = np.column_stack(
            [
                np.where(a_is_lo, values[:, 0], values[:, 1]),
                np.where(a_is_lo, values[:, 1], values[:, 0]),
            ]
        )
        pairs, at = np.unique(np.column_stack([lo, hi]), axis=0, return_inverse=True)
        summed = np.zeros((len(pairs), 2))
        np.add.at(summed, at.ravel(), wins)
        return Consensus(pairs.reshape(-1, 2), summed)

    def flags_apply(self) -> None:
        """Move the counted votes of flagged voters (not cleared) to the voter_flagged reason."""
        if not self.plan.voter_flags:
            return
        scope = _listed(flagged_voter_hashes(), "visitor_hash")
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
            Vote,
            cutoff=self.cutoff,
            columns={"vh": F("visitor_hash")},
            scope=self._counted() & Q(visitor_hash__in=visitor_hashes),
        )
        return dict(
            fetch(f"SELECT vh, COUNT(*) FROM ({sql}) votes WHERE rs = 0 GROUP BY vh", params)  # noqa: S608
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
        result.excluded_by_model = _per_model(model_a, model_b, reasons, counts.sum(axis=1))
        if self.style and key == OVERALL:
            k = len(STYLE_FEATURES)
            kept = table.values[keep]
            style_end = 16 + len(CHOICES) * (k + k * k)
            sums = kept[:, 16:style_end].reshape(-1, len(CHOICES), k + k * k)
            result.style_x = sums[:, :, :k]
            result.style_xx = sums[:, :, k:].reshape(-1, len(CHOICES), k, k)
            result.style_ids = np.rint(kept[:, style_end:]).astype(np.int64)
        return result
