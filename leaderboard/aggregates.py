"""The tally kept up to date: votes folded into stored rows, so that a refresh reads rows that
grow with the models, not with the votes.

`TallyBlock` rows hold, per vote table, every folded vote *whatever its reason* to be left
out, in the tally's own layout (tally._tally_rows with every vote under "") as binary arrays:
the pairs' counts and id sums as int64, their style sums as float64, the languages' counts as
int64. What the stored rows do not say is read from the votes at each refresh, all of it
small:

- the *tail*: the votes above the folded id (the last few minutes), with their reasons;
- the *corrections*: folded votes that have a row-level reason now (identity leak, flagged
  invalid, a model whose status is left out), moved from counted to that reason. Because the
  rows never depend on a reason, a flag set or cleared after the fold, or a model retired,
  needs no change to them: the next read sees it;
- votes folded but dated after the cut-off (an imported dump's future time stamp), taken out.

The hot prompts' dropped votes and the flagged voters' votes are then moved by VoteTallies as
in every recompute; in a refresh, from blocks of their own kept while the filters that pick
them stay the same (StoredTallies.left_out), read with the same three additions. So, at one
cut-off and with one filter plan, the counts from the stored rows equal a tally of every vote
(tested with random votes, flags, late flags, out-of-order votes and folds).

Folding (`tallies_fold`): under the recompute's lease, the votes with ids in (folded, settled]
are grouped into one new block per vote table and kind, and the folded id moves up, in one
transaction. A fold writes only what it added (a few kB after a minute of votes), not every
pair again; the blocks are merged into one by the full recompute (`tallies_merge`), or by a
fold that finds more than MERGE_AT of them. `settled` is the refresh's floor
(leaderboard.refresh): every lower id had committed, so a fold by id never skips a vote that
commits out of order. A change in what the rows depend on (ARENA_LONG_PROMPT_CHARS, the style
features, the storage layout) folds every vote again.

Checking (`tallies_compare`): the full recompute reads every vote anyway; its totals per pair
must equal the stored blocks plus tail less the future votes. Any difference (a vote deleted,
rows edited by hand) is logged and repaired by folding every vote again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q

from battles.features import STYLE_FEATURES
from battles.models import Vote
from leaderboard.models import ImportedVote, TallyBlock, TallyFold
from leaderboard.sql import commit_without_waiting, compiled, execute_binary, fetch_binary
from leaderboard.tally import (
    _STYLE_TERMS,
    CHOICES,
    LABELS,
    LeftOutScope,
    _Table,
    _tally_rows,
    row_reasons_any,
)

log = logging.getLogger(__name__)

SOURCES = {"vote": Vote, "imported": ImportedVote}
# The vote table a refresh's filters (hot prompts, flagged voters) leave votes out of.
LEFT_OUT_SOURCE = "vote"
FOLD_NAME = "ratings"
PAIRS, LANGUAGES = "pairs", "languages"
# The stored layout, what a change of it folds every vote again for.
STORAGE = "blocks/3"
# A fold that finds more blocks than this of one vote table and kind merges them (the full
# recompute merges them anyway: this only bounds them when it does not run).
MERGE_AT = 64
_C = len(CHOICES)
_COUNTS = 4 * _C  # per (category, choice)
_STYLE = _C * _STYLE_TERMS  # per choice the feature sums and their products i <= j
# The tally's layout: counts per (category, choice), per choice the style sums, the id sums.
FIXED_WIDTH = _COUNTS + _STYLE + _C
LANGUAGE_WIDTH = _C
_STYLE_COLUMNS = slice(_COUNTS, _COUNTS + _STYLE)
_ID_COLUMNS = slice(_COUNTS + _STYLE, FIXED_WIDTH)
_LE = "<"  # little-endian on disk, whatever the machine


def fold_params() -> dict:
    """What the stored rows depend on besides the votes."""
    return {
        "long_prompt_chars": settings.ARENA_LONG_PROMPT_CHARS,
        "style_features": list(STYLE_FEATURES),
        "choices": list(CHOICES),
        "storage": STORAGE,
    }


def _raw(source, *, by_language: bool, scope: Q, reasons: bool, cutoff=None) -> _Table:
    return _tally_rows(
        cutoff=cutoff,
        by_language=by_language,
        style=not by_language,
        sources=(source,),
        scope=scope,
        reasons=reasons,
    )


def _integers(values: np.ndarray) -> bytes:
    """Whole numbers as int32 if every one fits, else int64 (block_decode tells by size)."""
    values = np.rint(values)
    fits = not values.size or (values.min() >= -(2**31) and values.max() < 2**31)
    return np.ascontiguousarray(values, dtype=f"{_LE}i{4 if fits else 8}").tobytes()


def _integers_read(data: bytes, rows: int, columns: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, columns), dtype=np.int64)
    size = len(data) // (rows * columns)
    return np.frombuffer(data, dtype=f"{_LE}i{size}").reshape(rows, columns)


def block_encode(label: str, kind: str, table: _Table, *, scope: str = "") -> TallyBlock:
    """A table of totals (every row under "", as _Table.totals gives) as a block."""
    if kind == PAIRS:
        labels: list[str] = []
        keys = np.column_stack(table.columns[:2])
        ids = np.rint(table.values[:, _ID_COLUMNS]).astype(f"{_LE}i8").tobytes()
        sums = np.ascontiguousarray(table.values[:, _STYLE_COLUMNS], dtype=f"{_LE}f8").tobytes()
    else:
        codes, local = np.unique(table.columns[0], return_inverse=True)
        labels = LABELS.names(codes)
        keys = np.column_stack([local.ravel(), table.columns[1], table.columns[2]])
        ids = sums = b""
    return TallyBlock(
        source=label,
        kind=kind,
        scope=scope,
        rows=len(table),
        labels=labels,
        keys=_integers(keys),
        # Counts and id sums are sums of whole numbers: exact in the tables' float64 far
        # beyond any count or id sum here, and stored as integers.
        counts=_integers(table.values[:, :_COUNTS] if kind == PAIRS else table.values),
        ids=ids,
        sums=sums,
    )


def block_decode(block: TallyBlock) -> _Table:
    """A block as a table (every row under "")."""
    size = block.rows
    counted = np.zeros(size, dtype=np.int64)
    if block.kind == PAIRS:
        keys = _integers_read(block.keys, size, 2)
        values = np.empty((size, FIXED_WIDTH))
        values[:, :_COUNTS] = _integers_read(block.counts, size, _COUNTS)
        values[:, _ID_COLUMNS] = np.frombuffer(block.ids, dtype=f"{_LE}i8").reshape(size, _C)
        values[:, _STYLE_COLUMNS] = np.frombuffer(block.sums, dtype=f"{_LE}f8").reshape(
            size, _STYLE
        )
        # Written from a table sorted by (model_a, model_b): one row per key, in order.
        return _Table((keys[:, 0], keys[:, 1], counted), values, grouped=True)
    keys = _integers_read(block.keys, size, 3)
    counts = _integers_read(block.counts, size, _C).astype(float)
    codes = LABELS.codes(block.labels)
    # Sorted by (language, model_a, model_b) as the block's labels sort; still so if this
    # process's codes keep that order (the usual case), else sorted again.
    in_order = bool(np.all(codes[1:] > codes[:-1]))
    languages = codes[keys[:, 0]] if size else keys[:, 0].astype(np.int64)
    return _Table((languages, keys[:, 1], keys[:, 2], counted), counts, grouped=in_order)


def _block_save(block: TallyBlock) -> None:
    """Insert a block, its arrays bound as binary (sql.execute_binary)."""
    fields = ("source", "kind", "scope", "rows", "labels", "keys", "counts", "ids", "sums")
    table = connection.ops.quote_name(TallyBlock._meta.db_table)
    execute_binary(
        f"INSERT INTO {table} ({', '.join(fields)}) "  # noqa: S608 (names, not values)
        "VALUES (%s, %s, %s, %s, %s, %b, %b, %b, %b)",
        [
            block.source,
            block.kind,
            block.scope,
            block.rows,
            json.dumps(block.labels),
            block.keys,
            block.counts,
            block.ids,
            block.sums,
        ],
    )


def _blocks(kind: str, width: int, *, source: str | None = None, scope: str = "") -> _Table:
    """Every stored block of a kind and scope (the folded votes unless given), added up (both
    vote tables unless `source`: the keys do not say which)."""
    blocks = TallyBlock.objects.filter(kind=kind, scope=scope).order_by("pk")
    if source is not None:
        blocks = blocks.filter(source=source)
    fields = ("kind", "rows", "labels", "keys", "counts", "ids", "sums")
    sql, params = compiled(blocks.values_list(*fields))
    parts = []
    for row in fetch_binary(sql, params):
        block = TallyBlock(**dict(zip(fields, row, strict=True)))
        if isinstance(block.labels, str):  # JSON text, where the driver does not parse it
            block.labels = json.loads(block.labels)
        parts.append((block_decode(block), 1.0))
    if not parts:
        return _Table.empty(key_columns=3 if kind == PAIRS else 4, width=width)
    return _Table.combined(parts, width)


def _width(kind: str) -> int:
    return FIXED_WIDTH if kind == PAIRS else LANGUAGE_WIDTH


def tallies_merge(*, above: int = 1) -> int:
    """Merge the blocks of each vote table and kind into one where there are more than
    `above`; how many blocks were merged. Run under the recompute's lease."""
    merged = 0
    with transaction.atomic():
        crowded = (
            TallyBlock.objects.filter(scope="")
            .values("source", "kind")
            .annotate(blocks=Count("pk"))
            .filter(blocks__gt=above)
            .order_by()
        )
        for group in list(crowded):
            label, kind = group["source"], group["kind"]
            table = _blocks(kind, _width(kind), source=label)
            TallyBlock.objects.filter(source=label, kind=kind, scope="").delete()
            _block_save(block_encode(label, kind, table))
            merged += group["blocks"]
    return merged


