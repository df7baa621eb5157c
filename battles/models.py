import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, FloatField, Q, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils.safestring import mark_safe

from core.markdown import render_markdown
from llm_providers.models import LLMModel


def style_difference(feature: str):
    """(a - b) / (a + b + 1) of one style feature stored in `style`: in [-1, 1], zero when
    equal, defined when both are zero. Computed by the database when the row is written."""
    a = Coalesce(Cast(KT(f"style__a__{feature}"), FloatField()), Value(0.0))
    b = Coalesce(Cast(KT(f"style__b__{feature}"), FloatField()), Value(0.0))
    return (a - b) / (a + b + Value(1.0))


def style_difference_field(feature: str) -> models.GeneratedField:
    """A style difference as a stored generated column: the ratings recompute sums them over
    millions of votes, and reading four floats costs far less than parsing the JSON."""
    return models.GeneratedField(
        expression=style_difference(feature), output_field=FloatField(), db_persist=True
    )


class Mode(models.TextChoices):
    """What kind of session a battle belongs to. Only blind battles move the public ratings."""

    BLIND = "blind", "Blind battle"
    # Two models the visitor chose by name: a vote is kept apart (NamedVote), never rated.
    NAMED = "named", "Side by side"
    # One chosen model, no vote.
    CHAT = "chat", "Chat"


