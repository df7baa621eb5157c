"""The stored tallies (leaderboard.aggregates) against a tally of every vote: equal, at any
moment, whatever happened to the votes after they were folded."""

import datetime as dt
import random

import numpy as np
import pytest
from django.utils import timezone

from battles.models import Vote
from leaderboard import aggregates, recompute, refresh
from leaderboard.aggregates import FIXED_WIDTH, LANGUAGE_WIDTH, StoredTallies
from leaderboard.exclusions import FilterPlan
from leaderboard.models import FlaggedVoter, ImportedVote, TallyBlock, TallyFold
from leaderboard.tally import VoteTallies, _Table
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
    every.flags_apply()
    # Twice: the left-out votes read afresh (and stored), then from what was stored, unless
    # nothing was to be stored.
    stored = VoteTallies(cutoff=cutoff, plan=plan, style=True, stored=StoredTallies.current())
    stored.flags_apply()
    assert_equal_tallies(every, stored)
    if stored.left_out_blocks:
        aggregates.tallies_left_out_save(stored.left_out_blocks)
        again = VoteTallies(cutoff=cutoff, plan=plan, style=True, stored=StoredTallies.current())
        assert again.left_out_blocks == []
        again.flags_apply()
        assert_equal_tallies(every, again)


def assert_equal_tallies(every: VoteTallies, stored: VoteTallies) -> None:
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
            vote = make_vote(
                a,
                b,
                choice,
                visitor_hash=rng.choice(VOTERS),
                prompt_hash=rng.choice(PROMPTS),
                **vote_fields(),
            )
            if rng.random() < 0.15:
                # Committed out of order: a time stamp before votes with lower ids, so the
                # hot prompts' first votes (which the down-sampling keeps) change.
                earlier = timezone.now() - dt.timedelta(minutes=rng.randint(1, 60))
                Vote.objects.filter(pk=vote.pk).update(created_at=earlier)
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
    assert TallyBlock.objects.exists()


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


def _stored_totals() -> tuple:
    state = StoredTallies.current()
    cutoff = timezone.now()
    return (
        state.fixed(cutoff=cutoff, style=True).totals(),
        state.by_language(cutoff=cutoff).totals(),
    )


def test_a_block_reads_back_exactly_what_was_written_integers_wider_than_32_bits_too(db):
    """Counts and id sums come back as the same integers (int32 where they fit, int64 where
    one does not), the style sums as the same float64 bits."""
    rng = np.random.default_rng(5)
    for scale in (1, 2**40):
        size = 50
        pairs = np.unique(rng.integers(1, 30, size=(size, 2)), axis=0)
        values = np.zeros((len(pairs), FIXED_WIDTH))
        values[:, : aggregates._COUNTS] = rng.integers(0, 1000, (len(pairs), 16)) * scale
        values[:, aggregates._ID_COLUMNS] = rng.integers(0, 2**50, (len(pairs), 4))
        values[:, aggregates._STYLE_COLUMNS] = rng.normal(size=(len(pairs), aggregates._STYLE))
        table = _Table((pairs[:, 0], pairs[:, 1], np.zeros(len(pairs))), values)
        TallyBlock.objects.all().delete()
        aggregates.block_encode("vote", aggregates.PAIRS, table).save()
        block = TallyBlock.objects.get()
        assert len(block.counts) == len(pairs) * 16 * (4 if scale == 1 else 8)
        back = aggregates._blocks(aggregates.PAIRS, FIXED_WIDTH)
        for mine, theirs in zip(table.columns, back.columns, strict=True):
            assert np.array_equal(mine, theirs)
        assert np.array_equal(table.values, back.values)

        languages = _Table.from_keys(
            [("en", 1, 2, ""), ("fr", 1, 2, ""), ("en", 3, 1, "")],
            np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]) * scale,
            key_columns=4,
        )
        aggregates.block_encode("vote", aggregates.LANGUAGES, languages).save()
        back = aggregates._blocks(aggregates.LANGUAGES, LANGUAGE_WIDTH)
        assert back.keys == languages.keys
        assert np.array_equal(back.values, languages.values)


def test_each_fold_writes_only_its_votes_and_the_full_recompute_merges_the_blocks(rated, make_vote):
    alpha, bravo, charlie = rated
    aggregates.tallies_fold(settled=_settled())
    first = set(TallyBlock.objects.values_list("pk", flat=True))
    make_vote(alpha, bravo, "a", language="en")
    make_vote(charlie, bravo, "tie", language="fr")
    aggregates.tallies_fold(settled=_settled())
    added = TallyBlock.objects.exclude(pk__in=first)
    assert {(b.kind, b.rows) for b in added} == {("pairs", 2), ("languages", 2)}
    assert set(TallyBlock.objects.values_list("pk", flat=True)) > first  # nothing rewritten
    before = _stored_totals()

    refresh.ratings_refresh(force=True, interval=0)
    assert TallyBlock.objects.filter(kind="pairs").count() == 1
    assert TallyBlock.objects.filter(kind="languages").count() == 1
    after = _stored_totals()
    assert aggregates.tables_differences(before[0], after[0], width=FIXED_WIDTH) == []
    assert aggregates.tables_differences(before[1], after[1], width=LANGUAGE_WIDTH) == []
    assert_same_tallies(FilterPlan(cutoff=timezone.now()))


