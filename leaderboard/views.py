import csv

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from leaderboard import plots, selectors
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

    def sub(matrix):
        return [[matrix[i][j] for j in picked] for i in picked] if matrix else []

    top = rows[:HISTORY_MODELS]
    history = selectors.rating_history(category=category, model_ids=[r.model_id for r in top])
    return {
        "ci": plots.ci_bars(shown),
        "win_rate": plots.heatmap(
            labels,
            sub(snapshot.win_rate_matrix),
            kind="win_rate",
            title="Win rate of the row model against the column model (ties excluded)",
        ),
        "battles": plots.heatmap(
            labels,
            sub(snapshot.battle_count_matrix),
            kind="count",
            title="Battles between each pair of models",
        ),
        "history": plots.history([(r.model.name, history[r.model_id]) for r in top]),
    }


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    form, category, snapshot, filters, rows = _board(request, matrices=True)
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
        "plots": _plots(snapshot, rows, category) if snapshot and rows else {},
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
        "rank": row.rank_ub,
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
        "style_score": round(row.style_rating, 2) if row.style_rating is not None else None,
        "style_rank": row.style_rank_ub,
        # Rank fragility: fewest votes whose removal puts this model below `swap_with`.
        "swap_votes": row.swap_votes,
        "swap_with": row.swap_with.slug if row.swap_with else None,
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
            "top_spot_votes": snapshot.params.get("top_spot_votes"),
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
