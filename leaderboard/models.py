from django.db import models

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
    duration_ms = models.PositiveIntegerField(default=0)
    models_order = models.JSONField(default=list)  # model ids in matrix order
    win_rate_matrix = models.JSONField(default=list)
    battle_count_matrix = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["category", "-created_at"], name="snapshot_category_recent")]


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

    class Meta:
        ordering = ["rank_ub", "-rating"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "model"], name="snapshotrow_unique_model"),
        ]
