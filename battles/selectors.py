"""Reads for battles: what a visitor may see, and nothing more."""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Avg, Count, Prefetch, Q, QuerySet
from django.db.models.functions import TruncDate
from django.http import Http404
from django.utils import timezone

from battles.models import (
    Battle,
    Conversation,
    Mode,
    ModerationEvent,
    Reply,
    Turn,
    Vote,
)
from battles.state import BattleState
from core.visitors import Visitor
from llm_providers import local
from llm_providers.models import LLMModel

SIDEBAR_PAGE = 30


def _one(rows: QuerySet):
    """The row a unique lookup finds, or None. Not `first()`: it adds an ORDER BY, and
    compiling that was a quarter of these queries' CPU in the web (benchmarks/load/README.md);
    a unique lookup has nothing to order."""
    return next(iter(rows.order_by()[:1]), None)


def _visible(battles, *, visitor: Visitor, uuid) -> Battle:
    battle = _one(
        battles.filter(uuid=uuid, owner_key=visitor.key, conversation__hidden_at__isnull=True)
    )
    if battle is None:
        raise Http404("No such battle.")
    return battle


def battle_find_for_visitor(*, visitor: Visitor, uuid) -> Battle:
    """The visitor's own battle row (with its session), or 404: for the actions that change it,
    which read what they need under a lock; `battle_get_for_visitor` to show it."""
    return _visible(Battle.objects.select_related("conversation"), visitor=visitor, uuid=uuid)


@dataclass(frozen=True)
class Pane:
    """One side's reply as the page shows it."""

    reply: Reply
    # The turn is streaming on this page: the pane takes the stream's swaps.
    live: bool
    # The side's model, present only once the names may be revealed (BattleState).
    model: LLMModel | None


@dataclass(frozen=True)
class TurnView:
    turn: Turn
    panes: list[Pane]


@dataclass(frozen=True)
class BattleView:
    """A battle as its owner may see it: its turns, its state, and only what may be shown."""

    battle: Battle
    state: BattleState
    turns: list[TurnView]
    # The vote, once cast; each side and its model, once the names may be revealed.
    vote: Vote | None
    revealed: list[tuple[str, LLMModel]]

    @property
    def last_turn(self) -> TurnView:
        return self.turns[-1]

    @property
    def streaming_turn(self) -> TurnView | None:
        """The turn the page follows over the event stream, while its replies run."""
        return self.turns[-1] if self.state.running else None


def _battle_view(battle: Battle) -> BattleView:
    turns = list(battle.turns.all())
    state = BattleState.of(battle, turns[-1].replies.all())
    sides = {"a": battle.model_a, "b": battle.model_b}
    models = {s: m for s, m in sides.items() if m is not None} if state.names_revealed else {}
    return BattleView(
        battle=battle,
        state=state,
        turns=[
            TurnView(
                turn=turn,
                panes=[
                    Pane(
                        reply=reply,
                        live=state.running and turn is turns[-1],
                        model=models.get(reply.side),
                    )
                    for reply in turn.replies.all()
                ],
            )
            for turn in turns
        ],
        vote=(battle.named_vote if battle.mode == Mode.NAMED else battle.vote)
        if state.voted
        else None,
        revealed=list(models.items()),
    )


def _with_everything_shown(battles: QuerySet[Battle]) -> QuerySet[Battle]:
    """One query each for the battles (with their models and vote), turns and replies, however
    many battles and turns there are."""
    return battles.select_related("model_a", "model_b", "vote", "named_vote").prefetch_related(
        Prefetch(
            "turns",
            queryset=Turn.objects.order_by("index").prefetch_related(
                Prefetch("replies", queryset=Reply.objects.order_by("side"))
            ),
        )
    )


def battle_get_for_visitor(*, visitor: Visitor, uuid) -> BattleView:
    """The visitor's own battle with all it shows, or 404: another visitor's battle does not
    exist for them."""
    battles = _with_everything_shown(Battle.objects.select_related("conversation"))
    return _battle_view(_visible(battles, visitor=visitor, uuid=uuid))


def models_on_offer() -> dict:
    """What the home page says about the models: the active ones a battle may draw from, by
    name, and whether they are all the bundled local ones (then it says they are tiny models
    for trying the arena, and where to add real ones)."""
    active = list(
        LLMModel.objects.active().only("name", "organization", "base_url", "model").order_by("name")
    )
    bundled = bool(active) and all(
        local.is_served_here(base_url=m.base_url, model=m.model) for m in active
    )
    return {"active_models": active, "bundled_models_only": bundled}


