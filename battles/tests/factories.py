"""Plain factories for battles in a given state: for tests that need many of them at once, or
one in the exact state a rule is about, without running generation."""

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
    conversation: Conversation | None = None,
) -> Battle:
    """One battle, one turn, two replies: pending (for a worker to run) or done (votable); in a
    new session unless `conversation` is given."""
    if conversation is None:
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


def add_turn(battle: Battle, *, prompt: str, status: str = Reply.Status.DONE) -> Turn:
    """A further turn of the battle with both replies in `status` (its turn count follows)."""
    index = battle.turns.count()
    turn = Turn.objects.create(battle=battle, index=index, prompt=prompt)
    text = f"Answer to {prompt}." if status == Reply.Status.DONE else ""
    for side, model_id in (("a", battle.model_a_id), ("b", battle.model_b_id)):
        Reply.objects.create(turn=turn, side=side, model_id=model_id, status=status, text=text)
    Battle.objects.filter(pk=battle.pk).update(turn_count=index + 1)
    battle.refresh_from_db()
    return turn


def set_sides(battle: Battle, **statuses: str) -> None:
    """Put the last turn's replies in these states, e.g. `set_sides(battle, a="failed")`."""
    last = battle.turns.order_by("-index").first()
    for side, status in statuses.items():
        Reply.objects.filter(turn=last, side=side).update(status=status)
