import json
import os
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from llm_providers.client import Endpoint

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_base_url(value: str) -> None:
    """http(s) URL with a host; unlike URLValidator, bare service names (http://ollama:11434)
    are fine, since that is how containers reach each other."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError("Enter a valid http(s) URL.") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value)
    ):
        raise ValidationError("Enter a valid http(s) URL, e.g. http://localhost:11434/v1.")


def validate_env_name(value: str) -> None:
    if value and not ENV_NAME_RE.match(value):
        raise ValidationError(
            "Give the NAME of an environment variable (letters, digits, underscore), "
            "never the key itself."
        )


# The arena sets these itself from the model's own fields: extra fields may not override them.
REQUEST_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "stop"}
)
MAX_STOP_STRINGS = 4  # the OpenAI API's limit, which compatible servers follow


def validate_stop(value) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ValidationError('Give a list of non-empty strings, e.g. ["\\nQuestion:"].')
    if len(value) > MAX_STOP_STRINGS:
        raise ValidationError(f"At most {MAX_STOP_STRINGS} stop strings.")


def validate_extra_body(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Give an object of request fields, e.g. {"repeat_penalty": 1.2}.')
    taken = sorted(REQUEST_FIELDS.intersection(value))
    if taken:
        raise ValidationError(
            f"{', '.join(taken)}: set by the arena from this model's own fields; use those."
        )
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ValidationError("Only JSON values (text, numbers, lists, objects).") from None


class LLMModelQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status=LLMModel.Status.ACTIVE)

    def sampleable(self, now=None):
        """Active models whose circuit breaker is closed (or whose cool-down has passed)."""
        now = now or timezone.now()
        return self.active().filter(
            Q(circuit_open_until__isnull=True) | Q(circuit_open_until__lte=now)
        )


class LLMModel(models.Model):
    """One entry of the model catalog: an OpenAI-compatible endpoint plus its settings."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"
        RETIRED = "retired", "Retired"

    slug = models.SlugField(
        "id", max_length=100, unique=True, help_text="Stable identifier (the `id` in models.yaml)."
    )
    name = models.CharField("public name", max_length=200, unique=True)
    organization = models.CharField(max_length=200, blank=True)
    license = models.CharField(max_length=100, blank=True)
    base_url = models.CharField(
        "base URL",
        max_length=500,
        validators=[validate_base_url],
        help_text="OpenAI-compatible API root, e.g. http://localhost:11434/v1",
    )
    model = models.CharField("upstream model name", max_length=300)
    api_key_env = models.CharField(
        "API key env var",
        max_length=100,
        blank=True,
        validators=[validate_env_name],
        help_text=(
            "Name of the environment variable that holds the API key. Empty for local servers."
        ),
    )
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    top_p = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    system_prompt = models.TextField(blank=True)
    stop = models.JSONField(
        "stop strings",
        default=list,
        blank=True,
        validators=[validate_stop],
        help_text='Up to 4 strings that end an answer, as a JSON list, e.g. ["\\nQuestion:"].',
    )
    extra_body = models.JSONField(
        "extra request fields",
        default=dict,
        blank=True,
        validators=[validate_extra_body],
        help_text=(
            "Provider-specific fields sent as they are with every request, as a JSON object, "
            'e.g. {"repeat_penalty": 1.2} for llama.cpp\'s server.'
        ),
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INACTIVE)
    weight = models.FloatField(
        "sampling weight",
        default=1.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1000.0)],
        help_text="Relative chance of being picked for a battle.",
    )
    url = models.URLField("link", blank=True, help_text="Model card or homepage.")
    notes = models.TextField(blank=True)

    # Circuit breaker: consecutive provider failures take the model out of sampling for a while.
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    circuit_open_until = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LLMModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM model"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "inactive", "retired"]),
                name="llmmodel_status_valid",
            ),
            models.CheckConstraint(condition=Q(weight__gte=0), name="llmmodel_weight_non_negative"),
        ]

    def __str__(self) -> str:
        return self.name

    # Changes to these are public (the transparency report): when a model's chance of being
    # sampled, or whether it is sampled at all, changed.
    TRACKED = ("status", "weight")

    def save(self, *args, **kwargs) -> None:
        """Save, and record a change of status or weight (when, not who) as a ModelChange."""
        saved = kwargs.get("update_fields")
        tracked = [f for f in self.TRACKED if saved is None or f in saved]
        with transaction.atomic():
            before = None
            if self.pk is not None and tracked:
                before = LLMModel.objects.filter(pk=self.pk).values(*tracked).first()
            super().save(*args, **kwargs)
            if before is not None:
                ModelChange.objects.bulk_create(
                    ModelChange(model=self, field=field, old=str(before[field]), new=str(value))
                    for field in tracked
                    if (value := getattr(self, field)) != before[field]
                )

    def clean(self) -> None:
        # An emptied admin field arrives as None: store the empty list or object instead.
        self.stop = self.stop or []
        self.extra_body = self.extra_body or {}

    @property
    def api_key(self) -> str | None:
        """The key is read from the environment at call time and never stored."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def api_key_missing(self) -> bool:
        return bool(self.api_key_env) and not self.api_key

    @property
    def circuit_open(self) -> bool:
        return self.circuit_open_until is not None and self.circuit_open_until > timezone.now()

    def endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=tuple(self.stop or ()),
            extra_body=dict(self.extra_body or {}),
        )


class ModelChange(models.Model):
    """A change of a model's status or sampling weight, kept for the transparency report.

    Only when it happened, never who made it: the report is public.
    """

    model = models.ForeignKey(LLMModel, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    field = models.CharField(max_length=20)
    old = models.CharField(max_length=40)
    new = models.CharField(max_length=40)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.model_id} {self.field}: {self.old} -> {self.new}"
