"""Why a vote is left out: hot prompts down-sampled (outlier voters: test_outliers.py)."""

import pytest

from battles.models import Vote
from leaderboard import exclusions, recompute
from leaderboard.models import HotPrompt

pytestmark = pytest.mark.usefixtures("filters_on")


# --- hot prompts ----------------------------------------------------------------------------------


def test_the_dedup_cut_off_is_the_interpolated_quantile_of_prompt_counts():
    # Nine prompts asked once and one asked eight times, at the 90th percentile:
    # position 0.9 * 9 = 8.1, between 1 and 8, so 1 + 0.1 * 7 = 1.7.
    assert exclusions.prompt_count_quantile({1: 9, 8: 1}, 0.9) == pytest.approx(1.7)
    # 99 single prompts and one asked 50 times, at FastChat's top 0.1%: 1 + 0.901 * 49.
    assert exclusions.prompt_count_quantile({1: 99, 50: 1}, 0.999) == pytest.approx(45.149)
    assert exclusions.prompt_count_quantile({1: 5}, 0.999) == 1.0


def test_a_hot_prompt_keeps_only_its_first_votes(settings, three_models, make_vote):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, _ = three_models
    for i in range(9):
        make_vote(alpha, bravo, "a", prompt_hash=f"{i:064x}")
    hot = [make_vote(alpha, bravo, "b", prompt_hash="f" * 64) for _ in range(8)]

    snapshot = recompute.ratings_recompute(style=False)

    # Cut-off 1.7: the hot prompt keeps int(1.7) = 1 vote, its earliest; 7 are left out.
    assert snapshot.excluded["prompt_dedup"] == 7
    assert snapshot.vote_count == 10
    assert snapshot.params["filters"]["prompt_dedup_keep"] == 1
    plan = exclusions.filter_plan()
    kept = Vote.objects.filter(
        exclusions.counted_filter(source=Vote, plan=plan), prompt_hash="f" * 64
    )
    assert list(kept.values_list("pk", flat=True)) == [hot[0].pk]
    row = {r.model_id: r for r in snapshot.rows.all()}[alpha.pk]
    assert (row.wins, row.losses) == (9, 1)


def test_dedup_off_counts_every_vote_and_votes_without_a_hash_are_never_dropped(
    settings, three_models, make_vote
):
    alpha, bravo, _ = three_models
    for _ in range(6):
        make_vote(alpha, bravo, "a")  # older votes: no prompt hash
    assert recompute.ratings_recompute(style=False).excluded["prompt_dedup"] == 0
    settings.ARENA_PROMPT_DEDUP = False
    for _ in range(6):
        make_vote(alpha, bravo, "a", prompt_hash="e" * 64)
    snapshot = recompute.ratings_recompute(style=False)
    assert "prompt_dedup" not in snapshot.excluded
    assert snapshot.vote_count == 12


def test_the_recompute_records_its_hot_prompts_and_pages_apply_the_same_plan(
    settings, three_models, make_vote
):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, _ = three_models
    assert exclusions.filter_plan_recorded().hot_prompts == ()  # before any recompute
    for i in range(9):
        make_vote(alpha, bravo, "a", prompt_hash=f"{i:064x}")
    for _ in range(8):
        make_vote(alpha, bravo, "b", prompt_hash="f" * 64)

    recompute.ratings_recompute(style=False)

    read, recorded = exclusions.filter_plan(), exclusions.filter_plan_recorded()
    assert recorded.hot_prompts == read.hot_prompts == ("f" * 64,)
    assert recorded.dedup_keep == read.dedup_keep == 1
    assert list(HotPrompt.objects.values_list("prompt_hash", "keep")) == [("f" * 64, 1)]
    counted = {
        plan: set(
            Vote.objects.filter(exclusions.counted_filter(source=Vote, plan=plan)).values_list(
                "pk", flat=True
            )
        )
        for plan in (read, recorded)
    }
    assert counted[read] == counted[recorded] and len(counted[read]) == 10


def test_hot_prompts_are_replaced_by_the_next_recompute(settings, three_models, make_vote):
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.9
    alpha, bravo, _ = three_models
    for i in range(9):
        make_vote(alpha, bravo, "a", prompt_hash=f"{i:064x}")
    for _ in range(8):
        make_vote(alpha, bravo, "b", prompt_hash="f" * 64)
    recompute.ratings_recompute(style=False)
    assert HotPrompt.objects.count() == 1

    settings.ARENA_PROMPT_DEDUP = False
    recompute.ratings_recompute(style=False)
    assert not HotPrompt.objects.exists()
    assert exclusions.filter_plan_recorded().dedup is False
