"""Provider faults end a side in a clear state; the circuit breaker rests a failing model.

Every fault comes from the project's test LLM server over real HTTP (knobs in the model name),
so the real client, its retry rules and the generation task run in both modes.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django.utils.html import escape

from battles.models import Battle, Reply
from battles.tests.conftest import start_battle, wait_turn_finished
from battles.tests.factories import make_battle
from conftest import wait_for
from core.dispatch import enqueue_now
from llm_providers.models import LLMModel
from llm_providers.testing.server import generate_text, requests_log

TOKENS = 20
# Every attempt the client may make: the first try and the retries of a transient error.
ATTEMPTS = settings.LLM_MAX_RETRIES + 1


@dataclass(frozen=True)
class Fault:
    knobs: str
    status: str
    code: str
    message: str
    requests: int  # chat requests the model's server receives for the side
    partial: bool = False  # text arrived before the fault, and is kept


FAULTS = {
    "429-every-time-is-retried-then-fails": Fault(
        "fault=429&retry_after=0.1", "failed", "rate_limited", "too many requests", ATTEMPTS
    ),
    "429-once-is-retried-and-answers": Fault(
        "fault=429&retry_after=0.1&fail_times=1", "done", "", "", 2
    ),
    "500-every-time-is-retried-then-fails": Fault(
        "fault=500", "failed", "server_error", "internal error", ATTEMPTS
    ),
    "500-twice-is-retried-and-answers": Fault("fault=500&fail_times=2", "done", "", "", 3),
    "no-first-token-in-time-is-retried-and-answers": Fault(
        "fault=hang&fail_times=1", "done", "", "", 2
    ),
    "no-first-token-ever-is-retried-then-fails": Fault(
        "fault=hang", "failed", "timeout", "took too long to start answering", ATTEMPTS
    ),
    "hang-mid-stream-keeps-the-text-and-is-never-retried": Fault(
        "fault=hang_mid", "failed", "hang", "stopped sending text", 1, partial=True
    ),
    "broken-stream-keeps-the-text-and-is-never-retried": Fault(
        "fault=broken_stream", "failed", "broken_stream", "broke off", 1, partial=True
    ),
    "malformed-chunk-keeps-the-text-and-is-never-retried": Fault(
        "fault=malformed", "failed", "malformed", "could not be read", 1, partial=True
    ),
    "empty-answer-fails-without-retry": Fault("fault=empty", "failed", "empty", "empty answer", 1),
    "rejected-api-key-fails-without-retry": Fault(
        "fault=401", "failed", "auth", "rejected the API key", 1
    ),
}


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    # These tests start battles back to back on purpose; the rate limits have their own tests.
    settings.ARENA_RATE_START = None


def chat_requests(llm_server: str, model: LLMModel) -> list[dict]:
    return [entry for entry in requests_log(llm_server) if entry["model"] == model.model]


def run_sides(battle: Battle) -> dict[str, Reply]:
    for reply in Reply.objects.filter(turn__battle=battle):
        enqueue_now("battles.tasks.reply_generate_task", reply.pk)
    return {r.model_id: r for r in wait_turn_finished(battle, timeout=45)}


@pytest.mark.parametrize("case", FAULTS.values(), ids=FAULTS.keys())
def test_a_provider_fault_ends_the_side_in_a_clear_state_and_retries_only_where_safe(
    live, visitor, make_model, llm_server, case
):
    tag = uuid.uuid4().hex[:8]
    faulty = make_model(f"Faulty-{tag}", knobs=f"ttft=0&tps=400&tokens={TOKENS}&{case.knobs}")
    healthy = make_model(f"Healthy-{tag}", knobs=f"ttft=0&tps=400&tokens={TOKENS}")
    prompt = f"Explain the weather ({tag})"
    battle = make_battle(
        owner_key=visitor.key, model_a=faulty, model_b=healthy, prompt=prompt, finished=False
    )

    replies = run_sides(battle)

    side = replies[faulty.pk]
    assert replies[healthy.pk].status == "done"
    assert (side.status, side.error_code) == (case.status, case.code)
    assert case.message in side.error_message
    assert len(chat_requests(llm_server, faulty)) == case.requests
    full_text = generate_text(faulty.model.split("?")[0], prompt, TOKENS)
    if case.status == "done":
        assert side.text == full_text and side.retries == case.requests - 1
    elif case.partial:
        # Text was shown to the visitor: a retry would silently restart the answer.
        assert side.text and full_text.startswith(side.text) and side.text != full_text
    else:
        assert side.text == ""
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    if case.status == "failed":
        assert escape(side.error_message) in page
        assert side.error_detail and escape(side.error_detail) not in page
        assert "Traceback" not in page
        battle.refresh_from_db()
        assert battle.had_failed_side


def fail_in_a_row(model: LLMModel, partner: LLMModel, owner_key: str, prompt: str) -> None:
    """Run as many battles as it takes to open the model's circuit, all failing on its side."""
    battles = [
        make_battle(
            owner_key=owner_key, model_a=model, model_b=partner, prompt=prompt, finished=False
        )
        for _ in range(settings.ARENA_CIRCUIT_FAILURES)
    ]
    for battle in battles:
        run_sides(battle)
    assert all(
        r.status == "failed" for r in Reply.objects.filter(turn__battle__in=battles, model=model)
    )


