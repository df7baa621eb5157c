import threading

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from battles.models import Vote
from leaderboard import recompute
from leaderboard.models import ImportedVote, RecomputeLock, Snapshot
from leaderboard.tasks import ratings_recompute_task
from llm_providers.models import LLMModel


def ranking(snapshot: Snapshot) -> list[str]:
    return [row.model.name for row in snapshot.rows.select_related("model").order_by("-rating")]


def test_it_writes_a_snapshot_with_one_row_per_rated_model(rated):
    snapshot = recompute.ratings_recompute()
    assert snapshot.category == "overall"
    assert snapshot.method == "bradley-terry/sandwich"
    assert snapshot.vote_count == 60
    assert snapshot.data_cutoff is not None
    assert snapshot.params["style_control"] is True
    assert ranking(snapshot) == ["Alpha", "Bravo", "Charlie"]
    alpha = snapshot.rows.get(model__name="Alpha")
    assert alpha.lower < alpha.rating < alpha.upper
    assert alpha.rank_ub == 1
    assert alpha.votes == 12 + 4 + 14 + 4 + 2 + 8
    assert (alpha.wins, alpha.losses, alpha.ties) == (34, 4, 6)
    assert alpha.win_rate == pytest.approx(34 / 38)


def test_a_second_run_without_new_votes_writes_nothing_new(rated):
    first = recompute.ratings_recompute()
    second = recompute.ratings_recompute()
    assert second.pk == first.pk
    assert Snapshot.objects.count() == 1


def test_a_new_vote_gives_a_new_snapshot(rated, make_vote):
    first = recompute.ratings_recompute()
    alpha, bravo, _ = rated
    make_vote(alpha, bravo, "b")
    second = recompute.ratings_recompute()
    assert second.pk != first.pk
    assert second.vote_count == first.vote_count + 1


def test_only_the_latest_snapshot_keeps_its_matrices(rated, make_vote):
    first = recompute.ratings_recompute()
    alpha, bravo, charlie = rated
    at = {pk: i for i, pk in enumerate(first.models_order)}
    assert first.battle_counts()[at[alpha.pk], at[charlie.pk]] == 14 + 4 + 2
    make_vote(alpha, bravo, "b")
    second = recompute.ratings_recompute()
    order = second.models_order
    counts = second.battle_counts()
    assert counts[order.index(alpha.pk), order.index(bravo.pk)] == 12 + 4 + 8 + 1
    rates = second.win_rates()
    assert np.isnan(rates[0, 0]) and 0 < rates[order.index(alpha.pk), order.index(bravo.pk)] < 1
    first.refresh_from_db()
    assert first.battle_counts().size == 0 and first.win_rates().size == 0
    assert first.rows.count() == 3  # the rating history stays


def test_the_aggregation_costs_the_same_queries_for_any_number_of_votes(three_models, make_votes):
    alpha, bravo, charlie = three_models
    make_votes(alpha, bravo, "a", 2)
    recompute.ratings_recompute()  # each run below then replaces a snapshot
    make_votes(alpha, bravo, "a", 1)
    make_votes(bravo, charlie, "b", 3)
    with CaptureQueriesContext(connection) as few:
        recompute.ratings_recompute()
    make_votes(alpha, charlie, "tie", 30)
    with CaptureQueriesContext(connection) as many:
        recompute.ratings_recompute()
    assert Snapshot.objects.count() == 3
    assert len(many) == len(few)


def test_it_leaves_out_leaked_and_flagged_votes_and_counts_each(rated, make_vote):
    alpha, bravo, _ = rated
    make_vote(alpha, bravo, "b", identity_leak=True)
    make_vote(alpha, bravo, "b", identity_leak=True, flagged_invalid=True)
    make_vote(alpha, bravo, "b", flagged_invalid=True)
    snapshot = recompute.ratings_recompute()
    assert snapshot.vote_count == 60
    assert snapshot.excluded == {
        "identity_leak": 2,
        "flagged_invalid": 1,
        "voter_flagged": 0,
        "prompt_dedup": 0,
    }


def test_a_battle_whose_failed_side_was_retried_still_counts(rated, make_vote):
    alpha, bravo, _ = rated
    vote = make_vote(alpha, bravo, "b")
    vote.battle.had_failed_side = True
    vote.battle.save()
    assert recompute.ratings_recompute().vote_count == 61


def test_votes_on_models_with_an_excluded_status_are_left_out_only_when_configured(rated, settings):
    *_, charlie = rated
    LLMModel.objects.filter(pk=charlie.pk).update(status=LLMModel.Status.INACTIVE)
    assert recompute.ratings_recompute().vote_count == 60
    settings.ARENA_RATINGS_EXCLUDE_STATUSES = ["inactive"]
    snapshot = recompute.ratings_recompute()
    assert snapshot.vote_count == 12 + 4 + 8
    assert snapshot.excluded["model_status"] == 60 - 24
    assert ranking(snapshot) == ["Alpha", "Bravo"]


