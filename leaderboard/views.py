import csv
import math

import numpy as np
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from leaderboard import personal, plots, selectors, sharing
from leaderboard.categories import OVERALL, category_label
from leaderboard.forms import BoardForm
from leaderboard.transparency import transparency_report

COLUMNS = [
    ("rank", "Rank (UB)", True),
    ("model", "Model", False),
    ("score", "Score", True),
    ("ci", "95% CI", True),
    ("votes", "Votes", True),
    ("win_rate", "Win rate", True),
    ("fragility", "Order holds unless", True),
    ("org", "Organisation", False),
    ("license", "License", False),
]
# Columns whose first click sorts best-first.
DESCENDING_FIRST = {"score", "votes", "win_rate"}
EXPORT_FIELDS = [
    "rank",
    "model",
    "slug",
    "organization",
    "license",
    "score",
    "lower",
    "upper",
    "ci_plus",
    "ci_minus",
    "votes",
    "wins",
    "losses",
    "ties",
    "win_rate",
    "provisional",
    "below_min_votes",
    "style_score",
    "style_rank",
    "swap_votes",
    "swap_with",
]
PLOTTED_MODELS = 20
HISTORY_MODELS = 6


def _board(request: HttpRequest, *, matrices: bool):
    form = BoardForm(request.GET)
    form.is_valid()
    category = form.selected_category()
    snapshot = selectors.snapshot_current(category=category, matrices=matrices)
    filters = form.filters()
    rows = selectors.board_rows(snapshot=snapshot, filters=filters) if snapshot else []
    return form, category, snapshot, filters, rows


def _columns(
    request: HttpRequest, filters: selectors.BoardFilters, style: bool, fragility: bool
) -> list[dict]:
    columns = [c for c in COLUMNS if fragility or c[0] != "fragility"]
    if style:
        columns.append(("style", "Style-controlled rank", True))
    result = []
    for key, label, numeric in columns:
        query = request.GET.copy()
        query.pop("dir", None)
        active = key == filters.sort
        query["sort"] = key
        if active:
            query["dir"] = "asc" if filters.descending else "desc"
        elif key in DESCENDING_FIRST:
            query["dir"] = "desc"
        sortable = key in selectors.SORTS
        result.append(
            {
                "key": key,
                "label": label,
                "numeric": numeric,
                "url": f"?{query.urlencode()}" if sortable else "",
                "aria_sort": ("descending" if filters.descending else "ascending")
                if active
                else "",
            }
        )
    return result


def _plots(snapshot, rows, category: str) -> dict:
    shown = rows[:PLOTTED_MODELS]
    order = {pk: i for i, pk in enumerate(snapshot.models_order)}
    picked = [order[row.model_id] for row in shown if row.model_id in order]
    labels = [row.model.name for row in shown if row.model_id in order]

    def sub(matrix: np.ndarray) -> list[list[float | None]]:
        if not matrix.size:
            return []
        part = matrix[np.ix_(picked, picked)].tolist()
        return [[None if math.isnan(value) else value for value in row] for row in part]

    top = rows[:HISTORY_MODELS]
    history = selectors.rating_history(category=category, model_ids=[r.model_id for r in top])
    return {
        "ci": plots.ci_bars(shown),
        "win_rate": plots.heatmap(
            labels,
            sub(snapshot.win_rates()),
            kind="win_rate",
            title="Win rate of the row model against the column model (ties excluded)",
        ),
        "battles": plots.heatmap(
            labels,
            sub(snapshot.battle_counts()),
            kind="count",
            title="Battles between each pair of models",
        ),
        "history": plots.history([(r.model.name, history[r.model_id]) for r in top]),
    }


def age_text(seconds: float) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '4 days ago' (static/arena/arena.js says the same
    as the page stays open)."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return f"{days} day{'s' if days > 1 else ''} ago"


