from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from arena.hub import get_hub
from battles.forms import PromptForm
from llm_providers import local
from llm_providers.models import LLMModel


def home_context(request: HttpRequest) -> dict:
    active = list(
        LLMModel.objects.active().only("name", "organization", "base_url", "model").order_by("name")
    )
    return {
        "form": PromptForm(),
        "active_models": active,
        "bundled_models_only": bool(active)
        and all(local.is_served_here(base_url=m.base_url, model=m.model) for m in active),
    }


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/home.html", home_context(request))


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
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
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