def test_a_model_failing_n_times_in_a_row_rests_then_a_successful_probe_brings_it_back(
    live, visitor, make_model
):
    alpha = make_model("Alpha", knobs="ttft=0&tps=400&tokens=10")
    bravo = make_model("Bravo", knobs="ttft=0&tps=400&tokens=10")
    # The provider fails every attempt of the first N replies, then recovers.
    failing = settings.ARENA_CIRCUIT_FAILURES * ATTEMPTS
    flaky = make_model("Flaky", knobs=f"ttft=0&tps=400&tokens=10&fault=500&fail_times={failing}")
    prompt = f"What is a circuit breaker? {uuid.uuid4().hex[:6]}"

    fail_in_a_row(flaky, alpha, visitor.key, prompt)

    flaky.refresh_from_db()
    assert flaky.consecutive_failures == settings.ARENA_CIRCUIT_FAILURES
    assert flaky.circuit_open, "the circuit did not open"
    started = []
    cool_down_ends = flaky.circuit_open_until - timedelta(seconds=0.5)
    while timezone.now() < cool_down_ends and len(started) < 10:
        started.append(start_battle(visitor, prompt))
    pairs = [{b.model_a_id, b.model_b_id} for b in started]
    assert pairs, "no battle could be started during the cool-down"
    assert all(pair == {alpha.pk, bravo.pk} for pair in pairs)

    wait_for(lambda: not LLMModel.objects.get(pk=flaky.pk).circuit_open, timeout=10)
    for _ in range(20):  # the flaky model is in 2 of the 3 possible pairs
        battle = start_battle(visitor, prompt)
        if flaky.pk in (battle.model_a_id, battle.model_b_id):
            break
    else:
        pytest.fail("the rested model was never drawn again after its cool-down")
    probe = Reply.objects.get(turn__battle=battle, model=flaky)
    wait_for(lambda: Reply.objects.get(pk=probe.pk).status == "done", timeout=20)
    flaky.refresh_from_db()
    assert (flaky.consecutive_failures, flaky.circuit_open_until) == (0, None)


def test_with_one_healthy_model_left_a_new_battle_says_so_until_the_other_recovers(
    live, visitor, make_model
):
    steady = make_model("Steady", knobs="ttft=0&tps=400&tokens=10")
    failing = settings.ARENA_CIRCUIT_FAILURES * ATTEMPTS
    shaky = make_model("Shaky", knobs=f"ttft=0&tps=400&tokens=10&fault=500&fail_times={failing}")
    prompt = f"Say something {uuid.uuid4().hex[:6]}"
    fail_in_a_row(shaky, steady, visitor.key, prompt)
    battles = Battle.objects.count()

    response = visitor.post("/battle/", {"prompt": prompt})

    assert response.status_code == 503
    assert "at least two available models" in response.content.decode()
    assert Battle.objects.count() == battles
    shaky.refresh_from_db()
    remaining = (shaky.circuit_open_until - timezone.now()).total_seconds()
    time.sleep(max(0.0, remaining) + 0.1)
    battle = start_battle(visitor, prompt)
    assert {battle.model_a_id, battle.model_b_id} == {steady.pk, shaky.pk}
    assert [r.status for r in wait_turn_finished(battle)] == ["done", "done"]
    shaky.refresh_from_db()
    assert not shaky.circuit_open and shaky.consecutive_failures == 0
