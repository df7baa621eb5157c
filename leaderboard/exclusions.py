"""Why a vote is left out of the ratings: the reasons, in precedence order, as filters.

Row-level reasons read the vote alone: `identity_leak`, `flagged_invalid` and, when
configured, `model_status`. Two more come from Chatbot Arena's pipeline (FastChat), both on
arena votes only: imported dumps carry no prompt and no voter id of ours, and were cleaned by
whoever published them.

- `prompt_dedup` (FastChat's monitor/deduplication.py): count votes per identical prompt; the
  cut-off is the ARENA_PROMPT_DEDUP_PERCENTILE quantile of those counts over distinct prompts
  (linear interpolation, as pandas computes it); a prompt asked more often than the cut-off
  keeps int(cut-off) of its votes. FastChat keeps a random sample (seed 42); here the earliest
  votes are kept, so the choice is deterministic and stable as new votes arrive.
- `voter_flagged`: visitors flagged by the sequential outlier test (outliers.voters_flag),
  stored as FlaggedVoter rows so the rating aggregation stays one GROUP BY.

A FilterPlan is what the last two need to know at one cut-off: the recompute reads it from
the votes (`filter_plan`) and records its hot prompts (`hot_prompts_record`, next to the
FlaggedVoter rows of the outlier test); pages take the plan the last recompute recorded
(`filter_plan_recorded`), which counts no vote.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber

from battles.models import Vote
from leaderboard.models import FlaggedVoter, HotPrompt
from leaderboard.sql import compiled, fetch


def excluded_statuses() -> list[str]:
    return list(settings.ARENA_RATINGS_EXCLUDE_STATUSES)


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


def prompt_count_quantile(histogram: dict[int, int], q: float) -> float:
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
        Vote.objects.filter(_vote_scope(cutoff))
        .order_by()
        .values("prompt_hash")
        .annotate(n=Count("pk"))
        .values_list("prompt_hash", "n")
    )
    sql, params = compiled(per_prompt)
    # Only the ORM's own compiled SQL and constants go into these statements (S608).
    rows = fetch(
        f"WITH per AS ({sql}) SELECT NULL, n, COUNT(*) FROM per GROUP BY n "  # noqa: S608
        "UNION ALL SELECT * FROM (SELECT prompt_hash, n, 1 FROM per ORDER BY n DESC "
        "LIMIT (SELECT CAST(COUNT(*) * %s AS INTEGER) + 2 FROM per)) top",
        (*params, 1 - quantile),
    )
    histogram = {n: prompts for prompt, n, prompts in rows if prompt is None}
    if not histogram:
        return FilterPlan(cutoff=cutoff, dedup=True, voter_flags=voter_flags)
    threshold = prompt_count_quantile(histogram, quantile)
    hot = tuple(sorted(prompt for prompt, n, _ in rows if prompt is not None and n > threshold))
    return FilterPlan(
        cutoff=cutoff,
        dedup=True,
        dedup_threshold=threshold,
        hot_prompts=hot,
        voter_flags=voter_flags,
    )


def hot_prompts_record(*, plan: FilterPlan) -> None:
    """Store the plan's hot prompts (and nothing else: they are replaced, not added to)."""
    with transaction.atomic():
        HotPrompt.objects.all().delete()
        if plan.dedup and plan.hot_prompts:
            HotPrompt.objects.bulk_create(
                [
                    HotPrompt(prompt_hash=prompt, keep=plan.dedup_keep, cutoff=plan.cutoff)
                    for prompt in plan.hot_prompts
                ],
                batch_size=1000,
            )


def filter_plan_recorded() -> FilterPlan:
    """The filters as the last recompute applied them, without counting the votes per prompt:
    its hot prompts (HotPrompt) and the flagged voters (FlaggedVoter), applied to the votes up
    to now. Before any recompute nothing is down-sampled."""
    voter_flags = settings.ARENA_OUTLIER_DETECTION
    if not settings.ARENA_PROMPT_DEDUP:
        return FilterPlan(voter_flags=voter_flags)
    hot = sorted(HotPrompt.objects.values_list("prompt_hash", "keep"))
    return FilterPlan(
        dedup=True,
        dedup_threshold=float(hot[0][1]) if hot else None,
        hot_prompts=tuple(prompt for prompt, _ in hot),
        voter_flags=voter_flags,
    )


def dedup_dropped_ids(*, plan: FilterPlan):
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


def _dedup_dropped(plan: FilterPlan) -> Q | None:
    """The votes the down-sampling leaves out, or None when it leaves out none."""
    return Q(pk__in=dedup_dropped_ids(plan=plan)) if plan.hot_prompts else None


def flagged_voter_hashes():
    """The visitor hashes whose votes are left out: flagged and not cleared by staff."""
    return FlaggedVoter.objects.filter(cleared=False).values("visitor_hash")


def exclusion_reasons(*, source, plan: FilterPlan) -> dict[str, Q | None]:
    """Why a vote of `source` (Vote or ImportedVote) is left out, in precedence order: each
    vote counts under its first reason.

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
        reasons["prompt_dedup"] = _dedup_dropped(plan) if arena else None
    if plan.voter_flags:
        reasons["voter_flagged"] = Q(visitor_hash__in=flagged_voter_hashes()) if arena else None
    return reasons


def counted_filter(*, source, plan: FilterPlan) -> Q:
    """The votes of `source` that count: no reason to leave them out applies."""
    counted = Q()
    for reason in exclusion_reasons(source=source, plan=plan).values():
        if reason is not None:
            counted &= ~reason
    return counted
