"""Writes: the ratings recompute (votes -> counts -> engine -> snapshot) and battle dumps."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from threadpoolctl import threadpool_limits

from battles.models import FlaggedVoter
from leaderboard import selectors
from leaderboard.categories import (
    LANGUAGE_PREFIX,
    OVERALL,
    fixed_categories,
    is_valid_category,
    language_category,
)
from leaderboard.engine import PairCounts, RatingOptions, StyleSums, fit
from leaderboard.models import ImportedVote, RecomputeLock, Snapshot, SnapshotRow
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)

LOCK_NAME = "ratings"


class RecomputeBusyError(Exception):
    """Another recompute holds the lock; this one did nothing."""

    def __init__(self):
        super().__init__("Another ratings recompute is running; this one did nothing.")


_stage = selectors.stage


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


def _options(*, bootstrap: int, anchor: int | None) -> RatingOptions:
    return RatingOptions(
        anchor=anchor,
        ci="bootstrap" if bootstrap else "sandwich",
        bootstrap_rounds=bootstrap or RatingOptions.bootstrap_rounds,
        both_bad_as_tie=settings.ARENA_BOTH_BAD_AS_TIE,
    )


def _pair_counts(votes: selectors.CategoryVotes, model_ids: np.ndarray) -> PairCounts:
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


def _fingerprint(votes: selectors.CategoryVotes, extra: dict) -> str:
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


# --- the sequential outlier test ----------------------------------------------------------------


@dataclass
class FlagReport:
    voters_tested: int = 0
    flagged: int = 0
    unflagged: int = 0


@dataclass(frozen=True)
class _Flag:
    e_value: float
    votes_tested: int
    votes_total: int


def _tail_probabilities(vote: float, lo_wins: int, hi_wins: int) -> tuple[float, float] | None:
    """P(consensus outcome <= vote) and P(>= vote), outcomes 1 (lo won) or 0 (hi won).

    Ties and both-bad votes are no evidence either way and are skipped (None). Scored as ½
    against a decisive-only consensus, an honest voter's ties grew the products without cause:
    on synthetic data with honest voters and 38% ties, 80% of them were flagged. For decisive
    votes each factor 1 / (2 p) has expectation at most 1 under the consensus, so the products
    are supermartingales and the false-flag rate stays below alpha (1.4% of 7,500 synthetic
    honest voters with 40 votes each). `_outlier_walk` applies the same rule to arrays.
    """
    decisive = lo_wins + hi_wins
    if not decisive or vote == 0.5:
        return None
    q = lo_wins / decisive
    upper = 1.0 if vote == 1 else 1 - q
    lower = 1.0 if vote == 0 else q
    # A vote the pair's consensus never saw would give p = 0 (an infinite e-value from one
    # vote); count the vote itself as one more observation instead.
    floor = 1 / (decisive + 1)
    return max(upper, floor), max(lower, floor)


def _outlier_walk(
    votes: selectors.VoterVotes, consensus: selectors.Consensus, *, threshold: float,
    max_votes: int,
) -> tuple[int, dict[str, tuple[float, int]]]:
    """(voters tested, {visitor_hash: (e-value, votes tested)}) for decisive votes in (voter,
    time) order.

    Vectorised: per vote the two log e-value factors -log(2 p), then running sums within
    each voter over their first `max_votes` tested votes; a voter is flagged at the first
    vote where either sum exceeds `threshold`.
    """
    if not len(votes):
        return 0, {}
    a, b, a_won, voter = votes.model_a, votes.model_b, votes.a_won, votes.voter

    lo, hi = np.minimum(a, b), np.maximum(a, b)
    lo_won = np.where(a_won, a, b) == lo
    pairs, wins = consensus.pairs, consensus.wins
    width = int(max(hi.max(), pairs[:, 1].max(initial=0))) + 1
    codes = pairs[:, 0] * width + pairs[:, 1]  # sorted, as the pairs are
    at = np.searchsorted(codes, lo * width + hi)
    found = at < len(codes)
    found[found] = codes[at[found]] == (lo * width + hi)[found]
    lo_wins = np.where(found, wins[np.minimum(at, len(codes) - 1), 0], 0.0)
    hi_wins = np.where(found, wins[np.minimum(at, len(codes) - 1), 1], 0.0)
    decisive = lo_wins + hi_wins

    tested = decisive > 0
    voter, lo_won = voter[tested], lo_won[tested]
    lo_wins, decisive = lo_wins[tested], decisive[tested]
    if not len(voter):
        return 0, {}
    q = lo_wins / decisive
    floor = 1 / (decisive + 1)
    upper = np.maximum(np.where(lo_won, 1.0, 1 - q), floor)
    lower = np.maximum(np.where(lo_won, q, 1.0), floor)
    positions = np.arange(len(voter))
    first = np.r_[True, voter[1:] != voter[:-1]]
    start = np.maximum.accumulate(np.where(first, positions, 0))
    rank = positions - start
    keep = rank < max_votes
    voter, rank = voter[keep], rank[keep]
    log_upper, log_lower = -np.log(2 * upper[keep]), -np.log(2 * lower[keep])
    positions = np.arange(len(voter))
    first = np.r_[True, voter[1:] != voter[:-1]]
    start = np.maximum.accumulate(np.where(first, positions, 0))

    def running(values: np.ndarray) -> np.ndarray:
        total = np.cumsum(values)
        return total - (total - values)[start]

    peak = np.maximum(running(log_upper), running(log_lower))
    crossed = np.flatnonzero(peak > threshold)
    _, firsts = np.unique(voter[crossed], return_index=True)
    flags = {
        votes.hashes[voter[i]]: (float(np.exp(min(peak[i], 690.0))), int(rank[i]) + 1)
        for i in crossed[firsts]
    }
    return int(np.count_nonzero(first)), flags


def voters_flag(
    *,
    cutoff: dt.datetime,
    tallies: selectors.VoteTallies | None = None,
) -> FlagReport:
    """Flag voters whose votes go against the consensus beyond chance (FastChat's rule).

    This is `outlier_detect` from FastChat's elo_analysis.py. For every voter with at least
    ARENA_OUTLIER_MIN_VOTES decisive counted votes, their first ARENA_OUTLIER_MAX_VOTES of them
    are walked in time order. Each vote is scored 1 / 0 from the point of view of the pair's
    lower-id model and compared with the pair's decisive votes by everyone (the consensus,
    the voter's own votes included): p_upper = P(consensus <= vote), p_lower =
    P(consensus >= vote). Two betting martingales multiply 1 / (2 p) per vote; a voter whose
    either product exceeds 1 / ARENA_OUTLIER_ALPHA is flagged and all their votes are left
    out. Ties and votes on a pair with no decisive vote are skipped.

    The database sorts the votes; numpy walks them. The result replaces the previous flags,
    except rows staff cleared. `voters_tested` counts voters with a tested vote.
    """
    alpha = settings.ARENA_OUTLIER_ALPHA
    max_votes = settings.ARENA_OUTLIER_MAX_VOTES
    if tallies is None:
        with _stage("outlier: pair consensus"):
            tallies = selectors.VoteTallies(
                cutoff=cutoff, plan=selectors.filter_plan(cutoff=cutoff), style=False,
                languages=False,
            )
    with _stage("outlier: read votes"):
        votes = tallies.votes_by_voter(min_votes=settings.ARENA_OUTLIER_MIN_VOTES)
    with _stage("outlier: walk votes"):
        tested, crossed = _outlier_walk(
            votes, tallies.consensus(), threshold=math.log(1 / alpha), max_votes=max_votes
        )
        totals = tallies.votes_counted_by(list(crossed))
        flagged = {
            voter: _Flag(e_value, votes_tested, totals.get(voter, votes_tested))
            for voter, (e_value, votes_tested) in crossed.items()
        }
    report = FlagReport(voters_tested=tested)
    params = {"alpha": alpha, "min_votes": settings.ARENA_OUTLIER_MIN_VOTES,
              "max_votes": max_votes, "cutoff": cutoff.isoformat()}
    with _stage("outlier: write flags"), transaction.atomic():
        stale = FlaggedVoter.objects.filter(cleared=False).exclude(visitor_hash__in=list(flagged))
        report.unflagged = stale.delete()[0]
        cleared = set(
            FlaggedVoter.objects.filter(visitor_hash__in=list(flagged), cleared=True)
            .values_list("visitor_hash", flat=True)
        )
        FlaggedVoter.objects.bulk_create(
            [
                FlaggedVoter(
                    visitor_hash=visitor_hash,
                    e_value=flag.e_value,
                    votes_tested=flag.votes_tested,
                    votes_total=flag.votes_total,
                    params=params,
                )
                for visitor_hash, flag in flagged.items()
                if visitor_hash not in cleared
            ],
            update_conflicts=True,
            unique_fields=["visitor_hash"],
            update_fields=["e_value", "votes_tested", "votes_total", "params", "updated_at"],
            batch_size=1000,
        )
    report.flagged = len(flagged)
    log.info("outlier test: %s voters tested, %s flagged", report.voters_tested, report.flagged)
    return report


# --- the recompute, per category -------------------------------------------------------------


def _recompute_category(
    *,
    category: str,
    votes: selectors.CategoryVotes,
    bootstrap: int,
    style: bool,
    cutoff: dt.datetime,
    plan: selectors.FilterPlan,
) -> Snapshot:
    started = time.monotonic()
    style = style and votes.style_x is not None
    counted, excluded = votes.counted, votes.excluded
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
        "excluded_statuses": selectors.excluded_statuses(),
        "filters": plan.params(),
    }
    fingerprint = _fingerprint(votes, {"params": params, "excluded": excluded})
    latest = selectors.snapshot_current(category=category, matrices=False)
    if latest is not None and latest.fingerprint == fingerprint:
        return latest

    n = len(model_ids)
    counts = _pair_counts(votes, ids)
    style_result = None
    with _blas_one_thread():
        with _stage("fit"):
            result = fit(counts, n, options) if n else None
        if style and n:
            with _stage("style fit"):
                style_result = fit(
                    counts,
                    n,
                    RatingOptions(anchor=anchor, both_bad_as_tie=options.both_bad_as_tie),
                    style=StyleSums(votes.style_x, votes.style_xx),
                )
    if style_result is not None:
        params["style_coefs"] = dict(
            zip(selectors.STYLE_FEATURES, style_result.style_coefs.tolist(), strict=True)
        )
    if result is not None:
        params["iterations"] = result.iterations
        params["grad_norm"] = result.grad_norm

    snapshot = Snapshot(
        category=category,
        method=result.method if result else f"bradley-terry/{options.ci}",
        params=params,
        data_cutoff=cutoff,
        vote_count=counted,
        excluded=excluded,
        models_order=model_ids,
        # Four decimals (0.01 points of win rate) are more than the heatmap shows, and half
        # the text to encode and store of full floats (a 200-model matrix is 40,000 of them).
        win_rate_matrix=[
            [_finite(v) for v in row] for row in np.round(result.win_rate_matrix, 4).tolist()
        ]
        if result
        else [],
        battle_count_matrix=result.battle_count_matrix.astype(int).tolist() if result else [],
        fingerprint=fingerprint,
    )
    rows = [
        SnapshotRow(
            model_id=pk,
            rating=float(result.ratings[i]),
            lower=_finite(result.lower[i]),
            upper=_finite(result.upper[i]),
            rank_ub=int(result.rank_ub[i]),
            votes=int(result.battles[i]),
            wins=float(result.wins[i]),
            losses=float(result.losses[i]),
            ties=float(result.ties[i] + result.both_bad[i]),
            win_rate=float(result.win_rate[i]) if result.wins[i] + result.losses[i] else None,
            style_rating=float(style_result.ratings[i]) if style_result else None,
            style_rank_ub=int(style_result.rank_ub[i]) if style_result else None,
        )
        for pk, i in index.items()
    ] if result else []
    snapshot.duration_ms = int((time.monotonic() - started) * 1000)
    with _stage("write snapshot"), transaction.atomic():
        snapshot.save()
        for row in rows:
            row.snapshot = snapshot
        SnapshotRow.objects.bulk_create(rows, batch_size=500)
    return snapshot


def _blas_one_thread():
    """The fits' matrices are small (models x models): BLAS threads waiting on each other and
    on the database cost more than they save (12 fits at 200 models: 0.7 s with two threads,
    0.23 s with one, on two cores)."""
    return threadpool_limits(limits=1, user_api="blas")


def _style_default() -> bool:
    return settings.ARENA_STYLE_CONTROL


def _tallies(
    *, cutoff: dt.datetime, style: bool, languages: bool
) -> tuple[selectors.FilterPlan, selectors.VoteTallies]:
    """Everything the database has to say at this cut-off: the filter plan, every category's
    counts, and (flags first, so every category leaves out the same voters) the outlier test."""
    outliers = settings.ARENA_OUTLIER_DETECTION
    with selectors.recompute_reads() as concurrent:
        with _stage("reads"):
            tallies = selectors.VoteTallies(
                cutoff=cutoff, style=style, languages=languages, concurrent=concurrent,
                voter_min_votes=settings.ARENA_OUTLIER_MIN_VOTES if outliers else None,
            )
        plan = tallies.plan
        if plan.voter_flags:
            voters_flag(cutoff=cutoff, tallies=tallies)
            with _stage("flagged voters' votes"):
                tallies.flags_apply()
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
        cutoff = timezone.now()
        plan, tallies = _tallies(
            cutoff=cutoff, style=style, languages=category.startswith(LANGUAGE_PREFIX)
        )
        return _recompute_category(
            category=category,
            votes=tallies.category(category),
            bootstrap=bootstrap,
            style=style,
            cutoff=cutoff,
            plan=plan,
        )
    finally:
        _lock_release(token)


def ratings_recompute_all(*, bootstrap: int = 0, style: bool | None = None) -> list[Snapshot]:
    """Every category (the fixed ones and each language with enough votes) at one cut-off.

    Style control runs for the overall board only.
    """
    token = _lock_claim()
    style = _style_default() if style is None else style
    try:
        cutoff = timezone.now()
        plan, tallies = _tallies(cutoff=cutoff, style=style, languages=True)
        minimum = settings.ARENA_LANGUAGE_CATEGORY_MIN_VOTES
        categories = [c.key for c in fixed_categories()] + [
            language_category(code) for code in tallies.languages(min_votes=minimum)
        ]
        # One transaction: a reader sees every category of this cut-off or none of them.
        with transaction.atomic():
            return [
                _recompute_category(
                    category=category,
                    votes=tallies.category(category),
                    bootstrap=bootstrap,
                    style=style and category == OVERALL,
                    cutoff=cutoff,
                    plan=plan,
                )
                for category in categories
            ]
    finally:
        _lock_release(token)


# --- FastChat clean_battle dumps ---------------------------------------------------------------

WINNERS = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
CHOICE_FOR_WINNER = {winner: choice for choice, winner in WINNERS.items()}
IMPORTED_BASE_URL = "http://imported.invalid/v1"
PROGRESS_EVERY = 100_000
# Public dumps name languages in English; ours are ISO 639 codes.
LANGUAGE_NAMES = {
    "english": "en", "chinese": "zh", "russian": "ru", "spanish": "es", "german": "de",
    "french": "fr", "japanese": "ja", "korean": "ko", "portuguese": "pt", "italian": "it",
    "polish": "pl", "vietnamese": "vi", "arabic": "ar", "dutch": "nl", "turkish": "tr",
    "indonesian": "id", "ukrainian": "uk", "persian": "fa", "hindi": "hi", "swedish": "sv",
}
_ISO_RE = re.compile(r"^[a-z]{2,3}$")


def _metadata(style: dict, prompt_chars: int) -> dict:
    metadata = {"first_prompt_chars": prompt_chars}
    for side in ("a", "b"):
        features = style.get(side, {})
        metadata[f"sum_assistant_{side}_chars"] = features.get("length", 0)
        for name in ("headers", "lists", "bold"):
            metadata[f"{name.rstrip('s')}_count_{side}"] = features.get(name, 0)
    return metadata


def battles_export(*, write: Callable[[str], object], include_imported: bool = False,
                   progress: Callable[[int], None] | None = None) -> int:
    """Write counted votes as FastChat `clean_battle` JSON lines; returns how many."""
    written = 0
    for (question_id, model_a, model_b, judge, choice, turns, prompt_chars, has_code, language,
         style, created_at) in selectors.votes_for_export(include_imported=include_imported):
        line = {
            "question_id": question_id.hex if isinstance(question_id, uuid.UUID) else question_id,
            "model_a": model_a,
            "model_b": model_b,
            "winner": WINNERS[choice],
            "judge": judge,
            "turn": turns,
            "anony": True,
            "language": language or "unknown",
            "tstamp": created_at.timestamp(),
            "is_code": has_code,
            "conv_metadata": _metadata(style or {}, prompt_chars),
        }
        write(json.dumps(line, ensure_ascii=False) + "\n")
        written += 1
        if progress and written % PROGRESS_EVERY == 0:
            progress(written)
    return written


class DumpLineError(ValueError):
    pass


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    not_anonymous: int = 0
    new_models: list[str] = field(default_factory=list)
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, "line N: what is wrong"
    applied: bool = False


class ImportRejectedError(Exception):
    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(
            f"{report.bad_lines} bad line(s); nothing was imported. "
            "Fix them, or pass --skip-bad to import the good lines."
        )


def _language(value) -> str:
    text = str(value or "").strip().lower()
    if _ISO_RE.match(text):
        return text
    return LANGUAGE_NAMES.get(text, "")


def _count(metadata: dict, key: str) -> int:
    value = metadata.get(key, 0)
    return int(value) if isinstance(value, int | float) and value >= 0 else 0


def _parse_line(raw: str) -> dict | None:
    """One dump line as ImportedVote fields; None for a non-anonymous battle (not rated)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DumpLineError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DumpLineError("not a JSON object")
    names = [data.get("model_a"), data.get("model_b")]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise DumpLineError("model_a and model_b must be non-empty strings")
    if names[0].strip() == names[1].strip():
        raise DumpLineError("model_a and model_b are the same model")
    if data.get("winner") not in CHOICE_FOR_WINNER:
        raise DumpLineError(f"winner must be one of {', '.join(CHOICE_FOR_WINNER)}")
    tstamp = data.get("tstamp")
    if not isinstance(tstamp, int | float) or isinstance(tstamp, bool) or not 0 < tstamp < 1e11:
        raise DumpLineError("tstamp must be a unix time in seconds")
    turn = data.get("turn", 1)
    if not isinstance(turn, int) or isinstance(turn, bool) or not 1 <= turn <= 10_000:
        raise DumpLineError("turn must be a positive integer")
    if data.get("anony", True) is False:
        return None
    metadata = data.get("conv_metadata") if isinstance(data.get("conv_metadata"), dict) else {}
    style = {}
    for side in ("a", "b"):
        # Our dumps carry characters, FastChat's tokens: only the A/B ratio matters.
        length_key = f"sum_assistant_{side}_chars"
        if length_key not in metadata:
            length_key = f"sum_assistant_{side}_tokens"
        style[side] = {
            "length": _count(metadata, length_key),
            "headers": _count(metadata, f"header_count_{side}"),
            "lists": _count(metadata, f"list_count_{side}"),
            "bold": _count(metadata, f"bold_count_{side}"),
        }
    question_id = data.get("question_id")
    external_id = (
        str(question_id)[:64] if question_id
        else hashlib.sha256(raw.strip().encode()).hexdigest()
    )
    return {
        "external_id": external_id,
        "names": (names[0].strip(), names[1].strip()),
        "choice": CHOICE_FOR_WINNER[data["winner"]],
        "judge": str(data.get("judge") or "")[:64],
        "turns": turn,
        "prompt_chars": _count(metadata, "first_prompt_chars"),
        "has_code": data.get("is_code") is True,
        "language": _language(data.get("language")),
        "style": style,
        "created_at": dt.datetime.fromtimestamp(tstamp, tz=dt.UTC),
    }


class _Catalog:
    """Public model name -> id, creating a retired placeholder for a name we do not know."""

    def __init__(self, report: ImportReport):
        self.ids = dict(LLMModel.objects.values_list("name", "pk"))
        self.report = report

    def id_for(self, name: str) -> int:
        if name not in self.ids:
            base = slugify(name)[:90] or "imported"
            slug = base
            while LLMModel.objects.filter(slug=slug).exists():
                slug = f"{base}-{uuid.uuid4().hex[:6]}"
            model = LLMModel.objects.create(
                slug=slug, name=name[:200], organization="", license="",
                base_url=IMPORTED_BASE_URL, model=name[:300], status=LLMModel.Status.RETIRED,
                notes="Created by import_battles for a model named in a battle dump.",
            )
            self.ids[name] = model.pk
            self.report.new_models.append(name)
        return self.ids[name]


def battles_import(*, lines: Iterable[str], skip_bad: bool = False, batch_size: int = 5000,
                   progress: Callable[[int], None] | None = None,
                   max_errors_listed: int = 20) -> ImportReport:
    """Load a FastChat `clean_battle` JSON-lines dump into ImportedVote, in one transaction.

    Any bad line rolls everything back unless `skip_bad`; lines already imported (same
    question_id) are skipped, so a file can be imported again safely.
    """
    report = ImportReport()
    with transaction.atomic():
        before = ImportedVote.objects.count()
        catalog = _Catalog(report)
        for batch in _batches(_parsed(lines, report, max_errors_listed, progress), batch_size):
            if report.bad_lines and not skip_bad:
                continue  # the import will be rolled back: just read on to list every bad line
            ImportedVote.objects.bulk_create(
                [
                    ImportedVote(
                        model_a_id=catalog.id_for(fields["names"][0]),
                        model_b_id=catalog.id_for(fields["names"][1]),
                        **{k: v for k, v in fields.items() if k != "names"},
                    )
                    for fields in batch
                ],
                ignore_conflicts=True,
            )
        if report.bad_lines and not skip_bad:
            raise ImportRejectedError(report)
        report.imported = ImportedVote.objects.count() - before
        report.duplicates = report.lines - report.bad_lines - report.not_anonymous - report.imported
        report.applied = True
    return report


def _parsed(lines: Iterable[str], report: ImportReport, max_errors: int,
            progress: Callable[[int], None] | None) -> Iterator[dict]:
    for number, raw in enumerate(lines, start=1):
        if progress and number % PROGRESS_EVERY == 0:
            progress(number)
        if not raw.strip():
            continue
        report.lines += 1
        try:
            fields = _parse_line(raw)
        except DumpLineError as exc:
            report.bad_lines += 1
            if len(report.errors) < max_errors:
                report.errors.append(f"line {number}: {exc}")
            continue
        if fields is None:
            report.not_anonymous += 1
            continue
        yield fields


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
