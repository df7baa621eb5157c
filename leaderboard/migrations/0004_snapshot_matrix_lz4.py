"""Compress the snapshot matrices with lz4 instead of pglz on PostgreSQL.

A 200-model snapshot carries two 40,000-number matrices, stored out of line and compressed;
pglz took 20-50 ms of every snapshot write (a recompute writes one per category), lz4 a few.
Only where the server has lz4 (PostgreSQL 14+ built with it, as Debian's and the official
images are); elsewhere, and on SQLite, nothing changes.
"""

from django.db import migrations

COLUMNS = ("win_rate_matrix", "battle_count_matrix")


def _lz4(schema_editor) -> bool:
    if schema_editor.connection.vendor != "postgresql":
        return False
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        return cursor.fetchone() is not None


def _compression(method: str):
    def apply(apps, schema_editor):
        if _lz4(schema_editor):
            schema_editor.execute(
                "ALTER TABLE leaderboard_snapshot "
                + ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in COLUMNS)
            )

    return apply


class Migration(migrations.Migration):
    dependencies = [("leaderboard", "0003_style_differences")]

    operations = [migrations.RunPython(_compression("lz4"), _compression("pglz"), elidable=False)]
