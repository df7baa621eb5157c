"""The tally kept up to date: votes folded into stored rows, so that a refresh reads rows that
grow with the models, not with the votes.

`PairTally` / `LanguageTally` hold, per vote table, every folded vote *whatever its reason*
to be left out, in the tally's own layout (tally._tally_rows with every vote under ""). What
the stored rows do not say is read from the votes at each refresh, all of it small:

- the *tail*: the votes above the folded id (the last few minutes), with their reasons;
- the *corrections*: folded votes that have a row-level reason now (identity leak, flagged
  invalid, a model whose status is left out), moved from counted to that reason. Because the
  rows never depend on a reason, a flag set or cleared after the fold, or a model retired,
  needs no change to them: the next read sees it;
- votes folded but dated after the cut-off (an imported dump's future time stamp), taken out.

The hot prompts' dropped votes and the flagged voters' votes are then moved by VoteTallies as
in every recompute. So, at one cut-off and with one filter plan, the counts from the stored
rows equal a tally of every vote (tested with random votes, flags, late flags and folds).

Folding (`tallies_fold`): under the recompute's lease, the votes with ids in (folded, settled]
are grouped and added to the rows, and the folded id moves up, in one transaction. `settled`
is the refresh's floor (leaderboard.refresh): every lower id had committed, so a fold by id
never skips a vote that commits out of order. A change in what the rows depend on
(ARENA_LONG_PROMPT_CHARS, the style features) folds every vote again.

Checking (`tallies_compare`): the full recompute reads every vote anyway; its totals per pair
must equal the stored rows plus tail less the future votes. Any difference (a vote deleted,
rows edited by hand) is logged and repaired by folding every vote again.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from battles.features import STYLE_FEATURES
from battles.models import Vote
from leaderboard.models import ImportedVote, LanguageTally, PairTally, TallyFold
from leaderboard.tally import CHOICES, _Table, _tally_rows, row_reasons_any

log = logging.getLogger(__name__)

SOURCES = {"vote": Vote, "imported": ImportedVote}
FOLD_NAME = "ratings"
_K = len(STYLE_FEATURES)
# The stored layout: counts per (category, choice), per choice the style sums, the id sums.
FIXED_WIDTH = 4 * len(CHOICES) + len(CHOICES) * (_K + _K * _K + 1)
LANGUAGE_WIDTH = len(CHOICES)
_STYLE_COLUMNS = slice(4 * len(CHOICES), 4 * len(CHOICES) + len(CHOICES) * (_K + _K * _K))


def fold_params() -> dict:
    """What the stored rows depend on besides the votes."""
    return {
        "long_prompt_chars": settings.ARENA_LONG_PROMPT_CHARS,
        "style_features": list(STYLE_FEATURES),
        "choices": list(CHOICES),
    }


def _raw(source, *, by_language: bool, scope: Q, reasons: bool, cutoff=None) -> _Table:
    return _Table(
        *_tally_rows(
            cutoff=cutoff,
            by_language=by_language,
            style=not by_language,
            sources=(source,),
            scope=scope,
            reasons=reasons,
        )
    )


def _rows_add(model, label: str, table: _Table, fields: tuple[str, ...]) -> None:
    """Add the table's rows (keys: *fields, reason) to the stored rows of this vote table."""
    if not table.keys:
        return
    stored = {
        tuple(row[:-2]): (row[-2], row[-1])
        for row in model.objects.filter(source=label).values_list(*fields, "pk", "sums")
    }
    new, changed = [], []
    for key, values in zip(table.keys, table.values, strict=True):
        key = key[:-1]
        if key in stored:
            pk, sums = stored[key]
            changed.append(model(pk=pk, sums=(np.array(sums, dtype=float) + values).tolist()))
        else:
            named = dict(zip(fields, key, strict=True))
            new.append(model(source=label, **named, sums=values.tolist()))
    model.objects.bulk_update(changed, ["sums"], batch_size=1000)
    model.objects.bulk_create(new, batch_size=1000)


def tallies_fold(*, settled: dict[str, int]) -> dict[str, int]:
    """Fold the votes with ids up to `settled` (per vote table) into the stored rows; the
    folded ids. Run under the recompute's lease."""
    with transaction.atomic():
        state, _ = TallyFold.objects.get_or_create(name=FOLD_NAME)
        folded = dict(state.folded)
        if state.params != fold_params():
            PairTally.objects.all().delete()
            LanguageTally.objects.all().delete()
            folded = {}
        for label, source in SOURCES.items():
            low, high = folded.get(label, 0), settled.get(label, 0)
            if high <= low:
                continue
            scope = Q(pk__gt=low, pk__lte=high)
            fixed = _raw(source, by_language=False, scope=scope, reasons=False).totals()
            languages = _raw(source, by_language=True, scope=scope, reasons=False).totals()
            _rows_add(PairTally, label, fixed, ("model_a_id", "model_b_id"))
            _rows_add(LanguageTally, label, languages, ("language", "model_a_id", "model_b_id"))
            folded[label] = high
        state.folded, state.params = folded, fold_params()
        state.save()
    return folded