def tallies_fold(*, settled: dict[str, int]) -> dict[str, int]:
    """Fold the votes with ids up to `settled` (per vote table) into the stored blocks; the
    folded ids. Run under the recompute's lease."""
    with transaction.atomic():
        commit_without_waiting()
        state, _ = TallyFold.objects.get_or_create(name=FOLD_NAME)
        folded = dict(state.folded)
        if state.params != fold_params():
            TallyBlock.objects.all().delete()
            folded = {}
        for label, source in SOURCES.items():
            low, high = folded.get(label, 0), settled.get(label, 0)
            if high <= low:
                continue
            scope = Q(pk__gt=low, pk__lte=high)
            for kind in (PAIRS, LANGUAGES):
                table = _raw(source, by_language=kind == LANGUAGES, scope=scope, reasons=False)
                table = table.totals()
                if len(table):
                    _block_save(block_encode(label, kind, table))
            folded[label] = high
        tallies_merge(above=MERGE_AT)
        state.folded, state.params = folded, fold_params()
        state.save()
    return folded


def tallies_ready() -> bool:
    """Whether stored rows exist for the current parameters (a fold has run)."""
    return TallyFold.objects.filter(name=FOLD_NAME, params=fold_params()).exists()


@dataclass
class StoredTallies:
    """VoteTallies' two count tables from the stored blocks (tally.StoredCounts)."""

    folded: dict[str, int]

    @classmethod
    def current(cls) -> StoredTallies:
        state = TallyFold.objects.filter(name=FOLD_NAME).first()
        return cls(dict(state.folded) if state else {})

    def _read(self, *, by_language: bool, cutoff: dt.datetime, style: bool):
        parts: list[tuple[_Table, float]] = []
        for label, source in SOURCES.items():
            folded = self.folded.get(label, 0)
            parts += _unsaid(
                source,
                below=Q(pk__lte=folded) if folded else None,
                above=Q(pk__gt=folded),  # the tail
                by_language=by_language,
                cutoff=cutoff,
                style=style,
            )
        return parts

    def fixed(self, *, cutoff: dt.datetime, style: bool) -> _Table:
        width = FIXED_WIDTH if style else _COUNTS
        stored = _blocks(PAIRS, width)
        parts = self._read(by_language=False, cutoff=cutoff, style=style)
        return _Table.combined([(stored, 1.0), *parts], width)

    def by_language(self, *, cutoff: dt.datetime) -> _Table:
        stored = _blocks(LANGUAGES, LANGUAGE_WIDTH)
        parts = self._read(by_language=True, cutoff=cutoff, style=False)
        return _Table.combined([(stored, 1.0), *parts], LANGUAGE_WIDTH)

    def left_out(
        self, scope: LeftOutScope, *, cutoff: dt.datetime, style: bool, languages: bool
    ) -> tuple[tuple[_Table, _Table | None], list[TallyBlock]]:
        """The arena votes in `scope` up to the cut-off, with their reasons, as the two tables
        (the languages' if `languages`), and the blocks to save (TallyBlock, under the
        recompute's lease: tallies_left_out_save) if none stored applied.

        Stored: the scope's votes with ids up to some `upto`, every one under "", in blocks
        named "<reason> <upto> <digest>", the digest of what decides the scope up to `upto`
        (scope.digest) and of the stored layout. While the digest is the same, those votes
        are the same (the vote tables only grow; a vote that commits below the folded id is
        found by the full recompute's check, which folds every vote again and so drops these
        blocks too), and the blocks are read with what they do not say, as `_read` does:
        the scope's votes above `upto`, the row-level reasons now, the future votes. Else
        the scope's votes up to the folded id are read once more, without reasons, and
        returned to be stored: once per change of the filters (the hourly full recompute's
        hot prompts and flagged voters, a staff decision on a flag), not at every refresh."""
        prefix = f"{scope.reason} "
        found = (
            TallyBlock.objects.filter(source=LEFT_OUT_SOURCE, scope__startswith=prefix)
            .values_list("scope", flat=True)
            .first()
        )
        upto = int(found.split()[1]) if found else -1

        def name(upto: int) -> str:
            digest = hashlib.sha256(json.dumps(fold_params(), sort_keys=True).encode())
            digest.update(scope.digest(upto).encode())
            return f"{prefix}{upto} {digest.hexdigest()[:40]}"

        kinds = (PAIRS, LANGUAGES) if languages else (PAIRS,)
        saved: list[TallyBlock] = []
        if found is not None and found == name(upto):
            stored = {
                kind: _blocks(kind, _width(kind), source=LEFT_OUT_SOURCE, scope=found)
                for kind in kinds
            }
        else:
            log.info("left-out votes (%s): their filter changed, read in full", scope.reason)
            upto = self.folded.get(LEFT_OUT_SOURCE, 0)
            below, label = scope.at(0, upto), name(upto)
            stored = {}
            # Both kinds, whatever is asked now: the stored pair serves later reads.
            for kind in (PAIRS, LANGUAGES):
                table = (
                    _raw(Vote, by_language=kind == LANGUAGES, scope=below, reasons=False).totals()
                    if below is not None
                    else _Table.empty(key_columns=3 if kind == PAIRS else 4, width=_width(kind))
                )
                stored[kind] = table
                saved.append(block_encode(LEFT_OUT_SOURCE, kind, table, scope=label))
        tables = [
            self._left_out_read(
                scope, stored[kind], upto, by_language=kind == LANGUAGES, cutoff=cutoff, style=style
            )
            for kind in kinds
        ]
        return (tables[0], tables[1] if languages else None), saved

    @staticmethod
    def _left_out_read(
        scope: LeftOutScope,
        stored: _Table,
        upto: int,
        *,
        by_language: bool,
        cutoff: dt.datetime,
        style: bool,
    ) -> _Table:
        """The stored totals of the scope up to `upto`, with what they do not say."""
        unsaid = _unsaid(
            Vote,
            below=scope.at(0, upto),
            above=scope.at(upto, None),
            by_language=by_language,
            cutoff=cutoff,
            style=style,
        )
        width = LANGUAGE_WIDTH if by_language else (FIXED_WIDTH if style else _COUNTS)
        return _Table.combined([(stored, 1.0), *unsaid], width)


