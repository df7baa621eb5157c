"""ImportedVote takes its columns from battles.AbstractVote, whose `choice` names its values
("A is better", ...). State only: choices are not a database matter, so no SQL runs."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("leaderboard", "0005_flaggedvoter_from_battles")]

    operations = [
        migrations.AlterField(
            model_name="importedvote",
            name="choice",
            field=models.CharField(
                choices=[
                    ("a", "A is better"),
                    ("b", "B is better"),
                    ("tie", "Tie"),
                    ("bothbad", "Both are bad"),
                ],
                max_length=8,
            ),
        ),
    ]
