"""The migrations that moved FlaggedVoter and shared the vote columns keep the data."""

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from leaderboard.models import FlaggedVoter

BEFORE_THE_MOVE = [
    ("battles", "0005_reply_verbose_name_plural"),
    ("leaderboard", "0004_snapshot_matrix_lz4"),
]


def _migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    return executor


@pytest.mark.django_db(transaction=True)
def test_flagged_voters_keep_their_rows_and_permissions_when_they_move_to_the_leaderboard():
    executor = _migrate(BEFORE_THE_MOVE)
    try:
        old = executor.loader.project_state(BEFORE_THE_MOVE).apps
        old.get_model("battles", "FlaggedVoter").objects.create(
            visitor_hash="f" * 32, e_value=25.0, votes_tested=2, votes_total=9, cleared=True
        )
        # contenttypes and auth stay as they are: their current models fit their tables.
        content_type = ContentType.objects.get(app_label="battles", model="flaggedvoter")
        permissions = set(
            Permission.objects.filter(content_type=content_type).values_list("pk", flat=True)
        )
        assert permissions  # staff may have been given them
    finally:
        _migrate(None)

    moved = FlaggedVoter.objects.get()
    assert (moved.visitor_hash, moved.e_value, moved.votes_total, moved.cleared) == (
        "f" * 32,
        25.0,
        9,
        True,
    )
    assert FlaggedVoter._meta.db_table == "leaderboard_flaggedvoter"
    ContentType.objects.clear_cache()
    kept = Permission.objects.filter(pk__in=permissions).select_related("content_type")
    assert {p.content_type.app_label for p in kept} == {"leaderboard"}
    assert Permission.objects.filter(codename="change_flaggedvoter").count() == 1


def test_the_models_of_battles_and_the_leaderboard_match_their_migrations(db):
    call_command("makemigrations", "battles", "leaderboard", "--check", "--dry-run")


BEFORE_BINARY_MATRICES = [("leaderboard", "0011_tally_blocks")]


@pytest.mark.django_db(transaction=True)
def test_the_latest_snapshot_matrices_become_arrays_and_come_back_as_json():
    executor = _migrate(BEFORE_BINARY_MATRICES)
    try:
        old = executor.loader.project_state(BEFORE_BINARY_MATRICES).apps
        Snapshot = old.get_model("leaderboard", "Snapshot")
        common = {"category": "overall", "method": "bt", "models_order": [7, 9]}
        superseded = Snapshot.objects.create(
            **common,
            win_rate_matrix=[[None, 0.5], [0.5, None]],
            battle_count_matrix=[[0, 2], [2, 0]],
        )
        latest = Snapshot.objects.create(
            **common,
            win_rate_matrix=[[None, 0.625], [0.375, None]],
            battle_count_matrix=[[0, 8], [8, 0]],
        )
        _migrate(None)
        from leaderboard.models import Snapshot as Current

        converted = Current.objects.get(pk=latest.pk)
        rates = converted.win_rates()
        assert np.isnan(rates[0, 0]) and np.isnan(rates[1, 1])
        assert (rates[0, 1], rates[1, 0]) == (0.625, 0.375)
        assert converted.battle_counts().tolist() == [[0, 8], [8, 0]]
        assert bytes(Current.objects.get(pk=superseded.pk).win_rate_matrix) == b""

        executor = _migrate(BEFORE_BINARY_MATRICES)
        back = executor.loader.project_state(BEFORE_BINARY_MATRICES).apps
        restored = back.get_model("leaderboard", "Snapshot").objects.get(pk=latest.pk)
        assert restored.win_rate_matrix == [[None, 0.625], [0.375, None]]
        assert restored.battle_count_matrix == [[0, 8], [8, 0]]
    finally:
        _migrate(None)
