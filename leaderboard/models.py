import datetime as dt

import numpy as np
from django.db import models
from django.db.models import Q

from battles.models import TALLY_COLUMNS, AbstractVote
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
    # The two models_order x models_order matrices as little-endian bytes, row-major (the
    # rows' model against the columns'): the win rates as float32, NaN where a pair had no
    # decisive battle, the battle counts as int32. As JSON, writing them was most of a live
    # refresh's writes (benchmarks/README.md); read them with `win_rates()`/`battle_counts()`.
    win_rate_matrix = models.BinaryField(default=bytes, blank=True)
    battle_count_matrix = models.BinaryField(default=bytes, blank=True)
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

    def win_rates(self) -> np.ndarray:
        """The win rate of each row model against each column model, ties excluded."""
        return self._matrix(self.win_rate_matrix, "<f4")

    def battle_counts(self) -> np.ndarray:
        """The battles between each pair of models."""
        return self._matrix(self.battle_count_matrix, "<i4")

    def _matrix(self, raw, dtype: str) -> np.ndarray:
        """Empty (0 x 0) for a snapshot without models or superseded (its matrices cleared)."""
        raw = bytes(raw or b"")
        n = len(self.models_order) if raw else 0
        return np.frombuffer(raw, dtype=dtype).reshape(n, n)

    @staticmethod
    def matrices_pack(win_rates: np.ndarray, battle_counts: np.ndarray) -> tuple[bytes, bytes]:
        """The two matrices as the fields (win_rate_matrix, battle_count_matrix) store them."""
        return (
            np.ascontiguousarray(win_rates, dtype="<f4").tobytes(),
            np.ascontiguousarray(battle_counts, dtype="<i4").tobytes(),
        )

    @property
    def fragility_computed_at(self) -> dt.datetime | None:
        """When the rank fragility shown with this snapshot was computed: a refresh of the
        live board carries the last full recompute's (leaderboard.recompute)."""
        value = self.params.get("fragility_at")
        return dt.datetime.fromisoformat(value) if value else None


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
        indexes = [
            # As battles.Vote's: the few votes a refresh reads among millions (aggregates.py).
            models.Index(
                fields=TALLY_COLUMNS,
                condition=Q(identity_leak=True) | Q(flagged_invalid=True),
                name="importedvote_left_out_tally",
            )
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


class PersonalShare(models.Model):
    """An owner's opt-in link to their personal leaderboard, read-only for whoever has it.

    The link carries `nonce` signed with the secret key; revoking deletes the row, so the old
    link finds nothing, and sharing again makes a new nonce (a new link).
    """

    owner_key = models.CharField(max_length=64, unique=True)
    nonce = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Shared personal leaderboard ({self.created_at:%Y-%m-%d})"


class RefreshMark(models.Model):
    """What the last refresh of the board saw of the vote tables (leaderboard.refresh): a
    refresh that finds the same marks has nothing new to count and does nothing.

    `seen` holds, per vote table, `floor` (every id up to it had committed when it was set),
    `max` and `recent` (the highest id and the number of rows above the floor), and the
    candidate for the next floor with the time it was seen."""

    name = models.CharField(max_length=40, primary_key=True)
    seen = models.JSONField(default=dict, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class TallyBlock(models.Model):
    """Folded votes of one vote table, as arrays (leaderboard.aggregates): one block per fold
    (the votes it added), merged into one now and then, so a fold writes only its own few
    rows and a refresh reads a few blocks, not a row per pair.

    `kind` "pairs": `keys` (model_a, model_b), `counts` the tally's counts per category and
    choice, `ids` the sum of the vote ids per choice, `sums` per choice the style sums (the
    features, then their products i <= j); "languages": `keys` (language, model_a, model_b),
    the language an index into `labels`, and `counts` a count per choice. Integers as int32
    where every value fits, else int64 (the width says which), `ids` int64, `sums` float64
    (sums of floats); little-endian, row-major, `rows` rows."""

    source = models.CharField(max_length=8)  # "vote" or "imported"
    kind = models.CharField(max_length=9)  # "pairs" or "languages"
    # "" for the folded votes; else the votes a refresh's filters leave out, under one reason
    # ("<reason> <id> <digest>": aggregates.StoredTallies.left_out).
    scope = models.CharField(max_length=100, blank=True, default="")
    rows = models.PositiveIntegerField()
    labels = models.JSONField(default=list, blank=True)
    keys = models.BinaryField()
    counts = models.BinaryField()
    ids = models.BinaryField(blank=True, default=b"")
    sums = models.BinaryField(blank=True, default=b"")

    class Meta:
        indexes = [models.Index(fields=["source", "kind"], name="tallyblock_source_kind")]

    def __str__(self) -> str:
        return f"{self.source} {self.kind} ({self.rows} rows)"


class TallyFold(models.Model):
    """How far the votes are folded into the TallyBlock rows: per vote table the highest
    id folded (every lower id had committed when it was folded), and the parameters the rows
    depend on (a change refolds every vote)."""

    name = models.CharField(max_length=40, primary_key=True)
    folded = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name
