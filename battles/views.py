import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from battles import generation, selectors, services
from battles.forms import PromptForm, RenameForm, VoteForm
from battles.models import Battle, Reply, Turn
from core.hub import Event, format_sse, get_hub
from core.ratelimit import rate_limit
from core.visitors import client_ip

log = logging.getLogger(__name__)


def _ua_family(request: HttpRequest) -> str:
    ua = request.headers.get("User-Agent", "")
    for family in ("Edg", "OPR", "Firefox", "Chrome", "Safari", "curl", "python", "bot"):
        if family.lower() in ua.lower():
            return {"Edg": "Edge", "OPR": "Opera"}.get(family, family)
    return "other" if ua else ""


def _user(request: HttpRequest):
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _battle_context(request: HttpRequest, battle: Battle) -> dict:
    turns = list(battle.turns.all())
    last = turns[-1] if turns else None
    replies = list(last.replies.all()) if last else []
    running = any(r.status in (Reply.Status.PENDING, Reply.Status.STREAMING) for r in replies)
    failed = [r.side for r in replies if r.status == Reply.Status.FAILED]
    finished = bool(replies) and not running and not failed
    voted = battle.status == Battle.Status.VOTED
    return {
        "battle": battle,
        "turns": turns,
        "last_turn": last,
        "running": running,
        "failed_sides": failed,
        "can_vote": finished and not voted,
        "can_follow_up": finished and not voted and battle.turn_count < settings.ARENA_MAX_TURNS,
        "turns_left": max(0, settings.ARENA_MAX_TURNS - battle.turn_count),
        "voted": voted,
        "vote": getattr(battle, "vote", None) if voted else None,
        "prompt_form": PromptForm(),
    }


def _battle_response(
    request: HttpRequest, battle: Battle, *, error: str | None = None, status: int = 200
) -> HttpResponse:
    if not request.htmx:
        if error:
            return render(request, "battles/error.html", {"message": error}, status=status)
        return redirect(
            reverse("battles:conversation", args=[battle.conversation.uuid]) + f"#b-{battle.uuid}"
        )
    fresh = selectors.battle_get_for_visitor(visitor=request.visitor, uuid=battle.uuid)
    context = _battle_context(request, fresh) | {"error": error}
    return render(request, "battles/_battle.html", context, status=status)


def _refused(request: HttpRequest, exc: services.BattleError, *, back: str) -> HttpResponse:
    """A prompt the moderation check refused: nothing was written; say so plainly."""
    return render(
        request, "battles/error.html", {"message": exc.message, "back": back}, status=exc.status
    )


@require_POST
@rate_limit("start")
def start(request: HttpRequest) -> HttpResponse:
    form = PromptForm(request.POST)
    if not form.is_valid():
        # The home page again, with the form's errors.
        context = {"form": form, "active_models": selectors.models_on_offer()}
        return render(request, "arena/home.html", context, status=400)
    try:
        battle = services.battle_start(
            visitor=request.visitor,
            prompt=form.cleaned_data["prompt"],
            ip=client_ip(request),
            user_agent_family=_ua_family(request),
            user=_user(request),
        )
    except services.NotEnoughModelsError as exc:
        return render(
            request, "battles/not_enough_models.html", {"message": exc.message}, status=503
        )
    except services.PromptNotAllowedError as exc:
        return _refused(request, exc, back=reverse("arena:home"))
    url = reverse("battles:conversation", args=[battle.conversation.uuid])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
