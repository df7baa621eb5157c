"""Writes for battles: start, follow up, stop, retry, vote, sessions (generation: generation.py)."""

import logging
import random
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from battles import features, generation, sampling
from battles.models import Battle, Conversation, Reply, Turn, Vote
from battles.moderation import PromptRefusedError, prompt_moderate
from core.visitors import Visitor, salted_hash
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)


class BattleError(Exception):
    """A request the battle cannot take; `message` is fit to show, `status` the HTTP code."""

    status = 409

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotEnoughModelsError(BattleError):
    status = 503


class AlreadyVotedError(BattleError):
    status = 409


class VoteCapError(BattleError):
    """Too many votes in 24 hours; `retry_after` is the seconds until one more is allowed."""

    status = 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class PromptNotAllowedError(BattleError):
    status = PromptRefusedError.status


def _moderate(*, prompt: str, action: str, visitor_hash: str, ip_hash: str) -> None:
    try:
        prompt_moderate(prompt=prompt, action=action, visitor_hash=visitor_hash, ip_hash=ip_hash)
    except PromptRefusedError as exc:
        raise PromptNotAllowedError(exc.message) from None


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "…"


def _votes_per_model(model_ids: list[int], *, cap: int) -> dict[int, int]:
    """Votes per model, counted only up to `cap`: the boost asks whether a model has fewer.

    Counting every vote meant two scans of the whole vote table on every battle start (seconds
    with millions of votes); this reads at most `cap` index entries per model and side. Each
    model id is a literal in its own subquery: in one correlated subquery PostgreSQL plans a
    sequential scan that stops after `cap` rows, which reads the whole table for a model with
    fewer votes than that (20 s per battle start with 2,000,000 votes and a new model).
    """
    if not model_ids or cap <= 0:
        return {}
    votes = Vote._meta.db_table
    # Only the table name from the model's metadata goes into the text; values are parameters.
    side = "(SELECT COUNT(*) FROM (SELECT 1 FROM {v} WHERE {col} = %s LIMIT %s) s)"
    one = (
        f"SELECT %s, {side.format(v=votes, col='model_a_id')} + "
        f"{side.format(v=votes, col='model_b_id')}"
    )
    sql = " UNION ALL ".join([one] * len(model_ids))
    params = [p for pk in model_ids for p in (pk, pk, cap, pk, cap)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {int(pk): n for pk, n in cursor.fetchall()}


def _draw(rng: random.Random | None = None) -> sampling.Draw:
    models = list(LLMModel.objects.sampleable().values("id", "weight"))
    votes = _votes_per_model([m["id"] for m in models], cap=settings.ARENA_NEW_MODEL_VOTES)
    candidates = [
        sampling.Candidate(id=m["id"], weight=m["weight"], votes=votes.get(m["id"], 0))
        for m in models
    ]
    draw = sampling.draw_pair(
        candidates,
        boost=settings.ARENA_NEW_MODEL_BOOST,
        boost_below=settings.ARENA_NEW_MODEL_VOTES,
        rng=rng,
    )
    if draw is None:
        raise NotEnoughModelsError(
            "The arena needs at least two available models to start a battle, and fewer are "
            "available right now. Please try again later."
        )
    return draw


def _create_turn(battle: Battle, index: int, prompt: str) -> Turn:
    turn = Turn.objects.create(battle=battle, index=index, prompt=prompt)
    replies = Reply.objects.bulk_create(
        [
            Reply(turn=turn, side="a", model_id=battle.model_a_id),
            Reply(turn=turn, side="b", model_id=battle.model_b_id),
        ]
    )
    # Both sides in one call: one broker check for the turn, not one per reply.
    generation.replies_enqueue([reply.pk for reply in replies])
    return turn


def battle_start(
    *,
    visitor: Visitor,
    prompt: str,
    ip: str = "",
    user_agent_family: str = "",
    conversation: Conversation | None = None,
    user=None,
) -> Battle:
    ip_hash = salted_hash(f"ip:{ip}") if ip else ""
    _moderate(
        prompt=prompt,
        action="start" if conversation is None else "continue",
        visitor_hash=visitor.hashed,
        ip_hash=ip_hash,
    )
    draw = _draw()
    with transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(
                owner_key=visitor.key, user=user, title=_title(prompt)
            )
        else:
            Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
        battle = Battle.objects.create(
            conversation=conversation,
            owner_key=visitor.key,
            model_a_id=draw.model_a,
            model_b_id=draw.model_b,
            pair_probability=draw.probability,
            sampling={"weights": {str(k): v for k, v in draw.weights.items()}},
            visitor_hash=visitor.hashed,
            ip_hash=ip_hash,
            user_agent_family=user_agent_family[:40],
            turn_count=1,
        )
        _create_turn(battle, 0, prompt)
    return battle


def _last_turn(battle: Battle) -> Turn:
    return battle.turns.order_by("-index").first()


def turn_add(*, battle: Battle, prompt: str) -> Turn:
    """A follow-up: both models answer, each seeing only its own earlier replies."""
    _moderate(
        prompt=prompt,
        action="follow_up",
        visitor_hash=battle.visitor_hash,
        ip_hash=battle.ip_hash,
    )
    with transaction.atomic():
        locked = Battle.objects.select_for_update().get(pk=battle.pk)
        if locked.status != Battle.Status.OPEN:
            raise BattleError("This battle is closed. Start a new round to keep chatting.")
        if locked.turn_count >= settings.ARENA_MAX_TURNS:
            raise BattleError(
                f"This battle has reached its limit of {settings.ARENA_MAX_TURNS} turns. "
                "Vote, then start a new round."
            )
        last = _last_turn(locked)
        states = set(last.replies.values_list("status", flat=True))
        if states - set(Reply.FINISHED):
            raise BattleError("Wait until both answers are finished (or retry the failed side).")
        turn = _create_turn(locked, last.index + 1, prompt)
        Battle.objects.filter(pk=locked.pk).update(turn_count=F("turn_count") + 1)
        Conversation.objects.filter(pk=locked.conversation_id).update(updated_at=timezone.now())
    return turn


def _restart(reply_ids: list[int]) -> int:
    restarted_ids = []
    for pk in reply_ids:
        # Only a reply that has ended may start again; a double click is a no-op.
        restarted = Reply.objects.filter(
            pk=pk, status__in=[Reply.Status.FAILED, Reply.Status.DONE, Reply.Status.STOPPED]
        ).update(
            status=Reply.Status.PENDING,
            attempt=F("attempt") + 1,
            text="",
            finish_reason="",
            error_code="",
            error_message="",
            error_detail="",
            prompt_tokens=None,
            completion_tokens=None,
            ttft_ms=None,
            latency_ms=None,
            heartbeat_at=None,
            started_at=None,
            finished_at=None,
        )
        if restarted:
            restarted_ids.append(pk)
    generation.replies_enqueue(restarted_ids)
    return len(restarted_ids)


def reply_retry(*, battle: Battle, side: str) -> None:
    """Run one failed side of the last turn again."""
    with transaction.atomic():
        locked = Battle.objects.select_for_update().get(pk=battle.pk)
        if locked.status != Battle.Status.OPEN:
            raise BattleError("This battle is closed.")
        last = _last_turn(locked)
        reply = Reply.objects.filter(turn=last, side=side).first()
        if reply is None or reply.status != Reply.Status.FAILED:
            raise BattleError("Only a failed answer can be retried.")
        generation.turn_stream_reset(last)
        _restart([reply.pk])


def turn_regenerate(*, battle: Battle) -> None:
    """Both sides of the last turn answer again (allowed before the vote, and logged)."""
    with transaction.atomic():
        locked = Battle.objects.select_for_update().get(pk=battle.pk)
        if locked.status != Battle.Status.OPEN:
            raise BattleError("This battle is closed.")
        last = _last_turn(locked)
        replies = list(last.replies.all())
        if any(r.status in (Reply.Status.PENDING, Reply.Status.STREAMING) for r in replies):
            raise BattleError("Wait until both answers are finished before regenerating.")
        generation.turn_stream_reset(last)
        _restart([r.pk for r in replies])
        log.info("battle %s: turn %s regenerated", locked.uuid, last.index)


def turn_stop(*, battle: Battle) -> None:
    generation.turn_stop_request(_last_turn(battle))


# --- votes and sessions -----------------------------------------------------------------------

def _vote_cap_check(*, visitor_hash: str, ip_hash: str) -> None:
    """Refuse a vote past the daily caps, counted from the stored votes of the last 24 hours.

    Two votes racing past the cap can both pass: the cap is a brake on floods, not an exact
    quota, and a lock per visitor would cost every vote for that.
    """
    now = timezone.now()
    since = now - timedelta(hours=24)
    caps = [
        ("visitor_hash", visitor_hash, settings.ARENA_DAILY_VOTE_CAP_VISITOR, "from you"),
        ("ip_hash", ip_hash, settings.ARENA_DAILY_VOTE_CAP_IP, "from your network"),
    ]
    for column, value, cap, whose in caps:
        if not cap or not value:
            continue
        recent = Vote.objects.filter(**{column: value}, created_at__gte=since).order_by(
            "-created_at"
        )
        # The cap-th newest vote leaves the window first; from then one more vote fits.
        window = recent.values_list("created_at", flat=True)[cap - 1 : cap]
        oldest_counted = next(iter(window), None)
        if oldest_counted is not None:
            wait = int((oldest_counted + timedelta(hours=24) - now).total_seconds()) + 1
            raise VoteCapError(
                f"Daily vote limit reached: the arena takes at most {cap:,} votes {whose} in "
                "24 hours. Your battle stays open; you can vote on it later.",
                retry_after=max(1, wait),
            )


def vote_cast(*, battle: Battle, visitor: Visitor, choice: str) -> Vote:
    if choice not in Vote.Choice.values:
        raise BattleError("Unknown vote. Choose A, B, tie or both bad.", status=400)
    if battle.owner_key != visitor.key:
        raise BattleError("This battle is not yours.", status=404)
    _vote_cap_check(visitor_hash=battle.visitor_hash, ip_hash=battle.ip_hash)
    try:
        with transaction.atomic():
            locked = Battle.objects.select_for_update().get(pk=battle.pk)
            # The vote and the status change commit together, under this row lock.
            if locked.status != Battle.Status.OPEN:
                raise AlreadyVotedError("This battle already has your vote.")
            turns = list(locked.turns.prefetch_related("replies"))
            replies = [r for t in turns for r in t.replies.all()]
            if any(r.status not in Reply.FINISHED for r in replies):
                raise BattleError(
                    "Both answers must finish before you vote (retry a failed side first)."
                )
            text_a = "\n".join(r.text for r in replies if r.side == "a")
            text_b = "\n".join(r.text for r in replies if r.side == "b")
            prompts = "\n".join(t.prompt for t in turns)
            vote = Vote.objects.create(
                battle=locked,
                choice=choice,
                model_a_id=locked.model_a_id,
                model_b_id=locked.model_b_id,
                visitor_hash=locked.visitor_hash,
                ip_hash=locked.ip_hash,
                turns=len(turns),
                prompt_chars=len(turns[0].prompt),
                has_code=features.has_code(prompts, text_a, text_b),
                language=features.prompt_language(turns[0].prompt),
                prompt_hash=features.prompt_fingerprint([t.prompt for t in turns]),
                style={"a": features.style_features(text_a), "b": features.style_features(text_b)},
                identity_leak=locked.identity_leak,
            )
            updated = Battle.objects.filter(pk=locked.pk, status=Battle.Status.OPEN).update(
                status=Battle.Status.VOTED, voted_at=timezone.now()
            )
            if not updated:
                raise AlreadyVotedError("This battle already has your vote.")
    except IntegrityError:
        raise AlreadyVotedError("This battle already has your vote.") from None
    return vote


def visitor_adopt(*, anonymous_key: str, user) -> int:
    """On login, the account takes over what this browser did anonymously.

    Battles are owned by the visitor key, which changes from "v:<cookie id>" to "u:<pk>" at
    login; without this a visitor who must log in to vote would lose the battle they were
    about to vote on. Open battles also take the account's hash, so their votes count for it.
    """
    key = f"u:{user.pk}"
    if anonymous_key == key:
        return 0
    with transaction.atomic():
        moved = Conversation.objects.filter(owner_key=anonymous_key).update(
            owner_key=key, user=user
        )
        Battle.objects.filter(owner_key=anonymous_key, status=Battle.Status.OPEN).update(
            owner_key=key, visitor_hash=salted_hash(key)
        )
        Battle.objects.filter(owner_key=anonymous_key).update(owner_key=key)
    return moved


def conversation_rename(*, conversation: Conversation, title: str) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(title=title)


def conversation_hide(*, conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(hidden_at=timezone.now())
