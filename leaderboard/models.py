from django.db import models
from django.db.models import Q

from battles.models import AbstractVote
from llm_providers.models import LLMModel


class Snapshot(models.Model):
    """One recompute of the ratings for one category, written atomically with its rows."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    category = models.CharField(max_length=40, default="overall", db_index=True)
    method = models.CharField(max_length=40)
    params = models.JSONField(default=dict)
    data_cutoff = models.DateTimeField(null=True, blank=True)
    vote_count = models.PositiveIntegerField(default=0)
    excluded = models.JSONField(default=dict)
    # {model id: {reason: votes}}: the votes each model took part in that were left out.
    excluded_by_model = models.JSONField(default=dict)
    duration_ms = models.PositiveIntegerField(default=0)
    models_order = models.JSONField(default=list)  # model ids in matrix order
    win_rate_matrix = models.JSONField(default=list)
    battle_count_matrix = models.JSONField(default=list)
    # Hash of the count table and the parameters: a recompute over unchanged data writes nothing.
    fingerprint = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["category", "-created_at"], name="snapshot_category_recent")
        ]

    def __str__(self) -> str:
        return f"{self.category} @ {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def has_style(self) -> bool:
        return bool(self.params.get("style_control"))


class SnapshotRow(models.Model):
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="rows")
    model = models.ForeignKey(LLMModel, on_delete=models.CASCADE, related_name="snapshot_rows")
    rating = models.FloatField()
    lower = models.FloatField(null=True)
    upper = models.FloatField(null=True)
    rank_ub = models.PositiveIntegerField()
    votes = models.PositiveIntegerField()
    wins = models.FloatField(default=0)
    losses = models.FloatField(default=0)
    ties = models.FloatField(default=0)
    win_rate = models.FloatField(null=True)
    online_elo = models.FloatField(null=True)
    style_rating = models.FloatField(null=True)
    style_rank_ub = models.PositiveIntegerField(null=True)
    # Rank fragility (engine/fragility.py): the fewest counted votes whose removal puts this
    # model below `swap_with`, the next model down the board by score. Null: the last model,
    # or no removal of votes swaps them.
    swap_with = models.ForeignKey(
        LLMModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    swap_votes = models.PositiveIntegerField(null=True)

    class Meta:
        ordering = ["rank_ub", "-rating"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "model"], name="snapshotrow_unique_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} in snapshot {self.snapshot_id}"


class RecomputeLock(models.Model):
    """A lease claimed with a conditional UPDATE, so two recomputes never run at once.

    The same claim works on SQLite (where SELECT ... FOR UPDATE is a no-op) and PostgreSQL; the
    lease expiry frees the lock if the holder died without releasing it.
    """

    name = models.CharField(max_length=40, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    held_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class ImportedVote(AbstractVote):
    """A vote loaded from a FastChat `clean_battle` dump.

    Kept apart from battles.Vote so imports need no fake conversations or battles; the rating
    aggregation reads both tables through the columns of battles.AbstractVote.
    """

    # The dump's question_id, or a hash of the line without one: re-importing a file is a no-op.
    external_id = models.CharField(max_length=64, unique=True)
    judge = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)  # the dump's tstamp
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta(AbstractVote.Meta):
        constraints = [
            *AbstractVote.Meta.constraints,
            models.CheckConstraint(
                condition=~Q(model_a=models.F("model_b")), name="importedvote_distinct_models"
            ),
        ]

    def __str__(self) -> str:
        return self.external_id


class FlaggedVoter(models.Model):
    """A voter whose votes disagree with the consensus beyond chance (sequential e-value test).

    Written by the ratings recompute (leaderboard.outliers.voters_flag); every vote by this
    visitor hash is left out of the ratings while the row exists and is not cleared. Staff may
    clear a row after review: the test then leaves it alone and the votes count again.
    """

    visitor_hash = models.CharField(max_length=32, unique=True)
    e_value = models.FloatField()
    votes_tested = models.PositiveIntegerField()
    votes_total = models.PositiveIntegerField()
    params = models.JSONField(default=dict, blank=True)
    flagged_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    cleared = models.BooleanField(
        default=False, help_text="Reviewed by staff: count this voter's votes again."
    )

    def __str__(self) -> str:
        return self.visitor_hash


class HotPrompt(models.Model):
    """A prompt the last recompute down-sampled: asked more often than the cut-off, it keeps
    only its first `keep` votes (exclusions.py). Replaced by every recompute, so pages apply
    the same filter without counting every vote per prompt again."""

    prompt_hash = models.CharField(max_length=64, unique=True)
    keep = models.PositiveIntegerField()
    cutoff = models.DateTimeField()  # the recompute's

    def __str__(self) -> str:
        return self.prompt_hash
