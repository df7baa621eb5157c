from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from battles.forms import PromptForm
from battles.selectors import models_on_offer
from core.hub import get_hub
from llm_providers.models import LLMModel


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/home.html", {"form": PromptForm(), **models_on_offer()})


def _active_models() -> int | None:
    """The count of active models, or None when the database cannot answer (down, or not
    migrated yet)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return LLMModel.objects.active().count()
    except Exception:
        return None


def _broker_ok() -> bool:
    if settings.ARENA_TASK_MODE != "celery":
        return True
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: database, broker and hub; no versions, no secrets."""
    active = _active_models()
    database = active is not None
    hub = get_hub().ping()
    broker = _broker_ok()
    healthy = database and hub and broker
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": "ok" if database else "unavailable",
        "broker": ("ok" if broker else "unavailable")
        if settings.ARENA_TASK_MODE == "celery"
        else "in-process",
        "hub": ("ok" if hub else "unavailable") if settings.ARENA_HUB == "redis" else "in-process",
        "active_models": active,
    }
    return JsonResponse(body, status=200 if healthy else 503)
