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
import hashlib
import math
import operator
import threading
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
from leaderboard.sql import Listed, compiled, fetch

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
) -> _Table:
    """One GROUP BY per vote table, as one table: keys (..., model_a, model_b, reason) and
    their sums. Without `reasons` every vote is under "" (counted), as the stored tallies keep
    them (aggregates.py)."""
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
    width = len(CHOICES) if by_language else _fixed_width(style)
    tables = []
    for source in sources:
        sql, params = _source_votes(
            source, cutoff=cutoff, columns=columns, scope=scope, reasons=reasons
        )
        # Only the ORM's compiled SQL and constants go into these statements (S608).
        read = fetch(
            f"SELECT {keys}, {', '.join(aggregates)} FROM ({sql}) votes GROUP BY {keys}",  # noqa: S608
            params,
        )
        reason_codes = LABELS.codes(_row_reasons(source))
        lay_out = _language_rows_table if by_language else _fixed_rows_table
        tables.append((lay_out(read, reason_codes, width=width), 1.0))
    # A key may come from both vote tables: combined adds, never overwrites.
    return _Table.combined(tables, width)


def _fixed_width(style: bool) -> int:
    return 4 * len(CHOICES) + (len(CHOICES) * (_STYLE_TERMS + 1) if style else 0)


# Per choice: the k feature sums, then the sums of their products i <= j (row by row: the
# order of np.triu_indices), which are symmetric; StyleSums gets the full k x k.
_STYLE_TERMS = len(STYLE_FEATURES) + len(STYLE_FEATURES) * (len(STYLE_FEATURES) + 1) // 2


def _column(rows: list[tuple], i: int) -> np.ndarray:
    return np.fromiter(map(operator.itemgetter(i), rows), np.int64, len(rows))


def _language_rows_table(rows: list[tuple], reason_codes: np.ndarray, *, width: int) -> _Table:
    """(language, model_a, model_b, reason, count per choice) rows as a table."""
    if not rows:
        return _Table.empty(key_columns=4, width=width)
    return _Table(
        (
            LABELS.codes(map(operator.itemgetter(0), rows)),
            _column(rows, 1),
            _column(rows, 2),
            reason_codes[_column(rows, 3)],
        ),
        np.array([row[4:] for row in rows], dtype=float).reshape(len(rows), width),
    )


def _fixed_rows_table(rows: list[tuple], reason_codes: np.ndarray, *, width: int) -> _Table:
    """(model_a, model_b, reason, choice, sums) rows laid out per (pair, reason): counts
    [category x choice], then per choice the style sums (_STYLE_TERMS), then per choice the
    sum of the vote ids."""
    if not rows:
        return _Table.empty(key_columns=3, width=width)
    style = width > 4 * len(CHOICES)
    keys, at = _factorize((_column(rows, 0), _column(rows, 1), reason_codes[_column(rows, 2)]))
    choice_of = {c: i for i, c in enumerate(CHOICES)}
    choice = np.fromiter((choice_of[row[3]] for row in rows), np.int64, len(rows))
    sums = np.nan_to_num(np.array([row[4:] for row in rows], dtype=float))
    out = np.zeros((len(keys[0]), width))
    columns = np.arange(4) * len(CHOICES) + choice[:, None]
    if style:
        base = 4 * len(CHOICES) + choice * _STYLE_TERMS
        ids = 4 * len(CHOICES) + len(CHOICES) * _STYLE_TERMS + choice
        columns = np.hstack([columns, base[:, None] + np.arange(_STYLE_TERMS), ids[:, None]])
    np.add.at(out, (at[:, None], columns), sums)
    return _Table(keys, out, grouped=True)


@dataclass(frozen=True)
class LeftOutScope:
    """The arena votes a known filter plan leaves out under one reason: `at(low, high)` is
    their filter among the ids in (low, high] (no upper end if high is None; None where it
    holds no vote), `digest(upto)` a digest of what decides which votes with ids up to
    `upto` it holds (aggregates.StoredTallies.left_out keeps their counts while it holds)."""

    reason: str
    at: Callable[[int, int | None], Q | None]
    digest: Callable[[int], str]