@rate_limit("start")
def conversation_continue(request: HttpRequest, uuid) -> HttpResponse:
    """A new blind pair inside the same sidebar session, with a fresh context."""
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    form = PromptForm(request.POST)
    url = reverse("battles:conversation", args=[conversation.uuid])
    if not form.is_valid():
        return render(
            request,
            "battles/error.html",
            {"message": form.errors["prompt"][0], "back": url},
            status=400,
        )
    try:
        services.battle_start(
            visitor=request.visitor,
            prompt=form.cleaned_data["prompt"],
            ip=client_ip(request),
            user_agent_family=_ua_family(request),
            conversation=conversation,
            user=_user(request),
        )
    except services.NotEnoughModelsError as exc:
        return render(
            request, "battles/not_enough_models.html", {"message": exc.message}, status=503
        )
    except services.PromptNotAllowedError as exc:
        return _refused(request, exc, back=url)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def conversation_detail(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    battles = selectors.conversation_battles(conversation=conversation)
    contexts = [_battle_context(request, b) for b in battles]
    return render(
        request,
        "battles/conversation.html",
        {"conversation": conversation, "battles": contexts, "title": conversation.title},
    )


@require_POST
@rate_limit("follow_up")
def follow_up(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    form = PromptForm(request.POST)
    if not form.is_valid():
        return _battle_response(request, battle, error=form.errors["prompt"][0], status=400)
    try:
        services.turn_add(battle=battle, prompt=form.cleaned_data["prompt"])
    except services.BattleError as exc:
        return _battle_response(request, battle, error=exc.message, status=exc.status)
    return _battle_response(request, battle)


@require_POST
@rate_limit("follow_up")
def retry_side(request: HttpRequest, uuid, side: str) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    if side not in ("a", "b"):
        raise Http404("No such side.")
    try:
        services.reply_retry(battle=battle, side=side)
    except services.BattleError as exc:
        return _battle_response(request, battle, error=exc.message, status=exc.status)
    return _battle_response(request, battle)


@require_POST
@rate_limit("follow_up")
def regenerate(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    try:
        services.turn_regenerate(battle=battle)
    except services.BattleError as exc:
        return _battle_response(request, battle, error=exc.message, status=exc.status)
    return _battle_response(request, battle)


@require_POST
def stop(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    services.turn_stop(battle=battle)
    if request.htmx:
        return HttpResponse(status=204)
    return _battle_response(request, battle)


def _login_required_response(request: HttpRequest, battle: Battle) -> HttpResponse:
    back = reverse("battles:conversation", args=[battle.conversation.uuid])
    context = {"login_url": f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': back})}"}
    template = "arena/login_required.html"
    if request.htmx:
        response = render(request, f"{template}#login-required", context, status=403)
        # Beside the battle, not over it: the visitor comes back to vote on it.
        response["HX-Reswap"] = "beforebegin"
        return response
    return render(request, template, context, status=403)


@require_POST
@rate_limit("vote")
def vote(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    if settings.ARENA_VOTE_REQUIRES_LOGIN and _user(request) is None:
        return _login_required_response(request, battle)
    form = VoteForm(request.POST)
    if not form.is_valid():
        return _battle_response(request, battle, error=form.errors["choice"][0], status=400)
    try:
        services.vote_cast(
            battle=battle, visitor=request.visitor, choice=form.cleaned_data["choice"]
        )
    except services.VoteCapError as exc:
        response = _battle_response(request, battle, error=exc.message, status=exc.status)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except services.BattleError as exc:
        return _battle_response(request, battle, error=exc.message, status=exc.status)
    return _battle_response(request, battle)


@require_GET
def actions(request: HttpRequest, uuid) -> HttpResponse:
    """The battle's controls (vote, follow-up, retry), re-fetched when a turn ends."""
    battle = selectors.battle_get_for_visitor(visitor=request.visitor, uuid=uuid)
    return render(request, "battles/_battle.html#actions", _battle_context(request, battle))


@require_POST
def conversation_rename(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return render(
            request, "battles/error.html", {"message": form.errors["title"][0]}, status=400
        )
    services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
    if request.htmx:
        return HttpResponseClientRedirect(request.headers.get("HX-Current-URL") or "/")
    return redirect(reverse("battles:conversation", args=[conversation.uuid]))


@require_POST
def conversation_delete(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    services.conversation_hide(conversation=conversation)
    return HttpResponseClientRedirect("/") if request.htmx else redirect("arena:home")


@require_GET
def sidebar(request: HttpRequest) -> HttpResponse:
    try:
        offset = max(0, int(request.GET.get("offset", "0")))
    except ValueError:
        offset = 0
    groups, next_offset = selectors.sidebar_groups(visitor=request.visitor, offset=offset)
    return render(
        request,
        "arena/_sidebar_items.html",
        {"sidebar_groups": groups, "sidebar_next": next_offset},
    )


# --- the SSE stream ---------------------------------------------------------------------------


# A stream stays open for minutes while it touches the database for a few milliseconds: each
# lookup gives its connection back at once (to the pool), so idle streams hold none.


def _turn_for(visitor, uuid, index: int) -> Turn:
    try:
        turn = (
            Turn.objects.select_related("battle")
            .filter(battle__uuid=uuid, battle__owner_key=visitor.key, index=index)
            .first()
        )
    finally:
        connection.close()
    if turn is None:
        raise Http404("No such turn.")
    return turn


def _final_events(turn: Turn) -> list[Event] | None:
    """When every side of the turn has ended, the DB alone can answer (no hub needed)."""
    try:
        replies = list(Reply.objects.filter(turn=turn).select_related("turn"))
        if any(r.status in (Reply.Status.PENDING, Reply.Status.STREAMING) for r in replies):
            return None
        events = [
            Event(id="", name=f"pane-{r.side}", data=generation.pane_html(r)) for r in replies
        ]
    finally:
        connection.close()
    return [*events, Event(id="", name="turn-end", data="")]


DELTA_READ_SECONDS = 0.05


@require_GET
async def turn_events(request: HttpRequest, uuid, index: int) -> StreamingHttpResponse:
    visitor = request.visitor
    turn = await sync_to_async(_turn_for)(visitor, uuid, index)
    last_event_id = request.headers.get("Last-Event-ID") or None
    hub = get_hub()
    stream_key = turn.stream_key()
    deadline = time.monotonic() + settings.LLM_TIMEOUT_TOTAL * 2 + 120

    async def events():
        # One subscription for the connection: in service mode the process's shared reader
        # fills it (one XREAD for every open stream of the process).
        subscription = hub.subscribe(stream_key, last_event_id)
        try:
            async for chunk in _stream(subscription):
                yield chunk
        finally:
            subscription.close()

    async def _stream(subscription):
        yield "retry: 1000\n\n"
        started_sides: set[str] = set()
        while time.monotonic() < deadline:
            try:
                batch = await subscription.get(timeout=10.0)
            except Exception:
                # Hub unreachable: a finished turn can still be answered from the database;
                # otherwise end the stream and let the browser reconnect and resume.
                log.warning("stream %s: hub read failed", stream_key, exc_info=True)
                try:
                    final = await sync_to_async(_final_events)(turn)
                except Exception:
                    final = None
                if final is not None:
                    yield format_sse(final)
                return
            if batch:
                yield format_sse(batch)
                if any(e.name == "turn-end" for e in batch):
                    return
                deltas = {e.name for e in batch if e.name.startswith("delta-")}
                if deltas and started_sides | deltas == {"delta-a", "delta-b"}:
                    # While both sides stream, read at most every DELTA_READ_SECONDS: one write
                    # carries several deltas. Until both have begun there is no pause, so the
                    # second side's first delta is not held back behind the first side's
                    # (it was, by up to 50 ms); panes and turn-end never wait either.
                    await asyncio.sleep(DELTA_READ_SECONDS)
                started_sides |= deltas
                continue
            final = await sync_to_async(_final_events)(turn)
            if final is not None:
                yield format_sse(final)
                return
            yield ": keep-alive\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