def test_a_fold_merges_the_blocks_once_there_are_too_many(rated, make_vote, settings):
    alpha, bravo, _ = rated
    aggregates.tallies_fold(settled=_settled())
    for _ in range(aggregates.MERGE_AT):
        make_vote(alpha, bravo, "a")
        aggregates.tallies_fold(settled=_settled())
    # One block from the first fold and one per later fold: merged on passing MERGE_AT.
    assert TallyBlock.objects.filter(kind="pairs").count() == 1
    assert_same_tallies(FilterPlan(cutoff=timezone.now()))


def test_blocks_of_an_older_layout_are_dropped_and_every_vote_folded_again(rated, make_vote):
    """After an upgrade that changes the storage, the first fold starts from zero."""
    aggregates.tallies_fold(settled=_settled())
    TallyFold.objects.update(params={**aggregates.fold_params(), "storage": "json rows"})
    TallyBlock.objects.update(counts=b"")  # unreadable in the current layout
    assert not aggregates.tallies_ready()
    make_vote(rated[0], rated[1], "b")
    aggregates.tallies_fold(settled=_settled())
    assert aggregates.tallies_ready()
    assert not TallyBlock.objects.filter(counts=b"").exists()
    assert_same_tallies(FilterPlan(cutoff=timezone.now()))


def test_the_full_recompute_repairs_a_stored_block_edited_by_hand(rated, caplog):
    aggregates.tallies_fold(settled=_settled())
    block = TallyBlock.objects.get(kind="pairs")
    counts = aggregates._integers_read(bytes(block.counts), block.rows, 16).copy()
    counts[0, 0] += 3  # three votes that were never cast
    TallyBlock.objects.filter(pk=block.pk).update(counts=aggregates._integers(counts))
    stored = VoteTallies(
        cutoff=timezone.now(),
        plan=FilterPlan(cutoff=timezone.now()),
        style=True,
        stored=StoredTallies.current(),
    )
    assert stored.category("overall").counted == 63

    with caplog.at_level("WARNING", logger="leaderboard.aggregates"):
        recompute.ratings_recompute_all(settled=_settled())
    assert "differ from the votes in 1 rows" in caplog.text
    assert_same_tallies(FilterPlan(cutoff=timezone.now()))


def test_a_refresh_reads_the_left_out_votes_in_full_only_when_their_filters_change(
    make_model, make_vote, caplog
):
    a, b = make_model("Left"), make_model("Right")
    for _ in range(5):
        make_vote(a, b, "a", visitor_hash="suspect", prompt_hash="hot")
    for i in range(4):
        make_vote(a, b, "b", visitor_hash=f"voter{i}", prompt_hash=f"prompt{i}")
    FlaggedVoter.objects.create(visitor_hash="suspect", e_value=40.0, votes_tested=5, votes_total=5)
    aggregates.tallies_fold(settled=_settled())
    caplog.set_level("INFO", logger="leaderboard.aggregates")

    def read_in_full(**changes) -> set[str]:
        caplog.clear()
        plan = FilterPlan(
            cutoff=timezone.now(),
            dedup=True,
            dedup_threshold=2.0,
            hot_prompts=("hot",),
            voter_flags=True,
        )
        assert_same_tallies(plan)  # and stores what was read in full
        return {
            record.args[0] for record in caplog.records if "read in full" in record.getMessage()
        }

    assert read_in_full() == {"prompt_dedup", "voter_flagged"}
    assert TallyBlock.objects.exclude(scope="").count() == 4  # pairs and languages of each
    # New votes of both sets, above the stored id: read on their own.
    make_vote(a, b, "tie", visitor_hash="suspect", prompt_hash="hot", flagged_invalid=True)
    assert read_in_full() == set()
    # A late flag on a stored vote: a row-level reason, read on its own too.
    Vote.objects.filter(visitor_hash="suspect").order_by("pk").update(identity_leak=True)
    assert read_in_full() == set()
    # Another flagged voter: that set is read again; the hot prompt's is not.
    FlaggedVoter.objects.create(visitor_hash="voter1", e_value=40.0, votes_tested=5, votes_total=5)
    assert read_in_full() == {"voter_flagged"}
    # A vote on the hot prompt dated before the others: its first votes change.
    early = make_vote(a, b, "b", visitor_hash="voter2", prompt_hash="hot")
    Vote.objects.filter(pk=early.pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    aggregates.tallies_fold(settled=_settled())
    assert read_in_full() == {"prompt_dedup", "voter_flagged"}
    assert read_in_full() == set()
