"""Writes for battles: start, follow up, stop, retry, vote, sessions (generation: generation/)."""

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from battles import features, generation, sampling
from battles.errors import (
    BattleError,
    ModelUnavailableError,
    NotEnoughModelsError,
    PromptNotAllowedError,
    VoteCapError,
)
from battles.models import (
    Battle,
    Conversation,
    Mode,
    NamedVote,
    Reply,
    SamplingDesign,
    SamplingStanding,
    Turn,
    Vote,
)
from battles.moderation import PromptRefusedError, prompt_moderate
from battles.state import BattleState
from core import metrics
from core.db import transaction_lock
from core.visitors import Visitor, salted_hash
from llm_providers.models import LLMModel

log = logging.getLogger(__name__)


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

    This reads at most `cap` index entries per model and side, never the whole vote table.
    Each model id is a literal in its own subquery: in one correlated subquery PostgreSQL plans
    a sequential scan that stops after `cap` rows, which reads the whole table for a model with
    fewer votes than that (benchmarks/load/README.md has the figures).
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


def sampling_candidates() -> list[sampling.Candidate]:
    """The models a battle may draw now, with their weights and (capped) vote counts."""
    models = list(LLMModel.objects.sampleable().values("id", "weight"))
    votes = _votes_per_model([m["id"] for m in models], cap=settings.ARENA_NEW_MODEL_VOTES)
    return [
        sampling.Candidate(id=m["id"], weight=m["weight"], votes=votes.get(m["id"], 0))
        for m in models
    ]


def sampling_target_shares() -> dict[int, float]:
    """The policy's target: each model's chance of being in the next battle (sums to 2)."""
    candidates = sampling_candidates()
    weights = sampling.effective_weights(
        candidates,
        boost=settings.ARENA_NEW_MODEL_BOOST,
        boost_below=settings.ARENA_NEW_MODEL_VOTES,
    )
    standings = {}
    if settings.ARENA_SAMPLING == "active":
        standings = sampling_standings([c.id for c in candidates])
    if standings:
        pairs = sampling.active_pair_probabilities(
            weights,
            standings,
            exploration=settings.ARENA_SAMPLING_EXPLORATION,
            design=sampling_design(),
        )
    else:
        pairs = sampling.pair_probabilities(weights)
    return sampling.model_shares(weights, pairs)


def sampling_standings(model_ids: list[int]) -> dict[int, sampling.Standing]:
    """The last ratings the active policy reads (empty before the first recompute)."""
    rows = SamplingStanding.objects.filter(model_id__in=model_ids)
    return {pk: sampling.Standing(r, se) for pk, r, se in rows.values_list("model", "rating", "se")}


def sampling_design() -> sampling.Design | None:
    """The active design the last recompute stored (None: none yet), read again only when a
    recompute has replaced it."""
    global _design_cache
    stamps = SamplingDesign.objects.filter(pk=1).values_list("updated_at", flat=True)
    stamp = next(iter(stamps), None)
    if stamp is None:
        return None
    cached = _design_cache
    if cached is None or cached[0] != stamp:
        row = SamplingDesign.objects.get(pk=1)
        n = len(row.model_ids)
        shares = np.zeros((n, n))
        shares[np.triu_indices(n, 1)] = np.frombuffer(bytes(row.shares), dtype=np.float64)
        design = sampling.Design(tuple(row.model_ids), shares + shares.T)
        cached = _design_cache = (row.updated_at, design)
    return cached[1]


_design_cache: tuple[datetime, sampling.Design] | None = None


def sampling_standings_replace(*, standings: dict[int, tuple[float, float]]) -> None:
    """Store the overall ratings (rating, standard error) the active policy samples from,
    and under that policy its design over the models that can be drawn (computed here, in
    the recompute, so that a battle start only weighs it)."""
    design = None
    if settings.ARENA_SAMPLING == "active" and standings:
        ids = [c.id for c in sampling_candidates()]
        rated = {pk: sampling.Standing(r, se) for pk, (r, se) in standings.items()}
        if len(ids) >= 2 and any(pk in rated for pk in ids):
            design = sampling.design_for(ids, rated)
    with transaction.atomic():
        if design is None:
            SamplingDesign.objects.filter(pk=1).delete()
        else:
            upper = np.triu_indices(len(design.ids), 1)
            SamplingDesign.objects.update_or_create(
                pk=1,
                defaults={
                    "model_ids": list(design.ids),
                    "shares": design.shares[upper].astype(np.float64).tobytes(),
                },
            )
        SamplingStanding.objects.exclude(model_id__in=list(standings)).delete()
        SamplingStanding.objects.bulk_create(
            [SamplingStanding(model_id=pk, rating=r, se=se) for pk, (r, se) in standings.items()],
            update_conflicts=True,
            unique_fields=["model"],
            update_fields=["rating", "se", "updated_at"],
        )


