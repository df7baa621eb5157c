"""The snapshot matrices as arrays of bytes instead of JSON (Snapshot.win_rates()).

Encoding 80,000 numbers as JSON and the server parsing them as jsonb was most of what writing
a live refresh's snapshots cost. Only each category's latest snapshot is converted: a
superseded snapshot's matrices are never shown, and from now on they are cleared when a newer
one is written (its rows, the rating history, stay). The lz4 compression of migration 0004
is set again on the new columns.
"""

import importlib

import numpy as np
from django.db import migrations, models

lz4 = importlib.import_module("leaderboard.migrations.0004_snapshot_matrix_lz4")


def _latest_per_category(snapshots):
    seen = set()
    for snapshot in snapshots.objects.order_by("category", "-created_at", "-pk").iterator():
        if snapshot.category not in seen:
            seen.add(snapshot.category)
            yield snapshot


def _to_bytes(apps, schema_editor):
    Snapshot = apps.get_model("leaderboard", "Snapshot")
    for snapshot in _latest_per_category(Snapshot):
        n = len(snapshot.models_order)
        if not n or not snapshot.win_rate_matrix:
            continue
        rates = np.array(
            [[np.nan if v is None else v for v in row] for row in snapshot.win_rate_matrix],
            dtype="<f4",
        )
        counts = np.array(snapshot.battle_count_matrix, dtype="<i4")
        Snapshot.objects.filter(pk=snapshot.pk).update(
            win_rate_bytes=rates.tobytes(), battle_count_bytes=counts.tobytes()
        )


def _to_json(apps, schema_editor):
    Snapshot = apps.get_model("leaderboard", "Snapshot")
    for snapshot in _latest_per_category(Snapshot):
        n = len(snapshot.models_order)
        if not n or not snapshot.win_rate_bytes:
            continue
        rates = np.frombuffer(bytes(snapshot.win_rate_bytes), dtype="<f4").reshape(n, n)
        counts = np.frombuffer(bytes(snapshot.battle_count_bytes), dtype="<i4").reshape(n, n)
        Snapshot.objects.filter(pk=snapshot.pk).update(
            win_rate_matrix=[[None if v != v else round(v, 4) for v in r] for r in rates.tolist()],
            battle_count_matrix=counts.tolist(),
        )


class Migration(migrations.Migration):
    dependencies = [("leaderboard", "0011_tally_blocks")]

    operations = [
        migrations.AddField(
            model_name="snapshot",
            name="win_rate_bytes",
            field=models.BinaryField(blank=True, default=bytes),
        ),
        migrations.AddField(
            model_name="snapshot",
            name="battle_count_bytes",
            field=models.BinaryField(blank=True, default=bytes),
        ),
        migrations.RunPython(_to_bytes, _to_json, elidable=False),
        migrations.RemoveField("snapshot", "win_rate_matrix"),
        migrations.RemoveField("snapshot", "battle_count_matrix"),
        migrations.RenameField("snapshot", "win_rate_bytes", "win_rate_matrix"),
        migrations.RenameField("snapshot", "battle_count_bytes", "battle_count_matrix"),
        migrations.RunPython(lz4._compression("lz4"), migrations.RunPython.noop, elidable=False),
    ]