class Conversation(models.Model):
    """A sidebar session: one or more battles under one title, owned by one visitor."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner_key = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    title = models.CharField(max_length=120)
    # The mode of its battles (a session holds one kind), for the sidebar's mark.
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.BLIND)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # Deleting a session hides it from its owner; its votes stay for the leaderboard.
    hidden_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner_key", "-updated_at"], name="conv_owner_recent")]
        constraints = [
            models.CheckConstraint(
                condition=Q(mode__in=["blind", "named", "chat"]), name="conversation_mode_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Battle(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        VOTED = "voted", "Voted"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="battles")
    owner_key = models.CharField(max_length=64, db_index=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.BLIND)
    model_a = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="+")
    # Empty only in a chat (one model).
    model_b = models.ForeignKey(
        LLMModel, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    # The probability with which this ordered pair was drawn (for inverse-propensity analysis).
    pair_probability = models.FloatField()
    sampling = models.JSONField(default=dict, blank=True)
    visitor_hash = models.CharField(max_length=32)
    ip_hash = models.CharField(max_length=32, blank=True)
    user_agent_family = models.CharField(max_length=40, blank=True)
    turn_count = models.PositiveSmallIntegerField(default=0)
    identity_leak = models.BooleanField(default=False)
    had_failed_side = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    voted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Two distinct models, or a chat with one.
            models.CheckConstraint(
                condition=(Q(mode="chat") & Q(model_b__isnull=True))
                | (~Q(mode="chat") & Q(model_b__isnull=False) & ~Q(model_a=F("model_b"))),
                name="battle_models_fit_mode",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "voted"]), name="battle_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(mode__in=["blind", "named", "chat"]), name="battle_mode_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Battle {self.uuid}"


class Turn(models.Model):
    battle = models.ForeignKey(Battle, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveSmallIntegerField()
    prompt = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.UniqueConstraint(fields=["battle", "index"], name="turn_unique_index"),
        ]

    def __str__(self) -> str:
        return f"Turn {self.index} of battle {self.battle_id}"

    def stream_key(self) -> str:
        return f"turn:{self.pk}"


class Reply(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    FINISHED = (Status.DONE, Status.STOPPED)

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="replies")
    side = models.CharField(max_length=1, choices=[("a", "A"), ("b", "B")])
    model = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="replies")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt = models.PositiveSmallIntegerField(default=1)
    text = models.TextField(blank=True)
    # `text` as the page shows it (markdown, sanitised: core.markdown), rendered once when the
    # reply ends; empty while it streams. Every later page and fragment that shows the reply
    # reads it instead of rendering the markdown again (benchmarks/load/README.md).
    text_html = models.TextField(blank=True, editable=False)
    finish_reason = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    retries = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    error_detail = models.TextField(blank=True)
    # This reply named its own model, family or maker (the battle's flag says "some side did").
    identity_leak = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["side"]
        verbose_name_plural = "replies"
        constraints = [
            models.UniqueConstraint(fields=["turn", "side"], name="reply_unique_side"),
            models.CheckConstraint(condition=Q(side__in=["a", "b"]), name="reply_side_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "streaming", "done", "stopped", "failed"]),
                name="reply_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="reply_status_heartbeat")]

    def __str__(self) -> str:
        return f"Reply {self.side.upper()} of turn {self.turn_id}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def html(self) -> str:
        """The text as sanitised HTML: as rendered at the reply's end, or now (a reply that
        ended without it: failed by the reaper, or written before the column existed)."""
        return mark_safe(self.text_html or render_markdown(self.text))  # noqa: S308 - nh3

    @property
    def tokens_per_second(self) -> float | None:
        if not self.completion_tokens or not self.latency_ms or self.ttft_ms is None:
            return None
        seconds = (self.latency_ms - self.ttft_ms) / 1000
        return round(self.completion_tokens / seconds, 1) if seconds > 0 else None

    @property
    def stats(self) -> list[str]:
        """The facts a finished pane shows, each one present (joined with a separator)."""
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"first token {self.ttft_ms} ms")
        if self.tokens_per_second:
            parts.append(f"{self.tokens_per_second} tok/s")
        if self.status == self.Status.STOPPED:
            parts.append("stopped")
        return parts


# Every column the ratings' tally reads of a vote (leaderboard.tally), id first: the key of the
# indexes over the few votes a refresh reads among millions, so that it reads them from the
# index alone (no visit to the table's pages: 165 -> 17 ms for 20,000 such votes among
# 10,000,000 on PostgreSQL; benchmarks/README.md).
TALLY_COLUMNS = [
    "id",
    "model_a",
    "model_b",
    "choice",
    "turns",
    "prompt_chars",
    "has_code",
    "language",
    "style_length",
    "style_headers",
    "style_lists",
    "style_bold",
    "identity_leak",
    "flagged_invalid",
    "created_at",
]


class AbstractVote(models.Model):
    """The columns the ratings read, shared by this app's Vote and leaderboard.ImportedVote.

    Every rating input goes through these: the recompute counts both tables with one query
    shape, and a category or a filter is written once for both.
    """

    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "bothbad", "Both are bad"

    choice = models.CharField(max_length=8, choices=Choice.choices)
    model_a = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="+")
    model_b = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="+")
    # Categories, computed once at write time.
    turns = models.PositiveSmallIntegerField(default=1)
    prompt_chars = models.PositiveIntegerField(default=0)
    has_code = models.BooleanField(default=False)
    language = models.CharField(max_length=16, blank=True)
    # Style features (A minus B is derived at aggregation): reply length and markdown counts.
    style = models.JSONField(default=dict, blank=True)
    # Style features of A minus B, normalised (style_difference), for the style control.
    style_length = style_difference_field("length")
    style_headers = style_difference_field("headers")
    style_lists = style_difference_field("lists")
    style_bold = style_difference_field("bold")
    # A vote is counted unless one of these says otherwise; each is counted in the snapshot.
    identity_leak = models.BooleanField(default=False)
    flagged_invalid = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(choice__in=["a", "b", "tie", "bothbad"]),
                name="%(class)s_choice_valid",
            ),
        ]


class Vote(AbstractVote):
    """A visitor's vote on a battle; its models are copied from the battle at vote time so the
    rating aggregation reads one table."""

    battle = models.OneToOneField(Battle, on_delete=models.CASCADE, related_name="vote")
    visitor_hash = models.CharField(max_length=32, db_index=True)
    ip_hash = models.CharField(max_length=32, blank=True, db_index=True)
    # sha256 of the normalised visitor prompts of every turn, for down-sampling prompts that are
    # asked over and over (leaderboard.exclusions); blank for votes older than the column.
    # Indexed with the time and id (Meta): the down-sampling's order within a prompt.
    prompt_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta(AbstractVote.Meta):
        indexes = [
            # The few votes left out for a row-level reason: a leaderboard refresh reads them
            # among millions (leaderboard.aggregates), from this index alone.
            models.Index(
                fields=TALLY_COLUMNS,
                condition=Q(identity_leak=True) | Q(flagged_invalid=True),
                name="vote_left_out_tally",
            ),
            # A prompt's votes in the down-sampling's order (time, then id), read from the
            # index alone: the hot prompts' dropped votes are worked out at every refresh
            # (144 -> 8 ms for 10,000 of them among 10,000,000 votes). Also serves lookups and
            # counts by prompt.
            models.Index(fields=["prompt_hash", "created_at", "id"], name="vote_prompt_order"),
        ]

    def __str__(self) -> str:
        return f"Vote {self.choice} on battle {self.battle_id}"


class NamedVote(AbstractVote):
    """A vote on a side-by-side battle, where the visitor chose both models by name.

    Kept in its own table so the ratings cannot count it (FastChat's `anony=false`): the
    recompute reads only `Vote` and the imported votes, whatever filter a later change forgets.
    It has the same columns, so the battle export writes it (marked `anony: false`).
    """

    battle = models.OneToOneField(Battle, on_delete=models.CASCADE, related_name="named_vote")
    visitor_hash = models.CharField(max_length=32, db_index=True)
    ip_hash = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"Named vote {self.choice} on battle {self.battle_id}"


class ModerationEvent(models.Model):
    """A prompt the moderation endpoint flagged, or a check that could not be made."""

    class Outcome(models.TextChoices):
        REFUSED = "refused", "Refused (flagged)"
        ERROR_ALLOWED = "error_allowed", "Endpoint failed, prompt allowed"
        ERROR_REFUSED = "error_refused", "Endpoint failed, prompt refused"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    action = models.CharField(max_length=16)  # start, continue, follow_up
    visitor_hash = models.CharField(max_length=32, db_index=True)
    ip_hash = models.CharField(max_length=32, blank=True)
    categories = models.JSONField(default=list, blank=True)
    # Enough for staff to judge the decision, not a copy of the whole prompt.
    prompt_excerpt = models.CharField(max_length=300, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(outcome__in=["refused", "error_allowed", "error_refused"]),
                name="moderationevent_outcome_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} ({self.action})"


class SamplingStanding(models.Model):
    """A model's last overall rating and standard error, for the active sampling policy.

    Written by the leaderboard's recompute (the layer above) through
    `services.sampling_standings_replace`, so pair sampling reads its own table.
    """

    model = models.OneToOneField(
        LLMModel, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    rating = models.FloatField()
    se = models.FloatField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.model_id}: {self.rating:.0f} ± {self.se:.0f}"


class SamplingDesign(models.Model):
    """The active sampling policy's design (`sampling.Design`): each pair's share of votes
    before the catalog weights, over the models that could be drawn at the last recompute.
    One row, written with the standings (`services.sampling_standings_replace`), deleted
    under the weighted policy."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    model_ids = models.JSONField(default=list)
    # The upper triangle of the symmetric matrix, row by row, as float64 bytes.
    shares = models.BinaryField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sampling design over {len(self.model_ids)} models"
