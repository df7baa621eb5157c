"""Writes for battles: start, follow up, generate, stop, retry, vote, sessions."""

import hashlib
import html
import logging
import random
import re
import threading
import time
import unicodedata
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError

from arena.dispatch import enqueue_many, enqueue_now
from arena.hub import get_hub
from arena.visitors import Visitor, salted_hash
from battles import identity, sampling
from battles.models import Battle, Conversation, Reply, Turn, Vote
from battles.moderation import PromptRefusedError, prompt_moderate
from leaderboard.categories import prompt_language
from llm_providers.client import ProviderError, Timeouts, chat_stream
from llm_providers.models import LLMModel
from llm_providers.services import model_record_failure, model_record_success

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
    from battles.tasks import reply_generate_task

    # Both sides in one call: one broker check for the turn, not one per reply.
    enqueue_many(reply_generate_task, [(reply.pk,) for reply in replies])
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
    from battles.tasks import reply_generate_task

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
    enqueue_many(reply_generate_task, [(pk,) for pk in restarted_ids])
    return len(restarted_ids)


def _reset_stream(turn: Turn) -> None:
    """Start the turn's event stream afresh for a retry or regenerate.

    The page then opens a new stream; replaying the old one would end it at the old turn-end.
    A stop requested earlier must not stop the new answers either. Tasks are enqueued on
    commit, so nothing new is published before this.
    """
    hub = get_hub()
    hub.discard(turn.stream_key())
    hub.clear_flag(f"stop:{turn.pk}")


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
        _reset_stream(last)
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
        _reset_stream(last)
        _restart([r.pk for r in replies])
        log.info("battle %s: turn %s regenerated", locked.uuid, last.index)


def turn_stop(*, battle: Battle) -> None:
    last = _last_turn(battle)
    get_hub().set_flag(f"stop:{last.pk}")


# --- generation ---------------------------------------------------------------------------


def _messages(reply: Reply) -> list[dict]:
    """The chat history this side's model sees: its own system prompt and its own replies."""
    model = reply.model
    messages = [{"role": "system", "content": model.system_prompt}] if model.system_prompt else []
    # The first turn has no history: no query for it.
    earlier = (
        Reply.objects.filter(
            turn__battle_id=reply.turn.battle_id, turn__index__lt=reply.turn.index, side=reply.side
        )
        .select_related("turn")
        .order_by("turn__index")
        if reply.turn.index
        else ()
    )
    for previous in earlier:
        messages.append({"role": "user", "content": previous.turn.prompt})
        messages.append({"role": "assistant", "content": previous.text})
    messages.append({"role": "user", "content": reply.turn.prompt})
    return messages


def pane_html(reply: Reply, *, streaming_text: str = "") -> str:
    return render_to_string(
        "battles/_pane.html",
        {"reply": reply, "turn": reply.turn, "streaming_text": streaming_text, "live": True},
    )


def _publish_pane(reply: Reply) -> None:
    get_hub().publish(reply.turn.stream_key(), f"pane-{reply.side}", pane_html(reply))


def _publish_turn_end_if_finished(turn: Turn) -> None:
    states = set(Reply.objects.filter(turn=turn).values_list("status", flat=True))
    if not states & {Reply.Status.PENDING, Reply.Status.STREAMING}:
        get_hub().publish(turn.stream_key(), "turn-end", "")


class _Checkpoint(threading.Thread):
    """Heartbeat and text checkpoint every few seconds, off the token path.

    The DB sees the partial text and a fresh heartbeat without one write per token; a reply
    whose heartbeat stops (worker killed) is found by the reaper.
    """

    def __init__(self, reply_id: int, parts: list[str]):
        super().__init__(daemon=True, name=f"checkpoint-{reply_id}")
        self.reply_id = reply_id
        self.parts = parts
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.ARENA_HEARTBEAT_SECONDS):
                Reply.objects.filter(pk=self.reply_id, status=Reply.Status.STREAMING).update(
                    heartbeat_at=timezone.now(), text="".join(self.parts)
                )
                # Idle for seconds until the next write: give the connection back meanwhile.
                connection.close()
        except Exception:
            log.exception("checkpoint for reply %s failed", self.reply_id)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


# Tokens that arrive within this many seconds of the last published delta travel together.
DELTA_PUBLISH_SECONDS = 0.05


