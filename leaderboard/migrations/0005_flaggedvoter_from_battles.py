"""FlaggedVoter comes over from battles (battles 0006), with its rows.

The model is taken over in the state on the table battles 0002 created, then the table is
renamed to this app's name. Its content type moves too, so the permissions staff were given
on flagged voters and the admin's history of them stay attached.
"""

from django.db import migrations, models


def _content_type_move(from_app: str, to_app: str):
    def move(apps, schema_editor):
        content_types = apps.get_model("contenttypes", "ContentType").objects.using(
            schema_editor.connection.alias
        )
        if content_types.filter(app_label=to_app, model="flaggedvoter").exists():
            return
        content_types.filter(app_label=from_app, model="flaggedvoter").update(app_label=to_app)

    return move


class Migration(migrations.Migration):
    dependencies = [
        ("leaderboard", "0004_snapshot_matrix_lz4"),
        ("battles", "0006_flaggedvoter_to_leaderboard"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="FlaggedVoter",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("visitor_hash", models.CharField(max_length=32, unique=True)),
                        ("e_value", models.FloatField()),
                        ("votes_tested", models.PositiveIntegerField()),
                        ("votes_total", models.PositiveIntegerField()),
                        ("params", models.JSONField(blank=True, default=dict)),
                        ("flagged_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "cleared",
                            models.BooleanField(
                                default=False,
                                help_text="Reviewed by staff: count this voter's votes again.",
                            ),
                        ),
                    ],
                    options={"db_table": "battles_flaggedvoter"},
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="flaggedvoter", table=None),
        migrations.RunPython(
            _content_type_move("battles", "leaderboard"),
            _content_type_move("leaderboard", "battles"),
            elidable=False,
        ),
    ]
