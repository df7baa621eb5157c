from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from llm_providers.client import connection_test
from llm_providers.models import LLMModel
from llm_providers.services import models_set_status


@admin.register(LLMModel)
class LLMModelAdmin(admin.ModelAdmin):
    # Slug, organisation and license stay in the form, the filters and the search: the list
    # keeps what staff act on in view beside the filter panel at 1280 px.
    list_display = ("name", "endpoint", "status", "weight", "health")
    list_filter = ("status", "organization", "license")
    search_fields = ("name", "slug", "model", "organization", "base_url")
    list_editable = ("status", "weight")
    prepopulated_fields = {"slug": ("name",)}
    # A link typed without a scheme ("example.com") is taken as https, Django 6's default.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = (
        "key_state",
        "consecutive_failures",
        "circuit_open_until",
        "last_error",
        "last_error_at",
        "created_at",
        "updated_at",
    )
    actions = ("activate", "deactivate", "test_connection")
    fieldsets = (
        (None, {"fields": ("name", "slug", "organization", "license", "status", "weight")}),
        ("Endpoint", {"fields": ("base_url", "model", "api_key_env", "key_state")}),
        (
            "Generation",
            {
                "fields": (
                    "temperature",
                    "top_p",
                    "max_tokens",
                    "system_prompt",
                    "stop",
                    "extra_body",
                )
            },
        ),
        ("About", {"fields": ("url", "notes")}),
        (
            "Health",
            {
                "fields": (
                    "consecutive_failures",
                    "circuit_open_until",
                    "last_error",
                    "last_error_at",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )

    @admin.display(description="API key")
    def key_state(self, obj: LLMModel) -> str:
        # Only whether the variable is set: the key itself is never shown.
        if not obj.api_key_env:
            return "not needed"
        return "set" if obj.api_key else f"missing: ${obj.api_key_env} is not set"

    @admin.display(description="endpoint", ordering="model")
    def endpoint(self, obj: LLMModel) -> str:
        return format_html('{}<br><span class="quiet">{}</span>', obj.model, obj.base_url)

    @admin.display(description="health")
    def health(self, obj: LLMModel) -> str:
        if obj.circuit_open:
            return "circuit open"
        if obj.api_key_missing:
            return "API key missing"
        return f"{obj.consecutive_failures} recent failures" if obj.consecutive_failures else "ok"

    @admin.action(description="Activate selected models")
    def activate(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = models_set_status(queryset=queryset, status=LLMModel.Status.ACTIVE)
        self.message_user(request, f"{count} model(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected models")
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = models_set_status(queryset=queryset, status=LLMModel.Status.INACTIVE)
        self.message_user(request, f"{count} model(s) deactivated.", messages.SUCCESS)

    @admin.action(description="Test connection (a tiny real call)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset[:20]:
            ok, latency_ms, message = connection_test(obj.endpoint())
            if ok:
                self.message_user(request, f"{obj.name}: OK in {latency_ms} ms.", messages.SUCCESS)
            else:
                self.message_user(request, f"{obj.name}: {message}", messages.ERROR)