def tallies_ready() -> bool:
    """Whether stored rows exist for the current parameters (a fold has run)."""
    return TallyFold.objects.filter(name=FOLD_NAME, params=fold_params()).exists()


@dataclass
class StoredTallies:
    """VoteTallies' two count tables from the stored rows (tally.StoredCounts)."""

    folded: dict[str, int]

    @classmethod
    def current(cls) -> StoredTallies:
        state = TallyFold.objects.filter(name=FOLD_NAME).first()
        return cls(dict(state.folded) if state else {})

    def _stored(self, model, fields: tuple[str, ...], width: int) -> _Table:
        rows = list(model.objects.values_list(*fields, "sums"))
        if not rows:
            return _Table([], np.zeros((0, width)))
        keys = [(*row[:-1], "") for row in rows]
        return _Table(keys, np.array([row[-1] for row in rows], dtype=float)[:, :width])

    def _read(self, *, by_language: bool, cutoff: dt.datetime, width: int, style: bool):
        parts: list[tuple[_Table, float]] = []
        for label, source in SOURCES.items():
            folded = self.folded.get(label, 0)

            def read(scope: Q, *, reasons: bool, until=cutoff, source=source) -> _Table:
                return _Table(
                    *_tally_rows(
                        cutoff=until,
                        by_language=by_language,
                        style=style and not by_language,
                        sources=(source,),
                        scope=scope,
                        reasons=reasons,
                    )
                )

            # The tail, with its reasons.
            parts.append((read(Q(pk__gt=folded), reasons=True), 1.0))
            if not folded:
                continue
            # Folded votes with a row-level reason now: from counted to that reason.
            reasons = row_reasons_any(source)
            if reasons is not None:
                parts.append((read(Q(pk__lte=folded) & reasons, reasons=True).reassigned(), 1.0))
            # Folded votes dated after the cut-off.
            future = Q(pk__lte=folded, created_at__gt=cutoff)
            parts.append((read(future, reasons=False, until=None), -1.0))
        return parts

    def fixed(self, *, cutoff: dt.datetime, style: bool) -> _Table:
        width = FIXED_WIDTH if style else 4 * len(CHOICES)
        stored = self._stored(PairTally, ("model_a_id", "model_b_id"), width)
        parts = self._read(by_language=False, cutoff=cutoff, width=width, style=style)
        return _Table.combined([(stored, 1.0), *parts], width)

    def by_language(self, *, cutoff: dt.datetime) -> _Table:
        stored = self._stored(
            LanguageTally, ("language", "model_a_id", "model_b_id"), LANGUAGE_WIDTH
        )
        parts = self._read(by_language=True, cutoff=cutoff, width=LANGUAGE_WIDTH, style=False)
        return _Table.combined([(stored, 1.0), *parts], LANGUAGE_WIDTH)


def tables_differences(expected: _Table, got: _Table, *, width: int) -> list[tuple]:
    """Keys whose rows differ: counts and id sums exactly, the style sums (floats the database
    adds in no fixed order) to 1e-9 of their size."""
    expected, got = expected.nonzero(), got.nonzero()
    keys = list(expected.index.keys() | got.index.keys())
    a, b = np.zeros((len(keys), width)), np.zeros((len(keys), width))
    present = np.zeros((len(keys), 2), dtype=bool)
    for column, (table, values) in enumerate(((expected, a), (got, b))):
        rows = [i for i, key in enumerate(keys) if key in table.index]
        values[rows] = table.values[[table.index[keys[i]] for i in rows], :width]
        present[rows, column] = True
    exact = np.ones(width, dtype=bool)
    if width == FIXED_WIDTH:
        exact[_STYLE_COLUMNS] = False
    same = (
        present.all(axis=1)
        & (a[:, exact] == b[:, exact]).all(axis=1)
        & np.isclose(a[:, ~exact], b[:, ~exact], rtol=1e-9, atol=1e-9).all(axis=1)
    )
    return sorted((keys[i] for i in np.flatnonzero(~same)), key=repr)


@dataclass
class CompareReport:
    checked: bool
    differences: int = 0
    repaired: bool = False


def tallies_compare(*, totals: tuple[_Table, _Table], cutoff: dt.datetime) -> CompareReport:
    """Compare the stored rows (with the tail) with a full tally's `totals` (tally.totals(),
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
        PairTally.objects.all().delete()
        LanguageTally.objects.all().delete()
        TallyFold.objects.filter(name=FOLD_NAME).update(folded={})
        tallies_fold(settled=dict(state.folded))
    return CompareReport(checked=True, differences=len(differences), repaired=True)