def test_each_category_rates_only_its_votes(three_models, make_votes, settings):
    settings.ARENA_LONG_PROMPT_CHARS = 500
    alpha, bravo, charlie = three_models
    make_votes(alpha, bravo, "a", 6, turns=3)
    make_votes(bravo, charlie, "a", 5, prompt_chars=900)
    make_votes(alpha, charlie, "b", 4, has_code=True)
    make_votes(alpha, bravo, "b", 3, language="fr", prompt_chars=500)
    counts = {
        category: recompute.ratings_recompute(category=category).vote_count
        for category in ["overall", "multi_turn", "long_prompt", "code", "lang:fr"]
    }
    assert counts == {"overall": 18, "multi_turn": 6, "long_prompt": 5, "code": 4, "lang:fr": 3}
    assert ranking(Snapshot.objects.filter(category="code").first()) == ["Charlie", "Alpha"]


def test_recomputing_everything_adds_languages_with_enough_votes(rated, make_votes, settings):
    settings.ARENA_LANGUAGE_CATEGORY_MIN_VOTES = 3
    alpha, bravo, _ = rated
    make_votes(alpha, bravo, "a", 3, language="de")
    make_votes(alpha, bravo, "a", 2, language="ja")
    snapshots = recompute.ratings_recompute_all()
    assert [s.category for s in snapshots] == [
        "overall",
        "multi_turn",
        "long_prompt",
        "code",
        "lang:de",
    ]
    assert len({s.data_cutoff for s in snapshots}) == 1


def test_style_control_discounts_wins_that_come_from_longer_answers(three_models, make_vote):
    alpha, bravo, charlie = three_models

    def styled(length_a: int, length_b: int) -> dict:
        return {
            "a": {"length": length_a, "headers": 0, "lists": 0, "bold": 0},
            "b": {"length": length_b, "headers": 0, "lists": 0, "bold": 0},
        }

    # Alpha writes long answers and mostly wins; when its answers are short it wins half.
    for _ in range(20):
        make_vote(alpha, bravo, "a", style=styled(3000, 300))
        make_vote(alpha, charlie, "a", style=styled(3000, 300))
        make_vote(bravo, charlie, "a", style=styled(300, 300))
    for choice in ["a", "b"] * 5:
        make_vote(alpha, bravo, choice, style=styled(300, 300))
        make_vote(alpha, charlie, choice, style=styled(300, 300))
    make_vote(bravo, charlie, "b", style=styled(300, 3000))
    snapshot = recompute.ratings_recompute()
    alpha_row = snapshot.rows.get(model=alpha)
    assert snapshot.params["style_coefs"]["length"] > 0
    assert alpha_row.style_rating < alpha_row.rating


def test_imported_votes_are_rated_with_arena_votes(rated):
    alpha, bravo, _ = rated
    before = recompute.ratings_recompute().rows.get(model=bravo).rating
    ImportedVote.objects.bulk_create(
        [
            ImportedVote(
                external_id=f"q{i}",
                model_a=alpha,
                model_b=bravo,
                choice="b",
                created_at="2024-01-01T00:00:00Z",
            )
            for i in range(30)
        ]
    )
    snapshot = recompute.ratings_recompute()
    assert snapshot.vote_count == 90
    assert snapshot.rows.get(model=bravo).rating > before


def test_a_recompute_while_another_holds_the_lock_does_nothing(rated):
    RecomputeLock.objects.create(name=recompute.LOCK_NAME, holder="other")
    RecomputeLock.objects.filter(name=recompute.LOCK_NAME).update(held_until="2999-01-01T00:00:00Z")
    with pytest.raises(recompute.RecomputeBusyError):
        recompute.ratings_recompute()
    assert not Snapshot.objects.exists()


def test_a_lock_left_by_a_dead_run_expires(rated):
    RecomputeLock.objects.create(
        name=recompute.LOCK_NAME, holder="dead", held_until="2000-01-01T00:00:00Z"
    )
    assert recompute.ratings_recompute().vote_count == 60
    assert RecomputeLock.objects.get().held_until is None


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_write_one_complete_snapshot(rated, monkeypatch):
    inside = threading.Event()
    release = threading.Event()
    real_fit = recompute.fit

    def slow_fit(*args, **kwargs):
        inside.set()
        release.wait(timeout=20)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(recompute, "fit", slow_fit)
    outcomes = []

    def run():
        try:
            outcomes.append(recompute.ratings_recompute(category="overall").pk)
        except recompute.RecomputeBusyError:
            outcomes.append("busy")
        finally:
            connection.close()

    first = threading.Thread(target=run)
    first.start()
    assert inside.wait(timeout=20), "the first run never reached the engine"
    second = threading.Thread(target=run)
    second.start()
    second.join(timeout=30)
    release.set()
    first.join(timeout=30)
    assert sorted(outcomes, key=str) == sorted([Snapshot.objects.get().pk, "busy"], key=str)
    assert Snapshot.objects.get().rows.count() == 3


