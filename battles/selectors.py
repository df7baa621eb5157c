"""Reads for battles: what a visitor may see, and nothing more."""

from datetime import timedelta

from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone

from arena.visitors import Visitor
from battles.models import Battle, Conversation, Reply, Turn

SIDEBAR_PAGE = 30


def battle_get_for_visitor(*, visitor: Visitor, uuid) -> Battle:
    """The visitor's own battle, or 404: another visitor's battle does not exist for them."""
    battle = (
        Battle.objects.select_related("conversation", "model_a", "model_b")
        .prefetch_related(
            Prefetch(
                "turns",
                queryset=Turn.objects.order_by("index").prefetch_related(
                    Prefetch("replies", queryset=Reply.objects.order_by("side"))
                ),
            )
        )
        .filter(uuid=uuid, owner_key=visitor.key, conversation__hidden_at__isnull=True)
        .first()
    )
    if battle is None:
        raise Http404("No such battle.")
    return battle


def conversation_get_for_visitor(*, visitor: Visitor, uuid) -> Conversation:
    conversation = Conversation.objects.filter(
        uuid=uuid, owner_key=visitor.key, hidden_at__isnull=True
    ).first()
    if conversation is None:
        raise Http404("No such session.")
    return conversation


def conversation_battles(*, conversation: Conversation) -> list[Battle]:
    return list(
        conversation.battles.select_related("model_a", "model_b")
        .prefetch_related(
            Prefetch(
                "turns",
                queryset=Turn.objects.order_by("index").prefetch_related(
                    Prefetch("replies", queryset=Reply.objects.order_by("side"))
                ),
            )
        )
        .order_by("created_at")
    )


def sidebar_groups(
    *, visitor: Visitor, offset: int = 0
) -> tuple[list[tuple[str, list]], int | None]:
    """The visitor's sessions, newest first, grouped by day; and the next page's offset."""
    rows = list(
        Conversation.objects.filter(owner_key=visitor.key, hidden_at__isnull=True)
        .order_by("-updated_at", "-pk")
        .only("uuid", "title", "updated_at")[offset : offset + SIDEBAR_PAGE + 1]
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