def _unsaid(
    source,
    *,
    below: Q | None,
    above: Q | None,
    by_language: bool,
    cutoff: dt.datetime,
    style: bool,
) -> list[tuple[_Table, float]]:
    """What stored totals of `source`'s votes in `below` (every vote under "", whatever its
    date) do not say, as signed tables: the votes in `above`, with their reasons; those in
    `below` with a row-level reason now, moved from counted to that reason; those in `below`
    dated after the cut-off, taken out. (None: no such votes.)"""

    def read(where: Q, *, reasons: bool, until=cutoff) -> _Table:
        return _tally_rows(
            cutoff=until,
            by_language=by_language,
            style=style and not by_language,
            sources=(source,),
            scope=where,
            reasons=reasons,
        )

    parts: list[tuple[_Table, float]] = []
    if above is not None:
        parts.append((read(above, reasons=True), 1.0))
    if below is not None:
        reasons = row_reasons_any(source)
        if reasons is not None:
            parts.append((read(below & reasons, reasons=True).reassigned(), 1.0))
        parts.append((read(below & Q(created_at__gt=cutoff), reasons=False, until=None), -1.0))
    return parts


def tallies_left_out_save(blocks: list[TallyBlock]) -> None:
    """Store the left-out blocks a refresh read afresh (StoredTallies.left_out), in place of
    those of the same reason. Run under the recompute's lease."""
    with transaction.atomic():
        commit_without_waiting()
        for reason in {block.scope.split()[0] for block in blocks}:
            TallyBlock.objects.filter(
                source=LEFT_OUT_SOURCE, scope__startswith=f"{reason} "
            ).delete()
        for block in blocks:
            _block_save(block)


