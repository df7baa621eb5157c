"""Staff views of battles, votes, replies and moderation, and the stats page.

Everything a visitor produced is read-only here; staff may only flag a vote invalid, one of
the two decisions that change what the ratings count (the other, clearing a flagged voter,
is in the leaderboard's admin).
"""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path

from battles import selectors
from battles.models import Battle, ModerationEvent, NamedVote, Reply, Vote

STATS_DAYS = 7


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Battle)
class BattleAdmin(ReadOnlyAdmin):
    list_display = [
        "uuid",
        "mode",
        "model_a",
        "model_b",
        "status",
        "turn_count",
        "identity_leak",
        "had_failed_side",
        "created_at",
    ]
    list_filter = ["mode", "status", "identity_leak", "had_failed_side", "user_agent_family"]
    list_select_related = ["model_a", "model_b"]
    search_fields = ["=uuid", "=visitor_hash", "=ip_hash"]
    date_hierarchy = "created_at"
    exclude = ["conversation"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reply)
class ReplyAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "model",
        "side",
        "status",
        "error_code",
        "latency_ms",
        "ttft_ms",
        "identity_leak",
        "created_at",
    ]
    list_filter = ["status", "identity_leak", "error_code", "model"]
    list_select_related = ["model"]
    date_hierarchy = "created_at"
    exclude = ["turn"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    """Votes; flag one invalid to leave it out of the next recompute."""

    list_display = [
        "battle",
        "model_a",
        "model_b",
        "choice",
        "language",
        "identity_leak",
        "flagged_invalid",
        "created_at",
    ]
    list_filter = ["choice", "identity_leak", "flagged_invalid", "has_code", "language"]
    list_select_related = ["battle", "model_a", "model_b"]
    search_fields = ["=visitor_hash", "=ip_hash", "=prompt_hash"]
    date_hierarchy = "created_at"
    fields = [
        "flagged_invalid",
        "choice",
        "model_a",
        "model_b",
        "visitor_hash",
        "ip_hash",
        "prompt_hash",
        "turns",
        "prompt_chars",
        "has_code",
        "language",
        "style",
        "identity_leak",
        "created_at",
    ]
    readonly_fields = [f for f in fields if f != "flagged_invalid"]

    def get_urls(self):
        stats = path(
            "stats/", self.admin_site.admin_view(self.stats_view), name="battles_arena_stats"
        )
        return [stats, *super().get_urls()]

    def stats_view(self, request):
        """Arena integrity at a glance: who votes how much, model health, moderation."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = self.admin_site.each_context(request) | {
            "title": "Arena statistics",
            "days": STATS_DAYS,
            "by_visitor": selectors.votes_per_day(column="visitor_hash", days=STATS_DAYS),
            "by_ip": selectors.votes_per_day(column="ip_hash", days=STATS_DAYS),
            "models": selectors.model_health(days=STATS_DAYS),
            "moderation": selectors.moderation_counts(days=STATS_DAYS),
        }
        return TemplateResponse(request, "admin/battles/arena_stats.html", context)


@admin.register(NamedVote)
class NamedVoteAdmin(ReadOnlyAdmin):
    """Side-by-side votes: kept for the record and the export, never rated."""

    list_display = ["battle", "model_a", "model_b", "choice", "language", "created_at"]
    list_filter = ["choice", "language"]
    list_select_related = ["battle", "model_a", "model_b"]
    search_fields = ["=visitor_hash", "=ip_hash"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModerationEvent)
class ModerationEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "outcome", "action", "categories", "prompt_excerpt"]
    list_filter = ["outcome", "action"]
    search_fields = ["=visitor_hash", "=ip_hash"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request, obj=None) -> bool:
        return False