def test_the_command_recomputes_one_category_and_reports_it(rated, capsys):
    call_command("recompute_ratings", "--category", "overall", "--bootstrap", "50")
    out = capsys.readouterr().out
    assert "overall: 3 models from 60 votes (bradley-terry/bootstrap" in out
    snapshot = Snapshot.objects.get()
    assert snapshot.params["bootstrap_rounds"] == 50


def test_the_command_recomputes_every_category_by_default(rated):
    call_command("recompute_ratings")
    assert sorted(Snapshot.objects.values_list("category", flat=True)) == [
        "code",
        "long_prompt",
        "multi_turn",
        "overall",
    ]


def test_the_command_rejects_an_unknown_category(db):
    with pytest.raises(CommandError, match="Unknown category 'cooking'"):
        call_command("recompute_ratings", "--category", "cooking")


def test_the_command_says_when_another_run_holds_the_lock(rated):
    RecomputeLock.objects.create(
        name=recompute.LOCK_NAME, holder="other", held_until="2999-01-01T00:00:00Z"
    )
    with pytest.raises(CommandError, match="Another ratings recompute is running"):
        call_command("recompute_ratings")


def test_the_beat_task_does_what_the_command_does(rated):
    ratings_recompute_task()
    assert Snapshot.objects.count() == 4
    assert Snapshot.objects.get(category="overall").vote_count == 60


def test_the_beat_task_skips_a_tick_while_another_run_holds_the_lock(rated):
    RecomputeLock.objects.create(
        name=recompute.LOCK_NAME, holder="other", held_until="2999-01-01T00:00:00Z"
    )
    ratings_recompute_task()
    assert not Snapshot.objects.exists()


@pytest.mark.worker
def test_the_celery_worker_runs_the_recompute_task(transactional_db, celery_worker, rated):
    from conftest import wait_for

    ratings_recompute_task.delay()
    wait_for(
        lambda: Snapshot.objects.filter(category="overall").exists(),
        timeout=60,
        message="the worker did not write a snapshot",
    )
    assert Snapshot.objects.get(category="overall").vote_count == 60


def test_the_same_counts_from_other_votes_are_a_new_snapshot_with_style_control(rated, make_vote):
    """Counts alone would say nothing changed; the style sums (and the style fit) did."""
    alpha, bravo, _ = rated
    long_a = {"a": {"length": 2000}, "b": {"length": 100}}
    short_a = {"a": {"length": 100}, "b": {"length": 2000}}
    first = make_vote(alpha, bravo, "a", style=long_a)
    second = make_vote(alpha, bravo, "a", style=short_a, flagged_invalid=True)
    before = recompute.ratings_recompute()
    Vote.objects.filter(pk=first.pk).update(flagged_invalid=True)
    Vote.objects.filter(pk=second.pk).update(flagged_invalid=False)
    after = recompute.ratings_recompute()
    assert after.vote_count == before.vote_count
    assert after.pk != before.pk
    assert after.params["style_coefs"] != before.params["style_coefs"]
    assert recompute.ratings_recompute().pk == after.pk


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL only: runs in the service-mode pass"
)
def test_postgresql_has_the_voter_order_index_and_lz4_matrices(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'battles_vote_voter_order'"
        )
        (definition,) = cursor.fetchone()
        cursor.execute(
            "SELECT attname, attcompression FROM pg_attribute "
            "WHERE attrelid = 'leaderboard_snapshot'::regclass AND attname LIKE '%%_matrix'"
        )
        compression = dict(cursor.fetchall())
    assert '(visitor_hash COLLATE "C", created_at, id)' in definition
    assert "INCLUDE (model_a_id, model_b_id, choice, identity_leak, flagged_invalid)" in definition
    assert compression == {"win_rate_matrix": "l", "battle_count_matrix": "l"}


def test_fits_side_by_side_give_exactly_the_snapshots_of_fits_one_after_the_other(
    rated, make_votes, monkeypatch
):
    alpha, bravo, charlie = rated
    make_votes(alpha, bravo, "b", 6, turns=2, has_code=True)
    make_votes(bravo, charlie, "a", 5, turns=2)
    make_votes(charlie, alpha, "tie", 4, has_code=True)

    def boards(threads: int) -> dict:
        Snapshot.objects.all().delete()
        monkeypatch.setattr(recompute, "FIT_THREADS", threads)
        snapshots = recompute.ratings_recompute_all(style=True)
        return {
            (snapshot.category, row.model_id): (row.rating, row.lower, row.upper, row.style_rating)
            for snapshot in snapshots
            for row in snapshot.rows.all()
        }

    one_by_one = boards(1)
    assert {category for category, _ in one_by_one} >= {"overall", "multi_turn", "code"}
    assert boards(2) == one_by_one
