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

from battles.models import FlaggedVoter
from leaderboard import selectors
from leaderboard.categories import OVERALL, is_valid_category
from leaderboard.engine import PairCounts, RatingOptions, fit
from leaderboard.models import ImportedVote, RecomputeLock, Snapshot, SnapshotRow
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)

LOCK_NAME = "ratings"


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
    lease = dt.timedelta(seconds=getattr(settings, "ARENA_RECOMPUTE_LEASE_SECONDS", 1800))
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
        both_bad_as_tie=getattr(settings, "ARENA_BOTH_BAD_AS_TIE", True),
    )


def _pair_counts(rows: list[selectors.CountRow], index: dict[int, int]) -> PairCounts:
    def column(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in rows], dtype=float)

    return PairCounts(
        model_a=np.array([index[r.model_a] for r in rows], dtype=np.int64),
        model_b=np.array([index[r.model_b] for r in rows], dtype=np.int64),
        wins_a=column("wins_a"),
        wins_b=column("wins_b"),
        ties=column("ties"),
        both_bad=column("both_bad"),
    )


def _scaled(rows: list[selectors.CountRow]) -> np.ndarray:
    """Style buckets divided by their root mean square, weighted by votes per row.

    Not centred: a zero difference must keep meaning "no style advantage", whichever side
    the longer answers happened to be on.
    """
    x = np.array([r.style for r in rows], dtype=float).reshape(len(rows), -1)
    weight = np.array([r.wins_a + r.wins_b + r.ties + r.both_bad for r in rows], dtype=float)
    rms = np.sqrt(np.average(x**2, axis=0, weights=weight))
    # A feature that is always zero carries no information; leave it at zero.
    return x / np.where(rms > 1e-9, rms, 1.0)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fingerprint(rows: list[selectors.CountRow], extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for row in rows:
        digest.update(repr(row).encode())
    return digest.hexdigest()


def _anchor_index(index: dict[int, int]) -> int | None:
    slug = getattr(settings, "ARENA_RATING_ANCHOR", "")
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


@dataclass
class _VoterTest:
    """One voter's running test: log e-values for "too high" and "too low" votes."""

    visitor_hash: str
    tested: int = 0
    total: int = 0
    log_upper: float = 0.0
    log_lower: float = 0.0
    crossed_at: int | None = None
    peak: float = 0.0


def _pair_consensus(*, cutoff: dt.datetime, plan: selectors.FilterPlan) -> dict:
    """Decisive votes per unordered pair: (lo, hi) -> [wins of lo, wins of hi], from counts."""
    consensus: dict[tuple[int, int], list[int]] = {}
    for row in selectors.vote_counts(category=OVERALL, cutoff=cutoff, style=False, plan=plan):
        lo, hi = sorted((row.model_a, row.model_b))
        wins = consensus.setdefault((lo, hi), [0, 0])
        a_is_lo = row.model_a == lo
        wins[0] += row.wins_a if a_is_lo else row.wins_b
        wins[1] += row.wins_b if a_is_lo else row.wins_a
    return consensus


def _tail_probabilities(vote: float, lo_wins: int, hi_wins: int) -> tuple[float, float] | None:
    """P(consensus outcome <= vote) and P(>= vote), outcomes 1 (lo won) or 0 (hi won).

    Ties and both-bad votes are no evidence either way and are skipped (None). Scored as ½
    against a decisive-only consensus, an honest voter's ties grew the products without cause:
    on synthetic data with honest voters and 38% ties, 80% of them were flagged. For decisive
    votes each factor 1 / (2 p) has expectation at most 1 under the consensus, so the products
    are supermartingales and the false-flag rate stays below alpha (1.4% of 7,500 synthetic
    honest voters with 40 votes each).
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


def voters_flag(*, cutoff: dt.datetime) -> FlagReport:
    """Flag voters whose votes go against the consensus beyond chance (FastChat's rule).

    This is `outlier_detect` from FastChat's elo_analysis.py. For every voter with at least
    ARENA_OUTLIER_MIN_VOTES valid votes, their first ARENA_OUTLIER_MAX_VOTES votes are walked
    in time order. Each vote is scored 1 / ½ / 0 from the point of view of the pair's
    lower-id model and compared with the pair's decisive votes by everyone (the consensus,
    the voter's own votes included): p_upper = P(consensus <= vote), p_lower =
    P(consensus >= vote). Two betting martingales multiply 1 / (2 p) per vote; a voter whose
    either product exceeds 1 / ARENA_OUTLIER_ALPHA is flagged and all their votes are left
    out. Votes on a pair with no decisive vote are skipped.

    Votes stream from the database ordered by (visitor, time); memory holds the pair table
    and one voter. The result replaces the previous flags, except rows staff cleared.
    """
    alpha = settings.ARENA_OUTLIER_ALPHA
    max_votes = settings.ARENA_OUTLIER_MAX_VOTES
    threshold = math.log(1 / alpha)
    plan = selectors.filter_plan(cutoff=cutoff, voter_flags=False)
    consensus = _pair_consensus(cutoff=cutoff, plan=plan)
    report = FlagReport()
    flagged: dict[str, _VoterTest] = {}
    current: _VoterTest | None = None

    def finish(test: _VoterTest | None) -> None:
        if test is None:
            return
        report.voters_tested += 1
        if test.crossed_at is not None:
            flagged[test.visitor_hash] = test

    for visitor_hash, model_a, model_b, choice in selectors.votes_by_voter(
        cutoff=cutoff, plan=plan, min_votes=settings.ARENA_OUTLIER_MIN_VOTES
    ):
        if current is None or current.visitor_hash != visitor_hash:
            finish(current)
            current = _VoterTest(visitor_hash)
        current.total += 1
        if current.crossed_at is not None or current.tested >= max_votes:
            continue
        lo, hi = sorted((model_a, model_b))
        winner = {"a": model_a, "b": model_b}.get(choice)
        vote = 0.5 if winner is None else float(winner == lo)
        tails = _tail_probabilities(vote, *consensus.get((lo, hi), (0, 0)))
        if tails is None:
            continue
        current.tested += 1
        current.log_upper += -math.log(2 * tails[0])
        current.log_lower += -math.log(2 * tails[1])
        current.peak = max(current.log_upper, current.log_lower)
        if current.peak > threshold:
            current.crossed_at = current.tested
    finish(current)

    params = {"alpha": alpha, "min_votes": settings.ARENA_OUTLIER_MIN_VOTES,
              "max_votes": max_votes, "cutoff": cutoff.isoformat()}
    with transaction.atomic():
        stale = FlaggedVoter.objects.filter(cleared=False).exclude(visitor_hash__in=list(flagged))
        report.unflagged = stale.delete()[0]
        cleared = set(
            FlaggedVoter.objects.filter(visitor_hash__in=list(flagged), cleared=True)
            .values_list("visitor_hash", flat=True)
        )
        for visitor_hash, test in flagged.items():
            if visitor_hash in cleared:
                continue
            FlaggedVoter.objects.update_or_create(
                visitor_hash=visitor_hash,
                defaults={
                    "e_value": math.exp(min(test.peak, 690.0)),
                    "votes_tested": test.crossed_at,
                    "votes_total": test.total,
                    "params": params,
                },
            )
    report.flagged = len(flagged)
    log.info("outlier test: %s voters tested, %s flagged", report.voters_tested, report.flagged)
    return report


# --- the recompute, per category -------------------------------------------------------------


def _recompute_category(
    *,
    category: str,
    bootstrap: int,
    style: bool,
    cutoff: dt.datetime,
    plan: selectors.FilterPlan | None = None,
) -> Snapshot:
    started = time.monotonic()
    plan = plan or selectors.filter_plan(cutoff=cutoff)
    counted, excluded = selectors.votes_excluded(category=category, cutoff=cutoff, plan=plan)
    plain = selectors.vote_counts(category=category, cutoff=cutoff, style=False, plan=plan)
    styled = (
        selectors.vote_counts(category=category, cutoff=cutoff, style=True, plan=plan)
        if style
        else []
    )
    model_ids = sorted({r.model_a for r in plain} | {r.model_b for r in plain})
    index = {pk: i for i, pk in enumerate(model_ids)}
    anchor = _anchor_index(index)
    options = _options(bootstrap=bootstrap, anchor=anchor)
    params = {
        "scale": options.scale,
        "base": options.base,
        "init_rating": options.init_rating,
        "anchor": getattr(settings, "ARENA_RATING_ANCHOR", "") if anchor is not None else "",
        "ci": options.ci,
        "bootstrap_rounds": bootstrap,
        "alpha": options.alpha,
        "both_bad_as_tie": options.both_bad_as_tie,
        "style_control": style,
        "excluded_statuses": selectors.excluded_statuses(),
        "filters": plan.params(),
    }
    fingerprint = _fingerprint(plain + styled, {"params": params, "excluded": excluded})
    latest = selectors.snapshot_current(category=category)
    if latest is not None and latest.fingerprint == fingerprint:
        return latest

    n = len(model_ids)
    result = fit(_pair_counts(plain, index), n, options) if n else None
    style_result = None
    if style and n:
        style_result = fit(
            _pair_counts(styled, index),
            n,
            RatingOptions(anchor=anchor, both_bad_as_tie=options.both_bad_as_tie),
            features=_scaled(styled),
        )
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
        win_rate_matrix=[[_finite(v) for v in row] for row in result.win_rate_matrix]
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
    with transaction.atomic():
        snapshot.save()
        for row in rows:
            row.snapshot = snapshot
        SnapshotRow.objects.bulk_create(rows, batch_size=500)
    return snapshot


def _voters_flag_if_enabled(*, cutoff: dt.datetime) -> None:
    # Flags first, so every category of this run leaves out the same voters.
    if getattr(settings, "ARENA_OUTLIER_DETECTION", True):
        voters_flag(cutoff=cutoff)


def _style_default() -> bool:
    return getattr(settings, "ARENA_STYLE_CONTROL", True)


def ratings_recompute(
    *, category: str = OVERALL, bootstrap: int = 0, style: bool | None = None
) -> Snapshot:
    """Rate one category's valid votes and write a snapshot (the latest one if nothing changed).

    `bootstrap` > 0 asks for that many bootstrap rounds instead of sandwich intervals.
    Raises RecomputeBusyError if another recompute is running.
    """
    if not is_valid_category(category):
        raise ValueError(f"Unknown category {category!r}.")
    token = _lock_claim()
    try:
        cutoff = timezone.now()
        _voters_flag_if_enabled(cutoff=cutoff)
        return _recompute_category(
            category=category,
            bootstrap=bootstrap,
            style=_style_default() if style is None else style,
            cutoff=cutoff,
        )
    finally:
        _lock_release(token)


def ratings_recompute_all(*, bootstrap: int = 0, style: bool | None = None) -> list[Snapshot]:
    """Every category (the fixed ones and each language with enough votes) at one cut-off.

    Style control runs for the overall board only: its GROUP BY over style buckets returns
    far more rows than the plain one, and doing it for every category was most of the time
    of a recompute over millions of votes.
    """
    token = _lock_claim()
    style = _style_default() if style is None else style
    try:
        cutoff = timezone.now()
        _voters_flag_if_enabled(cutoff=cutoff)
        plan = selectors.filter_plan(cutoff=cutoff)
        return [
            _recompute_category(
                category=category,
                bootstrap=bootstrap,
                style=style and category == OVERALL,
                cutoff=cutoff,
                plan=plan,
            )
            for category in selectors.rating_categories()
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