def _draw(rng: random.Random | None = None) -> sampling.Draw:
    candidates = sampling_candidates()
    standings = None
    if settings.ARENA_SAMPLING == "active":
        # No ratings yet: the weighted policy (a battle start never waits for a recompute).
        standings = sampling_standings([c.id for c in candidates]) or None
    draw = sampling.draw_pair(
        candidates,
        boost=settings.ARENA_NEW_MODEL_BOOST,
        boost_below=settings.ARENA_NEW_MODEL_VOTES,
        rng=rng,
        standings=standings,
        exploration=settings.ARENA_SAMPLING_EXPLORATION,
        design=sampling_design() if standings else None,
    )
    if draw is None:
        raise NotEnoughModelsError(
            "The arena needs at least two available models to start a battle, and fewer are "
            "available right now. Please try again later."
        )
    return draw


def _create_turn(battle: Battle, index: int, prompt: str) -> Turn:
    turn = Turn.objects.create(battle=battle, index=index, prompt=prompt)
    sides = [("a", battle.model_a_id), ("b", battle.model_b_id)]
    replies = Reply.objects.bulk_create(
        [Reply(turn=turn, side=side, model_id=model_id) for side, model_id in sides if model_id]
    )
    # Both sides in one call: one broker check for the turn, not one per reply.
    generation.replies_enqueue([reply.pk for reply in replies])
    return turn


def _battle_open(
    *,
    visitor: Visitor,
    prompt: str,
    ip: str,
    user_agent_family: str,
    conversation: Conversation | None,
    user,
    mode: str,
    pick: Callable[[], dict],
) -> Battle:
    """Moderate the prompt, pick the models (`pick` returns the battle's model fields), then
    write the battle, its first turn and its pending replies at once; they start on commit."""
    ip_hash = salted_hash(f"ip:{ip}") if ip else ""
    _moderate(
        prompt=prompt,
        action="start" if conversation is None else "continue",
        visitor_hash=visitor.hashed,
        ip_hash=ip_hash,
    )
    models = pick()
    with transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(
                owner_key=visitor.key, user=user, title=_title(prompt), mode=mode
            )
        else:
            Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
        battle = Battle.objects.create(
            conversation=conversation,
            owner_key=visitor.key,
            mode=mode,
            visitor_hash=visitor.hashed,
            ip_hash=ip_hash,
            user_agent_family=user_agent_family[:40],
            turn_count=1,
            **models,
        )
        _create_turn(battle, 0, prompt)
    return battle


def battle_start(
    *,
    visitor: Visitor,
    prompt: str,
    ip: str = "",
    user_agent_family: str = "",
    conversation: Conversation | None = None,
    user=None,
) -> Battle:
    """A new blind battle: in a new session, or inside `conversation` ("continue in this
    session") with a fresh context. Two models are drawn, sides randomised, and the battle, its
    first turn and two pending replies written at once; the replies start on commit."""

    if conversation is not None and conversation.mode != Mode.BLIND:
        raise BattleError("A new blind pair starts in a blind session only.")

    def drawn() -> dict:
        draw = _draw()
        return {
            "model_a_id": draw.model_a,
            "model_b_id": draw.model_b,
            "pair_probability": draw.probability,
            "sampling": {"weights": {str(k): v for k, v in draw.weights.items()}},
        }

    battle = _battle_open(
        visitor=visitor,
        prompt=prompt,
        ip=ip,
        user_agent_family=user_agent_family,
        conversation=conversation,
        user=user,
        mode=Mode.BLIND,
        pick=drawn,
    )
    metrics.BATTLES_STARTED.inc()
    return battle


