"""The stored tallies (leaderboard.aggregates) against a tally of every vote: equal, at any
moment, whatever happened to the votes after they were folded."""

import datetime as dt
import random

import numpy as np
import pytest
from django.utils import timezone

from battles.models import Vote
from leaderboard import aggregates, recompute
from leaderboard.aggregates import FIXED_WIDTH, LANGUAGE_WIDTH, StoredTallies
from leaderboard.exclusions import FilterPlan
from leaderboard.models import FlaggedVoter, ImportedVote, PairTally
from leaderboard.tally import VoteTallies
from llm_providers.models import LLMModel

VOTERS = [f"voter{i}" for i in range(5)]
PROMPTS = [f"prompt{i}" for i in range(4)]
LANGUAGES = ["", "en", "fr"]
CATEGORIES = ["overall", "multi_turn", "long_prompt", "code", "lang:en", "lang:fr"]


def _settled() -> dict[str, int]:
    """Every id so far (the tests commit nothing out of order unless they say so)."""
    return {
        "vote": Vote.objects.order_by("-pk").values_list("pk", flat=True).first() or 0,
        "imported": ImportedVote.objects.order_by("-pk").values_list("pk", flat=True).first() or 0,
    }


def assert_same_tallies(plan: FilterPlan) -> None:
    """The tallies from the stored rows equal those of every vote: each table row by row,
    each category's rating input, exclusions and style sums."""
    cutoff = plan.cutoff
    every = VoteTallies(cutoff=cutoff, plan=plan, style=True)
    stored = VoteTallies(cutoff=cutoff, plan=plan, style=True, stored=StoredTallies.current())
    for tallies in (every, stored):
        tallies.flags_apply()
    assert aggregates.tables_differences(every.fixed, stored.fixed, width=FIXED_WIDTH) == []
    assert (
        aggregates.tables_differences(every.by_language, stored.by_language, width=LANGUAGE_WIDTH)
        == []
    )
    for category in CATEGORIES:
        a, b = every.category(category), stored.category(category)
        assert a.excluded == b.excluded, category
        for name in ("model_a", "model_b", "counts"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (category, name)
        if category == "overall":
            assert np.array_equal(a.style_ids, b.style_ids)
            np.testing.assert_allclose(a.style_x, b.style_x, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(a.style_xx, b.style_xx, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_stored_tallies_equal_a_tally_of_every_vote_through_flags_exclusions_and_folds(
    seed, make_model, make_vote, settings
):
    rng = random.Random(seed)
    settings.ARENA_RATINGS_EXCLUDE_STATUSES = rng.choice([[], ["retired"], ["inactive"]])
    settings.ARENA_LONG_PROMPT_CHARS = 100
    models = [make_model(f"M{seed}x{i}") for i in range(4)]
    imported = 0

    def style() -> dict:
        def side() -> dict:
            return {
                "length": rng.randint(10, 900),
                "headers": rng.randint(0, 3),
                "lists": rng.randint(0, 4),
                "bold": rng.randint(0, 2),
            }

        return {"a": side(), "b": side()}

    def vote_fields() -> dict:
        return {
            "turns": rng.choice([1, 1, 2]),
            "prompt_chars": rng.choice([20, 400]),
            "has_code": rng.random() < 0.3,
            "language": rng.choice(LANGUAGES),
            "style": style(),
            "identity_leak": rng.random() < 0.1,
            "flagged_invalid": rng.random() < 0.1,
        }

    for _ in range(rng.randint(30, 60)):
        step = rng.random()
        a, b = rng.sample(models, 2)
        choice = rng.choice(["a", "b", "tie", "bothbad"])
        if step < 0.5:
            make_vote(
                a,
                b,
                choice,
                visitor_hash=rng.choice(VOTERS),
                prompt_hash=rng.choice(PROMPTS),
                **vote_fields(),
            )
        elif step < 0.6:
            imported += 1
            future = rng.random() < 0.2  # a dump's time stamp after the cut-off
            ImportedVote.objects.create(
                external_id=f"{seed}-{imported}",
                model_a=a,
                model_b=b,
                choice=choice,
                created_at=timezone.now() + dt.timedelta(days=1 if future else -rng.randint(1, 9)),
                **vote_fields(),
            )
        elif step < 0.72:
            # A late flag: staff flag (or clear) a vote, or a reply's identity leak is found.
            for table in (Vote, ImportedVote):
                ids = list(table.objects.values_list("pk", flat=True))
                if ids:
                    field = rng.choice(["flagged_invalid", "identity_leak"])
                    table.objects.filter(pk=rng.choice(ids)).update(**{field: rng.random() < 0.7})
        elif step < 0.78:
            LLMModel.objects.filter(pk=a.pk).update(status=rng.choice(list(LLMModel.Status)))
        elif step < 0.85:
            voter = rng.choice(VOTERS)
            flag = FlaggedVoter.objects.filter(visitor_hash=voter).first()
            if flag is None:
                FlaggedVoter.objects.create(
                    visitor_hash=voter, e_value=40.0, votes_tested=5, votes_total=5
                )
            else:
                FlaggedVoter.objects.filter(pk=flag.pk).update(cleared=not flag.cleared)
        else:
            # A fold up to some id already seen (not always the last).
            settled = {label: rng.randint(0, top) for label, top in _settled().items()}
            aggregates.tallies_fold(settled=settled)
        if rng.random() < 0.15:
            hot = tuple(sorted(rng.sample(PROMPTS, rng.randint(0, 2))))
            plan = FilterPlan(
                cutoff=timezone.now(),
                dedup=True,
                dedup_threshold=1.0 if hot else None,
                hot_prompts=hot,
                voter_flags=True,
            )
            assert_same_tallies(plan)
    aggregates.tallies_fold(settled=_settled())
    plan = FilterPlan(
        cutoff=timezone.now(),
        dedup=True,
        dedup_threshold=1.0,
        hot_prompts=(PROMPTS[0],),
        voter_flags=True,
    )
    assert_same_tallies(plan)
    assert PairTally.objects.exists()


def test_the_full_recompute_finds_and_repairs_stored_tallies_that_differ_from_the_votes(
    rated, caplog
):
    """A folded vote deleted, or a vote that appears below the folded id (a transaction open
    longer than the settle window): the full recompute's comparison logs it and folds every
    vote again."""
    aggregates.tallies_fold(settled=_settled())
    gone = Vote.objects.order_by("pk").first()
    kept = {
        name: value
        for name, value in Vote.objects.filter(pk=gone.pk).values()[0].items()
        if name == "style" or not name.startswith("style_")  # generated columns
    }
    Vote.objects.filter(pk=gone.pk).delete()
    cutoff = timezone.now()
    stored = VoteTallies(
        cutoff=cutoff, plan=FilterPlan(cutoff=cutoff), style=True, stored=StoredTallies.current()
    )
    assert stored.category("overall").counted == 60  # the stored rows still hold it

    for change in ("deleted", "put back below the folded id"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="leaderboard.aggregates"):
            recompute.ratings_recompute_all(settled=_settled())
        assert "differ from the votes in" in caplog.text, change
        assert_same_tallies(FilterPlan(cutoff=timezone.now()))
        if change == "deleted":
            Vote.objects.create(**kept)
    caplog.clear()
    with caplog.at_level("WARNING", logger="leaderboard.aggregates"):
        recompute.ratings_recompute_all(settled=_settled())
    assert "differ" not in caplog.text


def test_a_change_of_the_long_prompt_threshold_folds_every_vote_again(rated, settings):
    aggregates.tallies_fold(settled=_settled())
    settings.ARENA_LONG_PROMPT_CHARS = 1
    assert not aggregates.tallies_ready()
    aggregates.tallies_fold(settled=_settled())
    assert aggregates.tallies_ready()
    assert_same_tallies(FilterPlan(cutoff=timezone.now()))
