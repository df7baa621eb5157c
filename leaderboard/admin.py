from django.contrib import admin

from leaderboard.models import FlaggedVoter, ImportedVote, Snapshot, SnapshotRow


class SnapshotRowInline(admin.TabularInline):
    model = SnapshotRow
    fields = ["model", "rating", "lower", "upper", "rank_ub", "votes", "win_rate", "style_rank_ub"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    """Snapshots are written only by the recompute; admin shows them and may delete old ones."""

    list_display = ["created_at", "category", "method", "vote_count", "duration_ms"]
    list_filter = ["category", "method"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "created_at",
        "category",
        "method",
        "params",
        "data_cutoff",
        "vote_count",
        "excluded",
        "duration_ms",
        "fingerprint",
    ]
    exclude = ["models_order", "win_rate_matrix", "battle_count_matrix"]
    inlines = [SnapshotRowInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ImportedVote)
class ImportedVoteAdmin(admin.ModelAdmin):
    """Votes from import_battles; flag one invalid to drop it from the next recompute."""

    list_display = [
        "external_id",
        "model_a",
        "model_b",
        "choice",
        "language",
        "created_at",
        "flagged_invalid",
    ]
    list_filter = ["choice", "flagged_invalid", "language"]
    list_select_related = ["model_a", "model_b"]
    search_fields = ["external_id", "model_a__name", "model_b__name"]
    fields = [
        "flagged_invalid",
        "external_id",
        "model_a",
        "model_b",
        "choice",
        "judge",
        "turns",
        "prompt_chars",
        "has_code",
        "language",
        "style",
        "identity_leak",
        "created_at",
        "imported_at",
    ]
    readonly_fields = [f for f in fields if f != "flagged_invalid"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(FlaggedVoter)
class FlaggedVoterAdmin(admin.ModelAdmin):
    """Voters the outlier test flagged, most suspicious first; tick `cleared` after review to
    count their votes again."""

    list_display = [
        "visitor_hash",
        "e_value",
        "votes_tested",
        "votes_total",
        "cleared",
        "flagged_at",
    ]
    list_filter = ["cleared"]
    ordering = ["cleared", "-e_value"]
    search_fields = ["=visitor_hash"]
    fields = [
        "visitor_hash",
        "cleared",
        "e_value",
        "votes_tested",
        "votes_total",
        "params",
        "flagged_at",
        "updated_at",
    ]
    readonly_fields = [f for f in fields if f != "cleared"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