def _chosen(*models: LLMModel) -> Callable[[], dict]:
    """The visitor's own choice, still active at the moment of the start."""

    def pick() -> dict:
        ids = [model.pk for model in models]
        active = set(LLMModel.objects.active().filter(pk__in=ids).values_list("pk", flat=True))
        gone = [model.name for model in models if model.pk not in active]
        if gone:
            raise ModelUnavailableError(
                f"{', '.join(gone)} is no longer available. Choose another model."
            )
        return {
            "model_a_id": ids[0],
            "model_b_id": ids[1] if len(ids) > 1 else None,
            "pair_probability": 1.0,
        }

    return pick


def named_start(
    *,
    visitor: Visitor,
    prompt: str,
    model_a: LLMModel,
    model_b: LLMModel,
    ip: str = "",
    user_agent_family: str = "",
    user=None,
) -> Battle:
    """Two models the visitor chose, side by side with their names shown, in a new session.
    Its vote is stored as a NamedVote, which the ratings never read."""
    if model_a.pk == model_b.pk:
        raise BattleError("Choose two different models to compare.", status=400)
    return _battle_open(
        visitor=visitor,
        prompt=prompt,
        ip=ip,
        user_agent_family=user_agent_family,
        conversation=None,
        user=user,
        mode=Mode.NAMED,
        pick=_chosen(model_a, model_b),
    )


def chat_start(
    *,
    visitor: Visitor,
    prompt: str,
    model: LLMModel,
    ip: str = "",
    user_agent_family: str = "",
    user=None,
) -> Battle:
    """A chat with one chosen model in a new session: side A alone, no vote."""
    return _battle_open(
        visitor=visitor,
        prompt=prompt,
        ip=ip,
        user_agent_family=user_agent_family,
        conversation=None,
        user=user,
        mode=Mode.CHAT,
        pick=_chosen(model),
    )


# --- actions on a battle: each checks its rule (battles.state) on the locked row -------------


def _last_turn_replies(battle: Battle) -> list[Reply]:
    """The last turn's replies, side A first, each with its turn (one query)."""
    replies = list(
        Reply.objects.filter(turn__battle_id=battle.pk)
        .select_related("turn")
        .order_by("-turn__index", "side")[:2]
    )
    return [reply for reply in replies if reply.turn_id == replies[0].turn_id]


@dataclass(frozen=True)
class _Locked:
    battle: Battle
    last_turn: Turn
    replies: list[Reply]


@contextmanager
def _locked(battle: Battle, rule: Callable[[BattleState], BattleError | None]) -> Iterator[_Locked]:
    """The battle row locked for this transaction, with its state; raises what `rule` refuses.

    Every visitor action that changes a battle goes through here, so its rule is checked
    against the battle as it is, and two requests on one battle (a double click, two tabs)
    take turns: the second sees what the first did. PostgreSQL locks the row; SQLite's
    IMMEDIATE transactions take the database's write lock at the start, which serialises them
    the same way.
    """
    with transaction.atomic():
        row = Battle.objects.select_for_update().get(pk=battle.pk)
        replies = _last_turn_replies(row)
        refusal = rule(BattleState.of(row, replies))
        if refusal is not None:
            raise refusal
        yield _Locked(battle=row, last_turn=replies[0].turn, replies=replies)


def turn_add(*, battle: Battle, prompt: str) -> Turn:
    """A follow-up: both models answer, each seeing only its own earlier replies."""
    _moderate(
        prompt=prompt,
        action="follow_up",
        visitor_hash=battle.visitor_hash,
        ip_hash=battle.ip_hash,
    )
    with _locked(battle, BattleState.follow_up_refusal) as locked:
        turn = _create_turn(locked.battle, locked.last_turn.index + 1, prompt)
        Battle.objects.filter(pk=locked.battle.pk).update(turn_count=F("turn_count") + 1)
        Conversation.objects.filter(pk=locked.battle.conversation_id).update(
            updated_at=timezone.now()
        )
    return turn


