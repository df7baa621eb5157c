"""/metrics for the people who run the arena (arena/metrics.py, core/metrics.py)."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from battles.models import Battle
from battles.tests.conftest import start_battle, wait_turn_finished

TOKEN = "metrics-test-token-0123456789"


def scrape(**headers) -> str:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def metrics_on(settings):
    settings.ARENA_METRICS_TOKEN = TOKEN


def test_after_a_battle_and_a_vote_the_counters_moved(
    metrics_on, transactional_db, celery_worker, visitor, two_models
):
    alpha, bravo = two_models
    before = scrape()
    battle = start_battle(visitor)
    wait_turn_finished(battle)
    response = visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"})
    assert response.status_code == 302
    after = scrape()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("arena_battles_started_total") == 1
    assert moved("arena_votes_total", choice="a") == 1
    for model in (alpha, bravo):
        assert moved("arena_replies_total", model=model.slug, outcome="done") == 1
        ttft = "arena_reply_time_to_first_token_seconds_count"
        assert moved(ttft, model=model.slug) == 1
        assert moved("arena_reply_tokens_per_second_count", model=model.slug) == 1
        assert value(after, "arena_circuit_open", model=model.slug) == 0
    assert moved("arena_task_latency_seconds_count") == 2
    assert Battle.objects.get(pk=battle.pk).status == Battle.Status.VOTED


def test_a_failed_reply_is_counted_with_its_error_code(
    metrics_on, transactional_db, celery_worker, visitor, make_model
):
    make_model("Alpha", knobs="ttft=0&tps=400&tokens=8&fault=401")
    make_model("Bravo", knobs="ttft=0&tps=400&tokens=8&fault=401")
    before = scrape()
    wait_turn_finished(start_battle(visitor))
    after = scrape()
    failed = {"outcome": "failed", "error_code": "auth"}
    assert (
        value(after, "arena_replies_total", **failed)
        - value(before, "arena_replies_total", **failed)
        == 2
    )


def test_without_the_token_metrics_are_refused(metrics_on, db):
    assert Client().get("/metrics").status_code == 401
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert b"arena_" not in wrong.content


def test_with_nothing_configured_there_is_no_metrics_page(db):
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


def test_an_allowed_address_needs_no_token_and_a_forged_header_does_not_make_one(settings, db):
    settings.ARENA_METRICS_ALLOWED_IPS = ["10.1.0.0/16"]
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 401
    forged = Client().get("/metrics", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert forged.status_code == 401


def test_prometheus_may_scrape_by_service_name_whatever_allowed_hosts_says(metrics_on, db):
    text = scrape(HTTP_HOST="web:8000")
    assert "arena_battles_started_total" in text