def _poll_url(request: HttpRequest, snapshot) -> str:
    """This board's URL with the snapshot it shows: the poll gets 204 until a newer one."""
    query = request.GET.copy()
    query["since"] = str(snapshot.pk) if snapshot else ""
    return f"{reverse('leaderboard:index')}?{query.urlencode()}"


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    if request.htmx and "since" in request.GET:
        # An open board asking whether there is a newer one: one indexed lookup, and no
        # content (htmx then swaps nothing) while the answer is no.
        form = BoardForm(request.GET)
        form.is_valid()
        latest = selectors.snapshot_latest_id(category=form.selected_category())
        if request.GET["since"] == (str(latest) if latest else ""):
            return HttpResponse(status=204)
    form, category, snapshot, filters, rows = _board(request, matrices=True)
    rated = [row for row in rows if not row.below_min]
    age = int((timezone.now() - snapshot.created_at).total_seconds()) if snapshot else None
    context = {
        "title": "Leaderboard",
        "form": form,
        "category": category,
        "category_label": category_label(category),
        "categories": [(key, category_label(key)) for key in selectors.snapshot_categories()],
        "snapshot": snapshot,
        "rows": rows,
        "filtered": bool(filters.q or filters.organization or filters.license),
        "columns": _columns(
            request,
            filters,
            bool(snapshot and snapshot.has_style),
            bool(snapshot and snapshot.params.get("fragility")),
        ),
        "choices": selectors.board_choices(snapshot=snapshot) if snapshot else {},
        "plots": _plots(snapshot, rated, category) if snapshot and rated else {},
        "votes_exist": snapshot is not None or selectors.votes_exist(),
        "age_seconds": age,
        "age_text": age_text(age) if snapshot else "",
        "poll_url": _poll_url(request, snapshot),
        "poll_seconds": settings.ARENA_BOARD_POLL_SECONDS,
        "min_votes": settings.ARENA_MIN_VOTES_TO_SHOW,
        "provisional_votes": settings.ARENA_PROVISIONAL_VOTES,
        "json_url": f"{reverse('leaderboard:json')}?{request.GET.urlencode()}",
        "csv_url": f"{reverse('leaderboard:csv')}?{request.GET.urlencode()}",
    }
    template = "leaderboard/index.html"
    if request.htmx and not request.htmx.boosted:
        template += "#board"
    return render(request, template, context)


def _row_data(row) -> dict:
    return {
        # Below the minimum votes a rank says nothing yet: the row is listed, unranked.
        "rank": None if row.below_min else row.rank_ub,
        "model": row.model.name,
        "slug": row.model.slug,
        "organization": row.model.organization,
        "license": row.model.license,
        "score": round(row.rating, 2),
        "lower": round(row.lower, 2) if row.lower is not None else None,
        "upper": round(row.upper, 2) if row.upper is not None else None,
        "ci_plus": round(row.ci_plus, 2) if row.ci_plus is not None else None,
        "ci_minus": round(row.ci_minus, 2) if row.ci_minus is not None else None,
        "votes": row.votes,
        "wins": row.wins,
        "losses": row.losses,
        "ties": row.ties,
        "win_rate": round(row.win_rate, 4) if row.win_rate is not None else None,
        "provisional": row.provisional,
        "below_min_votes": row.below_min,
        "style_score": round(row.style_rating, 2) if row.style_rating is not None else None,
        "style_rank": None if row.below_min else row.style_rank_ub,
        # Rank fragility: fewest votes whose removal puts this model below `swap_with`.
        "swap_votes": None if row.below_min else row.swap_votes,
        "swap_with": row.swap_with.slug if row.swap_with and not row.below_min else None,
    }


@require_GET
def board_json(request: HttpRequest) -> JsonResponse:
    form, category, snapshot, _, rows = _board(request, matrices=False)
    meta = None
    if snapshot is not None:
        meta = {
            "computed_at": snapshot.created_at.isoformat(),
            "data_cutoff": snapshot.data_cutoff.isoformat() if snapshot.data_cutoff else None,
            "method": snapshot.method,
            "votes": snapshot.vote_count,
            "excluded": snapshot.excluded,
            "min_votes_to_rank": settings.ARENA_MIN_VOTES_TO_SHOW,
            "top_spot_votes": snapshot.params.get("top_spot_votes"),
            # When the fragility figures were computed: refreshes carry the hourly run's.
            "fragility_computed_at": snapshot.params.get("fragility_at"),
        }
    return JsonResponse(
        {
            "category": category,
            "errors": form.errors.get_json_data(),
            "snapshot": meta,
            "models": [_row_data(row) for row in rows],
        }
    )


@require_GET
def board_csv(request: HttpRequest) -> HttpResponse:
    _, category, snapshot, _, rows = _board(request, matrices=False)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = snapshot.created_at.strftime("%Y%m%d-%H%M") if snapshot else "empty"
    filename = f"leaderboard-{category.replace(':', '-')}-{stamp}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.DictWriter(response, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_row_data(row))
    return response


