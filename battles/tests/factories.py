"""Plain factories for battles in a given state, for tests that need many of them at once."""

from battles.models import Battle, Conversation, Reply, Turn
from core.visitors import salted_hash
from llm_providers.models import LLMModel


def make_battle(
    *,
    owner_key: str,
    model_a: LLMModel,
    model_b: LLMModel,
    prompt: str,
    finished: bool,
    ip: str = "",
) -> Battle:
    """One battle, one turn, two replies: pending (for a worker to run) or done (votable)."""
    conversation = Conversation.objects.create(owner_key=owner_key, title=prompt[:60])
    battle = Battle.objects.create(
        conversation=conversation,
        owner_key=owner_key,
        model_a=model_a,
        model_b=model_b,
        pair_probability=0.5,
        visitor_hash=salted_hash(owner_key),
        ip_hash=salted_hash(f"ip:{ip}") if ip else "",
        turn_count=1,
    )
    turn = Turn.objects.create(battle=battle, index=0, prompt=prompt)
    status = Reply.Status.DONE if finished else Reply.Status.PENDING
    text = "A finished answer." if finished else ""
    for side, model in (("a", model_a), ("b", model_b)):
        Reply.objects.create(turn=turn, side=side, model=model, status=status, text=text)
    return battle
