"""/metrics: the arena's Prometheus metrics for the people who run it.

Served by a middleware near the top of the stack, before Django checks the Host header, so
Prometheus can scrape a container by its service name (`web:8000`) whatever ALLOWED_HOSTS
says; SECURE_SSL_REDIRECT exempts the path too. Only for an allowed client: a bearer token
(ARENA_METRICS_TOKEN) or an address in ARENA_METRICS_ALLOWED_IPS (the arena's client-address
rule, core.visitors.client_ip). With neither set the path does not exist (404).

Counters and histograms are recorded where things happen (core.metrics) by every process,
into files under ARENA_METRICS_DIR; a scrape merges all of them. A few values are read at
scrape time instead: each model's circuit breaker, the Celery queues' depth, and the age of
the newest rating snapshot.
"""

import hmac
import logging
from pathlib import Path

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from core.visitors import address_in, client_ip, ip_networks
from leaderboard.models import Snapshot
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)

PATH = "/metrics"


class _EveryProcess:
    """The samples every process of every host wrote under ARENA_METRICS_DIR, merged."""

    def collect(self):
        files = [str(path) for path in Path(settings.ARENA_METRICS_DIR).glob("*/*.db")]
        return MultiProcessCollector.merge(files, accumulate=True)


class _ReadNow:
    """Values that are the state of things at the scrape, read from the database and Redis."""

    def collect(self):
        circuit = GaugeMetricFamily(
            "arena_circuit_open",
            "1 while a model's circuit breaker keeps it out of new battles.",
            labels=["model"],
        )
        for slug, until in LLMModel.objects.values_list("slug", "circuit_open_until"):
            circuit.add_metric([slug], 1.0 if until and until > timezone.now() else 0.0)
        yield circuit

        snapshot = Snapshot.objects.order_by("-created_at").values_list("created_at", flat=True)
        newest = snapshot.first()
        if newest is not None:
            yield GaugeMetricFamily(
                "arena_rating_snapshot_age_seconds",
                "Seconds since the newest leaderboard snapshot was written.",
                value=(timezone.now() - newest).total_seconds(),
            )

        if settings.ARENA_TASK_MODE == "celery":
            queues = GaugeMetricFamily(
                "arena_celery_queue_length", "Tasks waiting in a Celery queue.", labels=["queue"]
            )
            try:
                client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
                )
                with client:
                    for queue in (settings.ARENA_QUEUE_LLM, settings.ARENA_QUEUE_DEFAULT):
                        queues.add_metric([queue], float(client.llen(queue)))
            except redis.RedisError as exc:
                log.warning("metrics: the Celery queues could not be read: %s", exc)
            else:
                yield queues


def _allowed(request: HttpRequest) -> bool:
    token = settings.ARENA_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    return address_in(client_ip(request), ip_networks(tuple(settings.ARENA_METRICS_ALLOWED_IPS)))


def metrics_response() -> HttpResponse:
    registry = CollectorRegistry()
    registry.register(_EveryProcess())
    registry.register(_ReadNow())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class metrics_middleware:  # noqa: N801 - named like a function middleware
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != PATH:
            return self.get_response(request)
        if not (settings.ARENA_METRICS_TOKEN or settings.ARENA_METRICS_ALLOWED_IPS):
            return HttpResponse("Not found.\n", status=404, content_type="text/plain")
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
        if not _allowed(request):
            response = HttpResponse(
                "The metrics need a bearer token or an allowed address.\n",
                status=401,
                content_type="text/plain",
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return metrics_response()