@require_GET
def model_detail(request: HttpRequest, slug: str) -> HttpResponse:
    model = selectors.model_get_public(slug=slug)
    form = BoardForm(request.GET)
    form.is_valid()
    category = form.selected_category()
    snapshot = selectors.snapshot_current(category=category, matrices=False)
    votes = selectors.model_votes(model=model, recent_days=(7, 30))
    series = selectors.rating_history(category=category, model_ids=[model.pk])[model.pk]
    return render(
        request,
        "leaderboard/model.html",
        {
            "title": model.name,
            "model": model,
            "category": category,
            "category_label": category_label(category),
            "categories": [(key, category_label(key)) for key in selectors.snapshot_categories()],
            "snapshot": snapshot,
            "row": selectors.model_snapshot_row(model=model, snapshot=snapshot),
            "history": plots.history([(model.name, series)], band=True),
            "history_points": len(series),
            "head_to_head": votes.head_to_head,
            "recent_week": votes.recent[7],
            "recent_month": votes.recent[30],
            "overall": category == OVERALL,
        },
    )


@never_cache
@require_GET
def personal_board(request: HttpRequest) -> HttpResponse:
    """The visitor's own leaderboard from their blind votes (theirs alone: it is computed
    for whoever asks, from that visitor's votes), with their share link if they made one."""
    owner_key = request.visitor.key
    token = sharing.share_token(owner_key=owner_key)
    share_url = (
        request.build_absolute_uri(reverse("leaderboard:shared", args=[token])) if token else None
    )
    context = {
        "title": "Your leaderboard",
        "board": personal.personal_board(owner_key=owner_key),
        "share_url": share_url,
        "owner": True,
    }
    return render(request, "leaderboard/personal.html", context)


@require_POST
def personal_share(request: HttpRequest) -> HttpResponse:
    sharing.share_create(owner_key=request.visitor.key)
    return redirect("leaderboard:personal")


@require_POST
def personal_unshare(request: HttpRequest) -> HttpResponse:
    sharing.share_revoke(owner_key=request.visitor.key)
    return redirect("leaderboard:personal")


@never_cache
@require_GET
def personal_shared(request: HttpRequest, token: str) -> HttpResponse:
    """Someone's personal leaderboard through the link they shared, read-only; a revoked or
    altered link is not found."""
    owner_key = sharing.share_owner(token=token)
    if owner_key is None:
        raise Http404("This link was revoked or never existed.")
    context = {
        "title": "A shared leaderboard",
        "board": personal.personal_board(owner_key=owner_key),
        "owner": False,
    }
    return render(request, "leaderboard/personal.html", context)


@require_GET
def transparency(request: HttpRequest) -> HttpResponse:
    report = transparency_report()
    return render(
        request,
        "leaderboard/transparency.html",
        {
            "title": "Transparency report",
            "report": report,
            "json_url": reverse("leaderboard:transparency_json"),
        },
    )


def _iso(value) -> str | None:
    return value.isoformat() if value else None


@require_GET
def transparency_json(request: HttpRequest) -> JsonResponse:
    report = transparency_report()
    snapshot = report.snapshot
    return JsonResponse(
        {
            "snapshot": {
                "computed_at": snapshot.created_at.isoformat(),
                "data_cutoff": _iso(snapshot.data_cutoff),
                "category": snapshot.category,
                "method": snapshot.method,
                "params": snapshot.params,
                "votes_counted": snapshot.vote_count,
                "votes_excluded": snapshot.excluded,
            }
            if snapshot
            else None,
            "sampling": {
                "policy": settings.ARENA_SAMPLING,
                "exploration": settings.ARENA_SAMPLING_EXPLORATION
                if settings.ARENA_SAMPLING == "active"
                else None,
                "battles": report.battles,
            },
            "models": [
                {
                    "model": row.model.name,
                    "slug": row.model.slug,
                    "status": row.model.status,
                    "weight": row.model.weight,
                    "added_at": _iso(row.model.created_at),
                    "deactivated_at": _iso(row.deactivated_at),
                    "retired_at": _iso(row.retired_at),
                    "battles": row.battles,
                    "battle_share": row.battle_share,
                    "target_share": row.target_share,
                    "votes_counted": row.counted,
                    "votes_excluded": row.excluded,
                }
                for row in report.models
            ],
            "changes": [
                {
                    "at": change.at.isoformat(),
                    "model": change.model.slug,
                    "field": change.field,
                    "old": change.old,
                    "new": change.new,
                }
                for change in report.changes
            ],
        }
    )