def models_to_choose() -> list[LLMModel]:
    """The active models a visitor may pick by name (side by side, chat), by name."""
    return list(LLMModel.objects.active().only("name", "organization").order_by("name"))


def conversation_get_for_visitor(*, visitor: Visitor, uuid) -> Conversation:
    conversation = _one(
        Conversation.objects.filter(uuid=uuid, owner_key=visitor.key, hidden_at__isnull=True)
    )
    if conversation is None:
        raise Http404("No such session.")
    return conversation


def conversation_battles(*, conversation: Conversation) -> list[BattleView]:
    """The session's battles, oldest first, as its owner (who found it) may see them."""
    battles = _with_everything_shown(conversation.battles.order_by("created_at"))
    return [_battle_view(battle) for battle in battles]


def sidebar_groups(
    *, visitor: Visitor, offset: int = 0
) -> tuple[list[tuple[str, list]], int | None]:
    """The visitor's sessions, newest first, grouped by day; and the next page's offset."""
    rows = list(
        Conversation.objects.filter(owner_key=visitor.key, hidden_at__isnull=True)
        .order_by("-updated_at", "-pk")
        .only("uuid", "title", "mode", "updated_at")[offset : offset + SIDEBAR_PAGE + 1]
    )
    next_offset = offset + SIDEBAR_PAGE if len(rows) > SIDEBAR_PAGE else None
    today = timezone.localdate()
    groups: dict[str, list] = {}
    for conversation in rows[:SIDEBAR_PAGE]:
        day = timezone.localdate(conversation.updated_at)
        if day == today:
            label = "Today"
        elif day == today - timedelta(days=1):
            label = "Yesterday"
        elif day > today - timedelta(days=7):
            label = "Previous 7 days"
        else:
            label = "Older"
        groups.setdefault(label, []).append(conversation)
    return list(groups.items()), next_offset


# --- staff statistics (admin) ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelHealth:
    model: LLMModel
    replies: int
    failed: int
    leaked: int
    finished: int
    avg_latency_ms: float | None
    avg_ttft_ms: float | None

    @property
    def error_rate(self) -> float | None:
        ended = self.failed + self.finished
        return self.failed / ended if ended else None

    @property
    def leak_rate(self) -> float | None:
        return self.leaked / self.finished if self.finished else None


def votes_per_day(*, column: str, days: int, limit: int = 50) -> list[dict]:
    """The busiest (day, visitor or IP hash) pairs of the last `days` days, most votes first."""
    since = timezone.now() - timedelta(days=days)
    return list(
        Vote.objects.filter(created_at__gte=since)
        .exclude(**{column: ""})
        .annotate(day=TruncDate("created_at"))
        .values("day", column)
        .annotate(votes=Count("pk"))
        .order_by("-votes", "-day", column)[:limit]
    )


def model_health(*, days: int) -> list[ModelHealth]:
    """Per model over the last `days` days: replies, error and identity-leak rates, latency.

    Averages, not percentiles: SQLite has no percentile aggregate, and one GROUP BY keeps the
    page cheap on a big table.
    """
    since = timezone.now() - timedelta(days=days)
    finished = Q(status__in=Reply.FINISHED)
    rows = (
        Reply.objects.filter(created_at__gte=since)
        .order_by()
        .values("model_id")
        .annotate(
            replies=Count("pk"),
            failed=Count("pk", filter=Q(status=Reply.Status.FAILED)),
            leaked=Count("pk", filter=finished & Q(identity_leak=True)),
            finished=Count("pk", filter=finished),
            avg_latency_ms=Avg("latency_ms", filter=finished),
            avg_ttft_ms=Avg("ttft_ms", filter=finished),
        )
    )
    rows = list(rows)
    models = LLMModel.objects.in_bulk([row["model_id"] for row in rows])
    health = [ModelHealth(model=models[row.pop("model_id")], **row) for row in rows]
    return sorted(health, key=lambda h: h.model.name)


def moderation_counts(*, days: int) -> dict[str, int]:
    since = timezone.now() - timedelta(days=days)
    counts = dict(
        ModerationEvent.objects.filter(created_at__gte=since)
        .order_by()
        .values_list("outcome")
        .annotate(n=Count("pk"))
    )
    return {label: counts.get(value, 0) for value, label in ModerationEvent.Outcome.choices}