def _ids_between(low: int, high: int | None) -> Q:
    between = Q(pk__gt=low)
    return between & Q(pk__lte=high) if high is not None else between


def _ids_digest(ids: np.ndarray, upto: int) -> bytes:
    return np.ascontiguousarray(ids[ids <= upto], dtype="<i8").tobytes()


def _dropped_between(ordered: np.ndarray, plan: FilterPlan, low: int, high: int | None) -> Q | None:
    """The dropped votes (`ordered`: their ids, sorted) with ids in (low, high] as a filter,
    or None if there are none."""
    inside = ordered[(ordered > low) & ((ordered <= high) if high is not None else True)]
    if not inside.size:
        return None
    return _listed(dedup_dropped_ids(plan=plan), "pk", inside.tolist()) & _ids_between(low, high)


class _Once:
    """A value made on first use, once, whichever thread asks first (the others wait)."""

    def __init__(self, make: Callable[[], object]):
        self._make, self._lock, self._made = make, threading.Lock(), False

    def __call__(self):
        with self._lock:
            if not self._made:
                self._value, self._made = self._make(), True
        return self._value


class StoredCounts(Protocol):
    """Where VoteTallies takes its two count tables from instead of reading every vote
    (aggregates.StoredTallies)."""

    def fixed(self, *, cutoff: dt.datetime, style: bool) -> _Table: ...

    def by_language(self, *, cutoff: dt.datetime) -> _Table: ...

    def left_out(
        self, scope: LeftOutScope, *, cutoff: dt.datetime, style: bool, languages: bool
    ) -> tuple[tuple[_Table, _Table | None], list]: ...


