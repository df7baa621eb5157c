"""The transparency report: its counts against the snapshot and the votes, and staff changes."""

import pytest
from django.db.models import Q

from battles import services
from battles.models import Battle, Vote
from leaderboard import recompute
from leaderboard.transparency import REASON_LABELS, transparency_report
from llm_providers.models import LLMModel, ModelChange


@pytest.fixture
def counted(rated, make_vote, make_model, settings):
    """The rated board plus votes left out for each row-level reason."""
    settings.ARENA_RATINGS_EXCLUDE_STATUSES = ["retired"]
    alpha, bravo, charlie = rated
    old = make_model("Oldie")
    make_vote(alpha, bravo, "b", identity_leak=True)
    make_vote(alpha, bravo, "b", identity_leak=True, flagged_invalid=True)
    make_vote(bravo, charlie, "a", flagged_invalid=True)
    make_vote(old, charlie, "a")
    make_vote(alpha, old, "tie")
    LLMModel.objects.filter(pk=old.pk).update(status=LLMModel.Status.RETIRED)
    snapshot = recompute.ratings_recompute()
    return snapshot, (alpha, bravo, charlie, old)


def votes_of(model, *conditions) -> int:
    return Vote.objects.filter(Q(model_a=model) | Q(model_b=model), *conditions).count()


def test_per_model_counts_match_the_snapshot_and_the_votes(counted):
    snapshot, (alpha, bravo, charlie, old) = counted
    report = transparency_report()
    assert report.snapshot == snapshot
    rows = {row.model.pk: row for row in report.models}
    assert set(rows) == {alpha.pk, bravo.pk, charlie.pk, old.pk}
    for model in (alpha, bravo, charlie):
        assert rows[model.pk].counted == snapshot.rows.get(model=model).votes
    assert rows[old.pk].counted == 0

    # Each reason as the recompute applies them, first reason first, counted from the votes.
    leak = Q(identity_leak=True)
    invalid = Q(flagged_invalid=True, identity_leak=False)
    retired = Q(model_a__status="retired") | Q(model_b__status="retired")
    for model in (alpha, bravo, charlie, old):
        excluded = rows[model.pk].excluded
        assert excluded["identity_leak"] == votes_of(model, leak)
        assert excluded["flagged_invalid"] == votes_of(model, invalid)
        assert excluded["model_status"] == votes_of(model, retired)
        assert excluded["prompt_dedup"] == excluded["voter_flagged"] == 0
        assert rows[model.pk].counted + rows[model.pk].excluded_total == votes_of(model)
    # A vote counts for both of its models.
    for reason in REASON_LABELS:
        assert sum(row.excluded[reason] for row in report.models) == 2 * snapshot.excluded.get(
            reason, 0
        )
    assert rows[alpha.pk].excluded["identity_leak"] == 2
    assert rows[old.pk].excluded["model_status"] == 2


def test_battle_shares_and_the_policys_target(counted):
    _, (alpha, bravo, charlie, old) = counted
    report = transparency_report()
    total = Battle.objects.count()
    assert report.battles == total
    for row in report.models:
        battles = Battle.objects.filter(Q(model_a=row.model) | Q(model_b=row.model)).count()
        assert row.battles == battles
        assert row.battle_share == pytest.approx(battles / total)
    assert sum(row.battle_share for row in report.models) == pytest.approx(2.0)
    rows = {row.model.pk: row for row in report.models}
    # Three active models of equal weight: each is in two of the three possible pairs.
    for model in (alpha, bravo, charlie):
        assert rows[model.pk].target_share == pytest.approx(2 / 3)
    assert rows[old.pk].target_share is None  # retired: never drawn


def test_staff_changes_are_recorded_with_a_time_and_shown(counted, admin_client, client):
    _, (_, bravo, charlie, _) = counted
    bravo.weight = 2.5
    bravo.save()
    response = admin_client.post(
        "/admin/llm_providers/llmmodel/",
        {"action": "deactivate", "_selected_action": [charlie.pk]},
    )
    assert response.status_code == 302
    changes = list(ModelChange.objects.order_by("at", "pk"))
    assert [(c.model, c.field, c.old, c.new) for c in changes] == [
        (bravo, "weight", "1.0", "2.5"),
        (charlie, "status", "active", "inactive"),
    ]
    assert all(c.at is not None for c in changes)

    page = client.get("/leaderboard/transparency/").content.decode()
    assert "Bravo, weight 1.0 → 2.5" in page
    assert "Charlie, status active → inactive" in page
    listed = page.split('class="report-changes"')[1].split("</ul>")[0]
    assert "admin" not in listed  # when, never who (the admin client's user is "admin")
    data = client.get("/leaderboard/transparency.json").json()
    assert [(c["model"], c["field"], c["new"]) for c in data["changes"]] == [
        ("charlie", "status", "inactive"),
        ("bravo", "weight", "2.5"),
    ]
    by_slug = {m["slug"]: m for m in data["models"]}
    assert by_slug["charlie"]["deactivated_at"] == changes[1].at.isoformat()
    assert by_slug["charlie"]["target_share"] is None
    assert by_slug["alpha"]["votes_excluded"]["identity_leak"] == 2
    assert data["snapshot"]["method"] == "bradley-terry/sandwich"
    assert data["snapshot"]["params"]["excluded_statuses"] == ["retired"]


def test_the_page_shows_the_method_and_a_row_per_model(counted, client):
    snapshot, _ = counted
    response = client.get("/leaderboard/transparency/")
    assert response.status_code == 200
    body = response.content.decode()
    assert snapshot.method in body
    for name in ("Alpha", "Bravo", "Charlie", "Oldie"):
        assert f">{name}</a>" in body
    assert "Votes left out" in body
    assert ">identity leak</th>" in body and ">outlier voter</th>" in body
    assert 'href="/leaderboard/transparency/"' in client.get("/leaderboard/").content.decode()


def test_without_a_snapshot_the_report_says_so(client, db):
    response = client.get("/leaderboard/transparency/")
    assert b"No ratings yet" in response.content
    assert client.get("/leaderboard/transparency.json").json()["snapshot"] is None


def test_the_recompute_stores_the_overall_ratings_the_active_policy_reads(counted, settings):
    snapshot, (alpha, bravo, charlie, old) = counted
    standings = services.sampling_standings([alpha.pk, bravo.pk, charlie.pk, old.pk])
    for row in snapshot.rows.all():
        assert standings[row.model_id].rating == pytest.approx(row.rating)
        assert standings[row.model_id].se == pytest.approx((row.upper - row.lower) / 3.919928)
    settings.ARENA_SAMPLING = "active"
    shares = {row.model.pk: row.target_share for row in transparency_report().models}
    assert sum(v for v in shares.values() if v) == pytest.approx(2.0)
    # The active policy's target differs from the weighted 2/3 each.
    assert shares[alpha.pk] != pytest.approx(2 / 3)
    assert transparency_report() and shares[old.pk] is None