def _restart(replies: list[Reply]) -> None:
    restarted_ids = []
    for reply in replies:
        # Only a reply that has ended may start again; a double click is a no-op.
        restarted = Reply.objects.filter(
            pk=reply.pk, status__in=[Reply.Status.FAILED, Reply.Status.DONE, Reply.Status.STOPPED]
        ).update(
            status=Reply.Status.PENDING,
            attempt=F("attempt") + 1,
            text="",
            text_html="",
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
            restarted_ids.append(reply.pk)
    generation.replies_enqueue(restarted_ids)


def reply_retry(*, battle: Battle, side: str) -> None:
    """Run one failed side of the last turn again; the other side keeps its answer."""
    with _locked(battle, lambda state: state.retry_refusal(side)) as locked:
        generation.turn_stream_reset(locked.last_turn)
        _restart([reply for reply in locked.replies if reply.side == side])


def turn_regenerate(*, battle: Battle) -> None:
    """Both sides of the last turn answer again (allowed before the vote, and logged)."""
    with _locked(battle, BattleState.regenerate_refusal) as locked:
        generation.turn_stream_reset(locked.last_turn)
        _restart(locked.replies)
    log.info("battle %s: turn %s regenerated", battle.uuid, locked.last_turn.index)


def turn_stop(*, battle: Battle) -> None:
    """Ask the last turn's running replies to stop; with nothing running there is nothing to
    stop (a second click, or a click as the answers ended)."""
    replies = _last_turn_replies(battle)
    if BattleState.of(battle, replies).may_stop:
        generation.turn_stop_request(replies[0].turn)


# --- votes and sessions -----------------------------------------------------------------------


def _vote_cap_check(*, visitor_hash: str, ip_hash: str) -> None:
    """Refuse a vote past the daily caps, counted from the stored votes of the last 24 hours.

    Runs in the vote's transaction after locking the voter's and the address's names, so two
    votes arriving together at the cap take turns and the second one counts the first. The
    caps live in the database, not the cache: they hold while Redis is down.
    """
    transaction_lock(
        *(
            f"vote-cap:{kind}:{value}"
            for kind, value in (("visitor", visitor_hash), ("ip", ip_hash))
            if value
        )
    )
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


def vote_cast(*, battle: Battle, choice: str) -> Vote | NamedVote:
    """The visitor's one vote on their battle (the caller found it through the visitor's
    selector): it closes the battle and reveals the names.

    The vote and the status change commit together under the battle's lock, so a second vote
    finds the battle voted; the database's one vote per battle stands behind that. A
    side-by-side battle's vote goes to NamedVote, outside the ratings (and outside the daily
    cap, which protects them).
    """
    if choice not in Vote.Choice.values:
        raise BattleError("Unknown vote. Choose A, B, tie or both bad.", status=400)
    table = NamedVote if battle.mode == Mode.NAMED else Vote
    with _locked(battle, BattleState.vote_refusal) as locked:
        row = locked.battle
        if table is Vote:  # named votes never count toward the ratings, nor the caps
            _vote_cap_check(visitor_hash=row.visitor_hash, ip_hash=row.ip_hash)
        replies = list(
            Reply.objects.filter(turn__battle_id=row.pk)
            .select_related("turn")
            .order_by("turn__index", "side")
        )
        prompts = list({reply.turn_id: reply.turn.prompt for reply in replies}.values())
        text_a = "\n".join(r.text for r in replies if r.side == "a")
        text_b = "\n".join(r.text for r in replies if r.side == "b")
        fields = {
            "battle": row,
            "choice": choice,
            "model_a_id": row.model_a_id,
            "model_b_id": row.model_b_id,
            "visitor_hash": row.visitor_hash,
            "ip_hash": row.ip_hash,
            "turns": len(prompts),
            "prompt_chars": len(prompts[0]),
            "has_code": features.has_code("\n".join(prompts), text_a, text_b),
            "language": features.prompt_language(prompts[0]),
            "style": {"a": features.style_features(text_a), "b": features.style_features(text_b)},
            "identity_leak": row.identity_leak,
        }
        if table is Vote:
            fields["prompt_hash"] = features.prompt_fingerprint(prompts)
        vote = table.objects.create(**fields)
        Battle.objects.filter(pk=row.pk).update(status=Battle.Status.VOTED, voted_at=timezone.now())
    metrics.VOTES.labels(choice).inc()
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