def reply_generate(*, reply_id: int) -> None:
    now = timezone.now()
    claimed = Reply.objects.filter(pk=reply_id, status=Reply.Status.PENDING).update(
        status=Reply.Status.STREAMING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return  # already taken by another worker, or no longer wanted
    # No join to the battle: nothing here needs more than its id (turn.battle_id). With a
    # large battle table and few turns PostgreSQL planned that join as a merge join over the
    # whole battle index: 360-590 ms before every reply with 2,000,000 battles.
    reply = Reply.objects.select_related("turn", "model").get(pk=reply_id)
    hub = get_hub()
    stream = reply.turn.stream_key()
    parts: list[str] = []
    pending: list[str] = []
    last_publish = [0.0]
    first_sent = [False]
    stop_key = f"stop:{reply.turn_id}"

    def publish_pending() -> None:
        if pending:
            # Deltas are swapped into the page as HTML: escape them (the final pane is
            # sanitised markdown, rendered by arena.markdown).
            text = html.escape("".join(pending), quote=False)
            pending.clear()
            # Deltas travel with the process's other replies (one round trip); the first
            # token goes out at once. Called in the stream loop: it never waits for Redis.
            hub.publish_batched(stream, f"delta-{reply.side}", text, soon=not first_sent[0])
            first_sent[0] = True
        last_publish[0] = time.monotonic()

    def on_delta(text: str) -> None:
        parts.append(text)
        pending.append(text)
        # One hub event per DELTA_PUBLISH_SECONDS at most, not one per token: a Redis round
        # trip per token was the largest share of the worker's time. The first token goes
        # out at once.
        if time.monotonic() - last_publish[0] >= DELTA_PUBLISH_SECONDS:
            publish_pending()

    def should_stop() -> bool:
        # Called after every chunk and every 50 ms without one: also sends held-back text.
        if pending and time.monotonic() - last_publish[0] >= DELTA_PUBLISH_SECONDS:
            publish_pending()
        # The flag lives in the hub (Redis in service mode); the hub reads the flags of all the
        # process's replies a few times a second, in one round trip.
        return stop_watch.is_set()

    endpoint, messages = reply.model.endpoint(), _messages(reply)
    # The model call lasts seconds to minutes without touching the database: hold no
    # connection meanwhile (it goes back to the pool; the finish takes one again).
    connection.close()
    checkpoint = _Checkpoint(reply.pk, parts)
    checkpoint.start()
    try:
        with hub.watch_flag(stop_key) as stop_watch:
            result = chat_stream(
                endpoint,
                messages,
                on_delta=on_delta,
                should_stop=should_stop,
                # The "streaming" pane goes out while the model thinks, not before the request.
                on_sent=lambda: _publish_pane(reply),
                timeouts=Timeouts(
                    connect=settings.LLM_TIMEOUT_CONNECT,
                    first_token=settings.LLM_TIMEOUT_FIRST_TOKEN,
                    idle=settings.LLM_TIMEOUT_IDLE,
                    total=settings.LLM_TIMEOUT_TOTAL,
                ),
                max_retries=settings.LLM_MAX_RETRIES,
            )
    except ProviderError as exc:
        checkpoint.stop()
        publish_pending()
        _reply_fail(reply, exc, partial="".join(parts))
    except Exception as exc:
        checkpoint.stop()
        publish_pending()
        log.exception("reply %s: unexpected failure", reply.pk)
        _reply_fail(
            reply,
            ProviderError(
                "internal", "Something went wrong on our side.", retryable=False, detail=repr(exc)
            ),
            partial="".join(parts),
        )
    else:
        checkpoint.stop()
        publish_pending()
        text = result.text
        if not text.strip() and not result.stopped:
            _reply_fail(
                reply,
                ProviderError("empty", "The model returned an empty answer.", retryable=False),
                partial=text,
            )
        else:
            # The circuit and the identity flag are settled before the reply shows as
            # finished: a vote or a new battle that follows must see them.
            model_record_success(model_id=reply.model_id)
            _check_identity(reply, text)
            _reply_finish(
                reply,
                status=Reply.Status.STOPPED if result.stopped else Reply.Status.DONE,
                text=text,
                finish_reason="stopped" if result.stopped else (result.finish_reason or ""),
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                ttft_ms=result.ttft_ms,
                latency_ms=result.latency_ms,
                retries=result.retries,
                finished_at=timezone.now(),
            )


def _reply_finish(reply: Reply, **fields) -> None:
    """Publish the final pane, then record the end, then maybe end the turn.

    In this order a turn-end event (sent once every reply of the turn is finished in the DB)
    always follows the final pane of both sides in the stream.
    """
    for name, value in fields.items():
        setattr(reply, name, value)
    try:
        _publish_pane(reply)
    except RedisError:
        # The hub is down: the database still records the end; pages read it from there.
        log.warning("reply %s: final pane not published", reply.pk, exc_info=True)
    Reply.objects.filter(pk=reply.pk, status=Reply.Status.STREAMING).update(**fields)
    try:
        _publish_turn_end_if_finished(reply.turn)
    except RedisError:
        log.warning("reply %s: turn end not published", reply.pk, exc_info=True)


def _reply_fail(reply: Reply, exc: ProviderError, *, partial: str) -> None:
    Battle.objects.filter(pk=reply.turn.battle_id).update(had_failed_side=True)
    if exc.code not in ("stopped", "internal"):
        model_record_failure(model_id=reply.model_id, error=exc.message)
    _reply_finish(
        reply,
        status=Reply.Status.FAILED,
        text=partial,
        error_code=exc.code[:40],
        error_message=exc.message[:300],
        error_detail=(getattr(exc, "detail", "") or "")[:5000],
        finished_at=timezone.now(),
    )


def _check_identity(reply: Reply, text: str) -> None:
    model = reply.model
    terms = identity.identity_terms(
        name=model.name, slug=model.slug, upstream=model.model, organization=model.organization
    )
    found = identity.leaked_terms(text, terms)
    if found:
        log.info("battle %s: reply %s names %s", reply.turn.battle_id, reply.side, found)
        Battle.objects.filter(pk=reply.turn.battle_id).update(identity_leak=True)
        Reply.objects.filter(pk=reply.pk).update(identity_leak=True)


def replies_reap() -> dict[str, int]:
    """Fail replies whose worker stopped making progress; re-enqueue ones never picked up."""
    from battles.tasks import reply_generate_task

    now = timezone.now()
    stall = timedelta(seconds=settings.ARENA_REPLY_STALL_SECONDS)
    stuck = list(
        Reply.objects.filter(
            status=Reply.Status.STREAMING, heartbeat_at__lt=now - stall
        ).select_related("turn")
    )
    failed = 0
    for reply in stuck:
        updated = Reply.objects.filter(
            pk=reply.pk, status=Reply.Status.STREAMING, heartbeat_at__lt=now - stall
        ).update(
            status=Reply.Status.FAILED,
            error_code="stalled",
            error_message="The model stopped responding before it finished. Retry this side.",
            finished_at=now,
        )
        if updated:
            failed += 1
            Battle.objects.filter(pk=reply.turn.battle_id).update(had_failed_side=True)
            reply.refresh_from_db()
            _publish_pane(reply)
            _publish_turn_end_if_finished(reply.turn)
    requeued = 0
    for pk in Reply.objects.filter(
        status=Reply.Status.PENDING, created_at__lt=now - stall
    ).values_list("pk", flat=True)[:500]:
        enqueue_now(reply_generate_task, pk)
        requeued += 1
    return {"failed": failed, "requeued": requeued}


# --- votes and sessions -----------------------------------------------------------------------

_CODE_RE = re.compile(r"```|^\s{4}\S|\bdef \w+\(|\bfunction\b|#include|;\s*$|</\w+>", re.M)


def style_features(text: str) -> dict[str, int]:
    return {
        "length": len(text),
        "headers": len(re.findall(r"^#{1,6}\s", text, re.M)),
        "lists": len(re.findall(r"^\s*(?:[-*+]|\d+\.)\s", text, re.M)),
        "bold": len(re.findall(r"\*\*[^*\n]+\*\*|__[^_\n]+__", text)),
    }


def prompt_fingerprint(prompts: list[str]) -> str:
    """sha256 of a conversation's visitor prompts, as FastChat keys duplicate prompts.

    FastChat joins every user turn (each followed by a newline) and cuts at 10,000 characters;
    here each prompt is also normalised (NFKC, case-folded, whitespace collapsed) so trivial
    variations of one prompt count as the same prompt.
    """
    text = "".join(
        " ".join(unicodedata.normalize("NFKC", prompt).casefold().split()) + "\n"
        for prompt in prompts
    )
    return hashlib.sha256(text[:10_000].encode()).hexdigest()


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
                has_code=bool(_CODE_RE.search(prompts + "\n" + text_a + "\n" + text_b)),
                language=prompt_language(turns[0].prompt),
                prompt_hash=prompt_fingerprint([t.prompt for t in turns]),
                style={"a": style_features(text_a), "b": style_features(text_b)},
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
