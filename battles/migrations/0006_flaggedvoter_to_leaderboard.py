"""FlaggedVoter moves to the leaderboard app, the only one that writes it.

State only: the table and its rows stay where they are, and leaderboard 0005 takes the model
over (renaming its table to leaderboard_flaggedvoter and moving its content type, so staff
permissions and admin history follow it).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("battles", "0005_reply_verbose_name_plural")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="FlaggedVoter")],
            database_operations=[],
        ),
    ]
