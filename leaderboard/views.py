from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from leaderboard.models import Snapshot


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    snapshot = Snapshot.objects.filter(category="overall").first()
    rows = list(snapshot.rows.select_related("model")) if snapshot else []
    return render(request, "leaderboard/index.html",
                  {"snapshot": snapshot, "rows": rows, "title": "Leaderboard"})