def _per_model(
    model_a: np.ndarray, model_b: np.ndarray, reasons: np.ndarray, votes: np.ndarray
) -> dict[int, dict[str, int]]:
    """Left-out votes per model and reason, from the tally's (model_a, model_b, reason code)
    rows."""
    out: dict[int, dict[str, int]] = {}
    left_out = (reasons != 0) & (votes > 0)
    if not left_out.any():
        return out
    # Summed per (model, reason) by array operations: a row per pair and reason is tens of
    # thousands of rows at 200 models, for each of a dozen categories. Model ids and reason
    # codes are small integers: one bincount over (model, reason) packed into one.
    pks = np.concatenate([model_a[left_out], model_b[left_out]])
    codes = np.tile(reasons[left_out], 2)
    low, span = int(pks.min()), int(codes.max()) + 1
    totals = np.rint(
        np.bincount((pks - low) * span + codes, weights=np.tile(votes[left_out], 2))
    ).astype(np.int64)
    found = np.flatnonzero(totals)
    names = LABELS.names(found % span)
    for packed, reason, n in zip(found.tolist(), names, totals[found].tolist(), strict=True):
        out.setdefault(packed // span + low, {})[reason] = n
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


class _Labels:
    """The strings of the tables' keys (languages, reasons) as small integers, the same in
    every table of the process, so that keys are integer arrays the database's rows, the
    stored tallies and numpy all agree on. "" (no language; counted) is 0."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}
        self._names: list[str] = [""]
        self._lock = threading.Lock()  # the reads run in threads (ConsistentReads)

    def code(self, name: str) -> int:
        found = self._codes.get(name)
        if found is None:
            with self._lock:
                found = self._codes.setdefault(name, len(self._names))
                if found == len(self._names):
                    self._names.append(name)
        return found

    def find(self, name: str) -> int | None:
        """The code of a name, None if no table had it."""
        return self._codes.get(name)

    def codes(self, names) -> np.ndarray:
        return np.fromiter((self.code(name) for name in names), np.int64)

    def names(self, codes: np.ndarray) -> list[str]:
        return [self._names[code] for code in np.asarray(codes).tolist()]


LABELS = _Labels()


def _packed(columns: tuple[np.ndarray, ...]) -> np.ndarray | None:
    """The key columns packed into one int64 by mixed radix, in the same order as the keys
    sort (column by column); None where their ranges do not fit (never, in practice: ids
    and label codes)."""
    lows = [int(column.min()) for column in columns]
    spans = [int(column.max()) - low + 1 for column, low in zip(columns, lows, strict=True)]
    if math.prod(spans) >= 2**62:
        return None
    packed = np.zeros(len(columns[0]), dtype=np.int64)
    for column, low, span in zip(columns, lows, spans, strict=True):
        packed = packed * span + (column - low)
    return packed


def _group(columns: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the rows sorted by their key columns, and where each key's run
    starts in that order."""
    packed = _packed(columns)
    if packed is not None:
        order = np.argsort(packed, kind="stable")
        ordered = packed[order]
        new = np.r_[True, ordered[1:] != ordered[:-1]]
    else:
        order = np.lexsort(columns[::-1])
        ordered = np.column_stack([column[order] for column in columns])
        new = np.r_[True, np.any(ordered[1:] != ordered[:-1], axis=1)]
    return order, np.flatnonzero(new)


def _factorize(columns: tuple[np.ndarray, ...]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(the distinct keys, in key order; each row's index among them)."""
    if not len(columns[0]):
        return columns, np.zeros(0, dtype=np.int64)
    order, starts = _group(columns)
    step = np.zeros(len(order), dtype=np.int64)
    step[starts[1:]] = 1
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(step)
    return tuple(column[order[starts]] for column in columns), inverse


def _summed_by_key(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The rows of each key (its run in `order`, from `starts`) added up, in key order.

    A bincount per column: for the small rows a refresh adds up (29,000 at 2M votes,
    100,000 at 10M) 1.2 to 2.7 times as fast as np.add.reduceat over the sorted rows (0.155 s
    of a refresh at 10M). Each key's rows are added one after the other in their order in
    `values`; reduceat's order of addition differs, in the last bits of a float sum."""
    step = np.zeros(len(order), dtype=np.intp)
    step[starts[1:]] = 1
    key = np.empty(len(order), dtype=np.intp)
    key[order] = np.cumsum(step)
    by_column = np.ascontiguousarray(values.T)
    summed = np.empty((len(starts), values.shape[1]))
    for j, column in enumerate(by_column):
        summed[:, j] = np.bincount(key, weights=column, minlength=len(starts))
    return summed


def _added(
    columns: tuple[np.ndarray, ...], values: np.ndarray, small: _Table
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """A grouped table's (columns, values) plus the grouped `small` table's rows, as new
    arrays (the given ones are left as they are)."""
    size = len(columns[0])
    both = tuple(np.concatenate([a, b]) for a, b in zip(columns, small.columns, strict=True))
    packed = _packed(both) if size and len(small) else None
    if packed is None:
        table = _Table(both, np.vstack([values, small.values]))
        return table.columns, table.values
    ours, theirs = packed[:size], packed[size:]
    at = np.searchsorted(ours, theirs)
    found = at < size
    found[found] = ours[at[found]] == theirs[found]
    if found.all():
        values = values.copy()
        values[at] += small.values  # each row at most once: both tables are grouped
        return columns, values
    new = ~found
    # Where the new keys go (before the row at `at`, in their order) and the old rows go:
    # one copy of each array by row index, where np.insert's masked copy took 4.5 times as
    # long for the stored tallies' 76 columns.
    at_new = at[new]
    goes = at_new + np.arange(len(at_new))
    kept = np.ones(size + len(at_new), dtype=bool)
    kept[goes] = False
    stays = np.flatnonzero(kept)

    def spread(old: np.ndarray, added) -> np.ndarray:
        out = np.empty((len(kept), *old.shape[1:]), dtype=old.dtype)
        out[stays] = old
        out[goes] = added
        return out

    columns = tuple(
        spread(column, added[new]) for column, added in zip(columns, small.columns, strict=True)
    )
    values = spread(values, 0.0)
    values[np.searchsorted(spread(ours, theirs[new]), theirs)] += small.values
    return columns, values


class _Table:
    """Tally rows: integer key columns (…, model_a, model_b, reason) and a float matrix of
    sums, one row per key, sorted by key. Languages and reasons are LABELS codes (0: none,
    counted); the first column of a language table is the language.

    Columns of arrays rather than tuples in a dict: the stored tallies hold hundreds of
    thousands of rows at 200 models, which Python objects would take most of a refresh to
    build (benchmarks/README.md, issue 15)."""

    def __init__(self, columns, values: np.ndarray, *, grouped: bool = False):
        columns = tuple(np.asarray(column, dtype=np.int64) for column in columns)
        values = np.asarray(values, dtype=float)
        if len(columns[0]) and not grouped:
            order, starts = _group(columns)
            columns = tuple(column[order[starts]] for column in columns)
            if len(starts) < len(order):  # a key more than once: add its rows up
                values = _summed_by_key(values, order, starts)
            else:
                values = values[order]
        self._columns, self._values = columns, values
        # Small tables still to be added, each with its sign (see combined).
        self._pending: list[tuple[_Table, float]] = []

    @property
    def columns(self) -> tuple[np.ndarray, ...]:
        self._settle()
        return self._columns

    @property
    def values(self) -> np.ndarray:
        self._settle()
        return self._values

    @property
    def width(self) -> int:
        return self._values.shape[1]

    def _rows_at_most(self) -> int:
        return len(self._columns[0]) + sum(table._rows_at_most() for table, _ in self._pending)

    def _settle(self) -> None:
        """Add the pending small tables into the arrays, in one pass."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        small = _Table(
            tuple(
                np.concatenate([table.columns[i] for table, _ in pending])
                for i in range(len(self._columns))
            ),
            np.vstack([sign * table.values for table, sign in pending]),
        )
        self._columns, self._values = _added(self._columns, self._values, small)

    @classmethod
    def empty(cls, *, key_columns: int, width: int) -> _Table:
        return cls([np.zeros(0, np.int64)] * key_columns, np.zeros((0, width)), grouped=True)

    @classmethod
    def from_keys(cls, keys: list[tuple], values: np.ndarray, *, key_columns: int) -> _Table:
        """From (…, model_a, model_b, reason name) tuples, languages and reasons as names."""
        if not keys:
            return cls.empty(key_columns=key_columns, width=np.shape(values)[-1])
        columns = [np.array([key[i] for key in keys], dtype=object) for i in range(key_columns)]
        columns[-1] = LABELS.codes(columns[-1])
        if key_columns == 4:
            columns[0] = LABELS.codes(columns[0])
        return cls(columns, values)

    def __len__(self) -> int:
        return len(self.columns[0])

    @property
    def keys(self) -> list[tuple]:
        """The keys as tuples, languages and reasons by name (for messages and tests)."""
        named = [column.tolist() for column in self.columns]
        named[-1] = LABELS.names(self.columns[-1])
        if len(self.columns) == 4:
            named[0] = LABELS.names(self.columns[0])
        return list(zip(*named, strict=True))

    def with_reason(self, code: int) -> _Table:
        """The same rows filed under one reason (rows that now share a key added up)."""
        if not len(self) or np.all(self.columns[-1] == code):
            return self
        reasons = np.full(len(self), code, dtype=np.int64)
        return _Table((*self.columns[:-1], reasons), self.values)

    def rows(self, picked, *, width: int | None = None) -> _Table:
        """The picked rows (a mask, indices or a slice; their first `width` columns): still
        one row per key, in key order."""
        return _Table(
            tuple(column[picked] for column in self.columns),
            self.values[picked, :width],
            grouped=True,
        )

    @classmethod
    def combined(cls, parts: list[tuple[_Table, float]], width: int) -> _Table:
        """The sum of the tables, each times its sign (rows of one key added up), their
        first `width` columns.

        Where one table is larger than the others together (the stored tallies, in a refresh),
        the result shares its arrays and keeps the others pending: they are added at the
        first look at the rows, all at once, by a search per small row, so a refresh copies
        the large arrays once however many small tables (tail, corrections, moves) it adds."""
        key_columns = len(parts[0][0]._columns)
        parts = [
            (table if table.width == width else table.rows(slice(None), width=width), sign)
            for table, sign in parts
            if table._rows_at_most()
        ]
        if not parts:
            return cls.empty(key_columns=key_columns, width=width)
        sizes = [table._rows_at_most() for table, _ in parts]
        largest = int(np.argmax(sizes))
        base, sign = parts[largest]
        rest = parts[:largest] + parts[largest + 1 :]
        if sign == 1 and sizes[largest] >= sum(sizes) - sizes[largest]:
            if not rest:
                return base
            table = cls.__new__(cls)
            table._columns, table._values = base._columns, base._values  # never written to
            table._pending = [*base._pending, *rest]
            return table
        return cls(
            tuple(
                np.concatenate([table.columns[i] for table, _ in parts]) for i in range(key_columns)
            ),
            np.vstack([sign * table.values for table, sign in parts]),
        )

    def reassigned(self) -> _Table:
        """Minus these rows under "" (counted) and plus them under their own reason: what
        moves votes stored as counted to the reason they have now."""
        width = self.values.shape[1]
        return _Table.combined([(self.with_reason(0), -1.0), (self, 1.0)], width)

    def totals(self) -> _Table:
        """Every row under "" (the votes whatever their reason), zero rows left out."""
        return self.with_reason(0).nonzero()

    def nonzero(self) -> _Table:
        """The rows with a vote: a row whose counts (its first four columns: overall, or the
        language, per choice) are all zero holds none, whatever float dust its style sums
        kept from votes added and taken away."""
        return self.rows(np.any(self.values[:, :4] != 0, axis=1))

    def key_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model_a ids, model_b ids, reason codes) of the rows, as arrays."""
        return self.columns[-3], self.columns[-2], self.columns[-1]

    def move(self, other: _Table, reason: str) -> _Table:
        """These rows less `other`'s counted rows, which are filed under `reason` instead."""
        counted = other.rows(other.columns[-1] == 0)
        return _Table.combined(
            [(self, 1.0), (counted, -1.0), (counted.with_reason(LABELS.code(reason)), 1.0)],
            self.width,  # not self.values: that would add this table's pending rows now
        )

    def differences(self, other: _Table, *, exact: np.ndarray) -> list[tuple]:
        """Keys whose rows differ between the two tables (a key missing from one differs):
        the `exact` columns exactly, the others to 1e-9 of their size."""
        width = len(exact)
        ours, theirs = self.nonzero(), other.nonzero()
        columns, inverse = _factorize(
            tuple(np.concatenate([a, b]) for a, b in zip(ours.columns, theirs.columns, strict=True))
        )
        size = len(columns[0])
        values = np.zeros((2, size, width))
        present = np.zeros((2, size), dtype=bool)
        for side, (table, at) in enumerate(
            ((ours, inverse[: len(ours)]), (theirs, inverse[len(ours) :]))
        ):
            values[side, at] = table.values[:, :width]
            present[side, at] = True
        a, b = values
        same = (
            present.all(axis=0)
            & (a[:, exact] == b[:, exact]).all(axis=1)
            & np.isclose(a[:, ~exact], b[:, ~exact], rtol=1e-9, atol=1e-9).all(axis=1)
        )
        differ = _Table(columns, np.zeros((size, 0)), grouped=True).rows(~same)
        return sorted(differ.keys, key=repr)


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
    return Q(**{f"{field}__in_array": Listed(fetched)}) if fetched else None


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
        elif stored is not None:
            # A refresh, its filters known: the votes they leave out are read with the counts,
            # the hot prompts' and the flagged voters' side by side, each from the counts
            # stored while the filters stay the same (each set grows with the votes: read
            # in full, the largest reads of a refresh at millions of votes).
            # Both need the dropped ids: read once, by whichever asks first.
            dropped_once = _Once(lambda: self._dropped_read(plan))
            jobs["hot prompts' votes"] = lambda: self._dropped_moves(dropped_once, plan, stored)
            jobs["flagged voters' votes"] = lambda: self._flagged_moves(dropped_once, plan, stored)
        read = reads.run(jobs) if reads is not None else in_turn(jobs)
        self.plan = plan if plan is not None else read["filter plan"]
        self.reasons = list(exclusion_reasons(source=Vote, plan=self.plan))
        self.fixed = read["counts"]
        # Not `read.get(...) or`: a table's truth is its length, which adds its pending rows.
        self.by_language = (
            read["language counts"]
            if "language counts" in read
            else _Table.empty(key_columns=4, width=len(CHOICES))
        )
        self._voter_votes = (
            (voter_min_votes, read["voters' votes"]) if voter_min_votes is not None else None
        )
        # The votes the hot-prompt down-sampling drops, worked out once for every read below.
        self._flagged_read: tuple[_Table, _Table] | None = None
        # Left-out counts read afresh, to store (aggregates.tallies_left_out_save).
        self.left_out_blocks: list = []
        if "hot prompts' votes" in read:
            self.dropped_ids, self.dropped, dedup, saved = read["hot prompts' votes"]
            self._flagged_read, flagged_saved = read["flagged voters' votes"]
            self.left_out_blocks = [*saved, *flagged_saved]
        else:
            self.dropped_ids, self.dropped = self._dropped_read(self.plan)
            dedup = self._move_read(self.dropped) if self.dropped is not None else None
        if dedup is not None:
            self._move(dedup, _DEDUP)

    @staticmethod
    def _dropped_read(plan: FilterPlan) -> tuple[set[int], Q | None]:
        """(ids, filter) of the votes the hot-prompt down-sampling drops."""
        if not (plan.dedup and plan.hot_prompts):
            return set(), None
        ids = dedup_dropped_ids(plan=plan)
        fetched = list(ids.values_list("pk", flat=True))
        return set(fetched), _listed(ids, "pk", fetched)

    @staticmethod
    def _flagged_scope(plan: FilterPlan, dropped: Q | None) -> Q | None:
        """The counted votes of flagged voters (not cleared), less the dropped ones."""
        if not plan.voter_flags:
            return None
        scope = _listed(flagged_voter_hashes(), "visitor_hash")
        if scope is not None and dropped is not None:
            scope &= ~dropped
        return scope

    def _dropped_moves(self, dropped_read: _Once, plan: FilterPlan, stored: StoredCounts):
        """What a known plan's down-sampling leaves out: (dropped ids, their filter, their
        tables or None, blocks to store)."""
        ids, dropped = dropped_read()
        if dropped is None:
            return ids, None, None, []
        ordered = np.sort(np.fromiter(ids, dtype=np.int64, count=len(ids)))

        scope = LeftOutScope(
            _DEDUP,
            lambda low, high: _dropped_between(ordered, plan, low, high),
            lambda upto: hashlib.sha256(_ids_digest(ordered, upto)).hexdigest(),
        )
        tables, saved = self._left_out(scope, stored)
        return ids, dropped, tables, saved

    def _flagged_moves(self, dropped_read: _Once, plan: FilterPlan, stored: StoredCounts):
        """The tables of the flagged voters' votes a known plan leaves out, or None, and the
        blocks to store. Read beside _dropped_moves, in the same snapshot of the database."""
        if not plan.voter_flags:
            return None, []
        hashes = sorted(flagged_voter_hashes().values_list("visitor_hash", flat=True))
        voters = _listed(flagged_voter_hashes(), "visitor_hash", hashes)
        if voters is None:
            return None, []
        dropped = dropped_read()[0]
        ordered = np.sort(np.fromiter(dropped, dtype=np.int64, count=len(dropped)))

        def at(low: int, high: int | None) -> Q:
            where = voters & _ids_between(low, high)
            dropped = _dropped_between(ordered, plan, low, high)
            return where & ~dropped if dropped is not None else where

        def digest(upto: int) -> str:
            found = hashlib.sha256("\n".join(hashes).encode())
            found.update(_ids_digest(ordered, upto))
            return found.hexdigest()

        return self._left_out(LeftOutScope(_FLAGGED, at, digest), stored)

    def _left_out(self, scope: LeftOutScope, stored: StoredCounts):
        return stored.left_out(
            scope, cutoff=self.cutoff, style=self.style, languages=self.languages_read
        )

    def _table(self, *, by_language: bool, **kwargs) -> _Table:
        return _tally_rows(
            cutoff=self.cutoff,
            by_language=by_language,
            style=self.style and not by_language,
            **kwargs,
        )

    def _move_read(self, scope: Q) -> tuple[_Table, _Table | None]:
        """The arena votes in `scope` as the two tables (the languages' if read)."""
        fixed = self._table(by_language=False, sources=(Vote,), scope=scope)
        if not self.languages_read:
            return fixed, None
        return fixed, self._table(by_language=True, sources=(Vote,), scope=scope)

    def _move(self, tables: tuple[_Table, _Table | None], reason: str) -> None:
        """Move the tables' counted votes to `reason`."""
        fixed, by_language = tables
        self.fixed = self.fixed.move(fixed, reason)
        if by_language is not None:
            self.by_language = self.by_language.move(by_language, reason)
        self._by_code = None

    def totals(self) -> tuple[_Table, _Table]:
        """(fixed, by language) tables of every vote up to the cut-off under "", whatever its
        reason: moving votes between reasons leaves them as they are."""
        return self.fixed.totals(), self.by_language.totals()

    def consensus(self) -> Consensus:
        """Counted decisive overall votes per unordered pair."""
        model_a, model_b, reasons = self.fixed.key_columns()
        counted = reasons == 0
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
        """Move the counted votes of flagged voters (not cleared) to the voter_flagged reason.
        With the plan given, they were read with the counts."""
        if self._flagged_read is not None:
            tables, self._flagged_read = self._flagged_read, None
            self._move(tables, _FLAGGED)
            return
        scope = self._flagged_scope(self.plan, self.dropped)
        if scope is not None:
            self._move(self._move_read(scope), _FLAGGED)

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

    def _language_rows(self) -> dict[str, slice]:
        """Rows of the language table, per language (the table is sorted by language)."""
        if getattr(self, "_by_code", None) is None:
            codes = self.by_language.columns[0]
            starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]][: len(codes)])
            ends = [*starts[1:].tolist(), len(codes)][: len(starts)]
            names = LABELS.names(codes[starts])
            self._by_code = {
                name: slice(start, end)
                for name, start, end in zip(names, starts, ends, strict=True)
            }
        return self._by_code

    def languages(self, *, min_votes: int) -> list[str]:
        """Languages with at least min_votes counted votes, most votes first."""
        table = self.by_language
        per_row = table.values.sum(axis=1) * (table.key_columns()[2] == 0)
        totals = {code: float(per_row[rows].sum()) for code, rows in self._language_rows().items()}
        totals.pop("", None)  # votes with no language: in no language's board
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return [language for language, votes in ranked if votes >= min_votes]

    def category(self, key: str) -> CategoryVotes:
        if key.startswith(LANGUAGE_PREFIX):
            language = key.removeprefix(LANGUAGE_PREFIX)
            table = self.by_language
            picked = self._language_rows().get(language, slice(0, 0)) if language else slice(0, 0)
            offset = 0
        else:
            table = self.fixed
            picked = slice(None)  # every row: a view, not a copy of the (wide) sums
            offset = 4 * list(_category_flags()).index(key)
        model_a, model_b, reasons = (column[picked] for column in table.key_columns())
        counts = np.rint(table.values[picked, offset : offset + 4]).reshape(-1, 4)
        excluded = dict.fromkeys(self.reasons, 0)
        votes = counts.sum(axis=1)
        per_reason = np.rint(np.bincount(reasons, weights=votes)).astype(np.int64)
        for code in np.flatnonzero(per_reason).tolist():
            if code:
                excluded[LABELS.names([code])[0]] += int(per_reason[code])
        # The table is sorted by (…, model_a, model_b, reason), so these are in pair order.
        keep = np.flatnonzero((reasons == 0) & (votes > 0))
        result = CategoryVotes(model_a[keep], model_b[keep], counts[keep], excluded)
        result.excluded_by_model = _per_model(model_a, model_b, reasons, votes)
        if self.style and key == OVERALL:
            k = len(STYLE_FEATURES)
            kept = table.values[keep]  # picked is every row here
            style_end = 16 + len(CHOICES) * _STYLE_TERMS
            sums = kept[:, 16:style_end].reshape(-1, len(CHOICES), _STYLE_TERMS)
            result.style_x = sums[:, :, :k]
            upper = np.triu_indices(k)
            result.style_xx = np.empty((len(kept), len(CHOICES), k, k))
            result.style_xx[:, :, upper[0], upper[1]] = sums[:, :, k:]
            result.style_xx[:, :, upper[1], upper[0]] = sums[:, :, k:]
            result.style_ids = np.rint(kept[:, style_end:]).astype(np.int64)
        return result