def tables_differences(expected: _Table, got: _Table, *, width: int) -> list[tuple]:
    """Keys whose rows differ: counts and id sums exactly, the style sums (floats the database
    adds in no fixed order) to 1e-9 of their size."""
    exact = np.ones(width, dtype=bool)
    if width == FIXED_WIDTH:
        exact[_STYLE_COLUMNS] = False
    return expected.differences(got, exact=exact)


@dataclass
class CompareReport:
    checked: bool
    differences: int = 0
    repaired: bool = False


def tallies_compare(*, totals: tuple[_Table, _Table], cutoff: dt.datetime) -> CompareReport:
    """Compare the stored blocks (with the tail) with a full tally's `totals` (tally.totals(),
    with style sums and languages) at its cut-off; log and repair any difference by folding
    every vote again. Run under the recompute's lease."""
    state = TallyFold.objects.filter(name=FOLD_NAME).first()
    if state is None or state.params != fold_params() or not any(state.folded.values()):
        return CompareReport(checked=False)  # nothing stored: nothing to compare
    stored = StoredTallies(dict(state.folded))
    differences = tables_differences(
        totals[0], stored.fixed(cutoff=cutoff, style=True).totals(), width=FIXED_WIDTH
    ) + tables_differences(
        totals[1], stored.by_language(cutoff=cutoff).totals(), width=LANGUAGE_WIDTH
    )
    if not differences:
        return CompareReport(checked=True)
    log.warning(
        "the stored tallies differ from the votes in %s rows (first: %s): folding every vote again",
        len(differences),
        differences[:5],
    )
    with transaction.atomic():
        TallyBlock.objects.all().delete()
        TallyFold.objects.filter(name=FOLD_NAME).update(folded={})
        tallies_fold(settled=dict(state.folded))
    return CompareReport(checked=True, differences=len(differences), repaired=True)
