"""The battle from start to reveal, run in both modes (thread pool, or Celery worker).

Only what needs the models to answer is here; the rules themselves (who may vote, follow up,
retry, regenerate, see the names) are checked without a worker in test_rules.py and
test_views.py."""

import json

from django.utils.html import escape

from battles.models import Battle, Conversation, Reply, Vote
from battles.tests.conftest import start_battle, wait_turn_finished
from conftest import wait_for
from llm_providers.testing.server import generate_text


def test_it_starts_a_battle_between_two_distinct_models_and_both_sides_answer(
    live, visitor, two_models
):
    battle = start_battle(visitor, "Explain rainbows")
    assert battle.model_a_id != battle.model_b_id
    assert {battle.model_a_id, battle.model_b_id} == {m.pk for m in two_models}
    assert 0 < battle.pair_probability <= 0.5
    replies = wait_turn_finished(battle)
    assert [r.status for r in replies] == ["done", "done"]
    for reply in replies:
        # The text is exactly what the model streamed (deterministic test server).
        assert reply.text == generate_text(reply.model.model.split("?")[0], "Explain rainbows", 30)
        assert reply.completion_tokens == 30
        assert reply.ttft_ms is not None and reply.latency_ms >= reply.ttft_ms
    conversation = battle.conversation
    assert conversation.title == "Explain rainbows"
    assert conversation.owner_key == visitor.key


def test_each_model_sees_only_its_own_earlier_replies_in_a_follow_up(live, visitor, make_model):
    make_model("Echo1", knobs="ttft=0&tps=1000&echo=1", system_prompt="You are Echo one.")
    make_model("Echo2", knobs="ttft=0&tps=1000&echo=1")
    battle = start_battle(visitor, "first question")
    first = {r.side: r.text for r in wait_turn_finished(battle)}
    response = visitor.post(f"/b/{battle.uuid}/follow-up/", {"prompt": "second question"})
    assert response.status_code == 302
    replies = [r for r in wait_turn_finished(battle) if r.turn.index == 1]
    for reply in replies:
        seen = json.loads(reply.text)
        other = "b" if reply.side == "a" else "a"
        contents = [m["content"] for m in seen]
        assert contents[-3:] == ["first question", first[reply.side], "second question"]
        assert first[other] not in contents
        if reply.model.system_prompt:
            assert seen[0] == {"role": "system", "content": "You are Echo one."}
        else:
            assert seen[0]["role"] == "user"
    battle.refresh_from_db()
    assert battle.turn_count == 2


def test_a_failed_side_says_what_happened_and_can_be_retried(live, visitor, make_model):
    make_model("Alpha", knobs="ttft=0&tps=500&tokens=10")
    make_model("Bravo", knobs="ttft=0&tps=500&tokens=10")
    # Bravo fails 3 times (first try + 2 retries), then answers when retried.
    battle = start_battle(visitor, "[[llmtest model=bravo fault=500 fail_times=3]] hi")
    replies = {r.model.name: r for r in wait_turn_finished(battle)}
    assert replies["Alpha"].status == "done"
    failed = replies["Bravo"]
    assert failed.status == "failed" and failed.error_code == "server_error"
    assert failed.retries == 0 and failed.error_message
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    assert escape(failed.error_message) in page
    assert f"Retry model {failed.side.upper()}" in page
    assert "Traceback" not in page and "InternalServerError" not in page
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"}).status_code == 409
    response = visitor.post(f"/b/{battle.uuid}/retry/{failed.side}/")
    assert response.status_code == 302
    replies = {r.model.name: r for r in wait_turn_finished(battle)}
    assert replies["Bravo"].status == "done" and replies["Bravo"].attempt == 2
    assert replies["Alpha"].text == failed.__class__.objects.get(pk=replies["Alpha"].pk).text
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "b"}).status_code == 302


def test_regenerate_runs_both_sides_again_before_the_vote(live, visitor, two_models):
    battle = start_battle(visitor)
    wait_turn_finished(battle)
    assert visitor.post(f"/b/{battle.uuid}/regenerate/").status_code == 302
    replies = wait_turn_finished(battle)
    assert [r.attempt for r in replies] == [2, 2]
    visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"})
    assert visitor.post(f"/b/{battle.uuid}/regenerate/").status_code == 409


def test_the_stop_button_ends_generation_with_the_text_so_far(live, visitor, make_model):
    make_model("Long1", knobs="ttft=0&tps=20&tokens=400")
    make_model("Long2", knobs="ttft=0&tps=20&tokens=400")
    battle = start_battle(visitor)
    # Press stop mid-answer: once both sides have checkpointed some text (the answers take 20 s).
    wait_for(
        lambda: (
            Reply.objects.filter(turn__battle=battle, status="streaming", text__gt="").count() == 2
        )
    )
    assert visitor.post(f"/b/{battle.uuid}/stop/").status_code == 302
    replies = wait_turn_finished(battle, timeout=15)
    assert [r.status for r in replies] == ["stopped", "stopped"]
    assert all(0 < (r.completion_tokens or len(r.text.split())) < 400 for r in replies)
    assert visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "tie"}).status_code == 302


def test_a_side_stopped_before_its_first_token_says_so_plainly(live, visitor, make_model):
    make_model("Slow1", knobs="ttft=3&tokens=20")
    make_model("Slow2", knobs="ttft=3&tokens=20")
    battle = start_battle(visitor)
    wait_for(lambda: Reply.objects.filter(turn__battle=battle, status="streaming").count() == 2)
    assert visitor.post(f"/b/{battle.uuid}/stop/").status_code == 302
    replies = wait_turn_finished(battle, timeout=15)
    assert [(r.status, r.text, r.ttft_ms) for r in replies] == [("stopped", "", None)] * 2

    html = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()

    assert html.count("Stopped before the model wrote anything.") == 2
    assert html.count('<span class="stats muted small">stopped</span>') == 2
    assert "· stopped" not in html  # no separator before the only fact
    assert 'data-copy="reply"' not in html  # nothing to copy


def test_a_reply_that_names_its_model_flags_the_battle_and_its_vote(live, visitor, make_model):
    make_model("Alpha", knobs="ttft=0&tokens=10")
    make_model("Bravo", knobs="ttft=0&tokens=10", organization="Bravo Corp")
    battle = start_battle(visitor, "[[llmtest model=bravo fault=leak org=Bravo]] who are you?")
    wait_turn_finished(battle)
    battle.refresh_from_db()
    assert battle.identity_leak
    page = visitor.get(f"/c/{battle.conversation.uuid}/").content.decode()
    assert "does not count for the leaderboard" in page
    visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"})
    assert Vote.objects.get(battle=battle).identity_leak


def test_continue_in_this_session_starts_a_new_blind_pair_with_a_fresh_context(
    live, visitor, make_model
):
    make_model("Echo1", knobs="ttft=0&tps=1000&echo=1")
    make_model("Echo2", knobs="ttft=0&tps=1000&echo=1")
    make_model("Echo3", knobs="ttft=0&tps=1000&echo=1")
    battle = start_battle(visitor, "round one")
    wait_turn_finished(battle)
    visitor.post(f"/b/{battle.uuid}/vote/", {"choice": "a"})
    response = visitor.post(f"/c/{battle.conversation.uuid}/continue/", {"prompt": "round two"})
    assert response.status_code == 302
    second = Battle.objects.exclude(pk=battle.pk).get()
    assert second.conversation_id == battle.conversation_id
    for reply in wait_turn_finished(second):
        assert [m["content"] for m in json.loads(reply.text)] == ["round two"]
    assert Conversation.objects.count() == 1
