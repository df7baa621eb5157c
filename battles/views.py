"""The battle pages and actions: each parses its input with a form, calls one service or
selector and renders.

What a visitor may do or see is the battle's state (battles.state), read through the
selectors; a refused action answers its `BattleError` (message and status). After an action
an HTMX request gets the battle's partial of the session page, any other a redirect to the
page itself (or the error as a page).
"""

import logging
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from battles import selectors, services, stream
from battles.errors import BattleError, NotEnoughModelsError
from battles.forms import ChatForm, CompareForm, PromptForm, RenameForm, SidebarPageForm, VoteForm
from battles.models import Battle, Conversation
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


def _session_url(conversation: Conversation) -> str:
    return reverse("battles:conversation", args=[conversation.uuid])


def _error_page(request: HttpRequest, message: str, *, status: int, back: str) -> HttpResponse:
    return render(request, "battles/error.html", {"message": message, "back": back}, status=status)


def _battle_response(
    request: HttpRequest, battle: Battle, *, error: BattleError | None = None
) -> HttpResponse:
    """The answer to an action on `battle`: its partial for HTMX (with the error at its
    controls), otherwise the session page, or the error as a page that leads back to it."""
    back = _session_url(battle.conversation) + f"#b-{battle.uuid}"
    if error is None and not request.htmx:
        return redirect(back)
    status = error.status if error else 200
    if request.htmx:
        view = selectors.battle_get_for_visitor(visitor=request.visitor, uuid=battle.uuid)
        context = {"battle_view": view, "error": error.message if error else None}
        response = render(request, "battles/conversation.html#battle", context, status=status)
    else:
        response = _error_page(request, error.message, status=status, back=back)
    if error is not None and error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


def _act(
    request: HttpRequest, battle: Battle, service: Callable[..., object], **arguments
) -> HttpResponse:
    """Run one battle service; a refusal is answered with its message and status."""
    try:
        service(battle=battle, **arguments)
    except BattleError as exc:
        return _battle_response(request, battle, error=exc)
    return _battle_response(request, battle)


def _start(request: HttpRequest, *, conversation: Conversation | None) -> HttpResponse:
    """A new blind battle from the posted prompt: from the home page, or inside a session."""
    back = _session_url(conversation) if conversation else reverse("arena:home")
    form = PromptForm(request.POST)
    if not form.is_valid():
        if conversation is None:
            # The home page again, with the form's errors and the prompt kept.
            context = {"form": form, **selectors.models_on_offer()}
            return render(request, "arena/home.html", context, status=400)
        return _error_page(request, form.errors["prompt"][0], status=400, back=back)
    try:
        battle = services.battle_start(
            visitor=request.visitor,
            prompt=form.cleaned_data["prompt"],
            ip=client_ip(request),
            user_agent_family=_ua_family(request),
            conversation=conversation,
            user=_user(request),
        )
    except NotEnoughModelsError as exc:
        context = {"message": exc.message}
        return render(request, "battles/not_enough_models.html", context, status=exc.status)
    except BattleError as exc:
        # The moderation check refused the prompt: nothing was written.
        return _error_page(request, exc.message, status=exc.status, back=back)
    url = _session_url(battle.conversation)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
@rate_limit("start")
def start(request: HttpRequest) -> HttpResponse:
    return _start(request, conversation=None)


@require_POST
@rate_limit("start")
def conversation_continue(request: HttpRequest, uuid) -> HttpResponse:
    """A new blind pair inside the same sidebar session, with a fresh context."""
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    return _start(request, conversation=conversation)


def _chosen_start(request: HttpRequest, form, template: str, start) -> HttpResponse:
    """Side by side or chat: the page with the form's errors (400), the refusal (its status),
    or the new session."""
    context = {"form": form, "models": selectors.models_to_choose()}
    if not form.is_valid():
        return render(request, template, context, status=400)
    try:
        battle = start(
            visitor=request.visitor,
            ip=client_ip(request),
            user_agent_family=_ua_family(request),
            user=_user(request),
            **form.cleaned_data,
        )
    except BattleError as exc:
        # A chosen model went away, or the moderation check refused the prompt.
        return render(request, template, {**context, "error": exc.message}, status=exc.status)
    return redirect(_session_url(battle.conversation))


@rate_limit("start")
def _compare_start(request: HttpRequest) -> HttpResponse:
    return _chosen_start(
        request, CompareForm(request.POST), "battles/compare.html", services.named_start
    )


@require_http_methods(["GET", "POST"])
def compare(request: HttpRequest) -> HttpResponse:
    """Side by side: two models the visitor picks by name answer with their names shown.
    `?model_a=…&model_b=…` fills the choice in."""
    if request.method == "POST":
        return _compare_start(request)
    initial = {k: request.GET[k] for k in ("model_a", "model_b") if k in request.GET}
    context = {"form": CompareForm(initial=initial), "models": selectors.models_to_choose()}
    return render(request, "battles/compare.html", context)


@rate_limit("start")
def _chat_start(request: HttpRequest) -> HttpResponse:
    return _chosen_start(request, ChatForm(request.POST), "battles/chat.html", services.chat_start)


@require_http_methods(["GET", "POST"])
def chat(request: HttpRequest) -> HttpResponse:
    """A chat with one model the visitor picks by name (`?model=…` fills it in)."""
    if request.method == "POST":
        return _chat_start(request)
    initial = {"model": request.GET["model"]} if "model" in request.GET else {}
    context = {"form": ChatForm(initial=initial), "models": selectors.models_to_choose()}
    return render(request, "battles/chat.html", context)


@require_GET
def conversation_detail(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    context = {
        "conversation": conversation,
        "battles": selectors.conversation_battles(conversation=conversation),
        "title": conversation.title,
    }
    return render(request, "battles/conversation.html", context)


@require_GET
def actions(request: HttpRequest, uuid) -> HttpResponse:
    """The battle's controls (vote, follow-up, retry), re-fetched when a turn ends."""
    view = selectors.battle_get_for_visitor(visitor=request.visitor, uuid=uuid)
    return render(request, "battles/conversation.html#actions", {"battle_view": view})


@require_POST
@rate_limit("follow_up")
def follow_up(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    form = PromptForm(request.POST)
    if not form.is_valid():
        error = BattleError(form.errors["prompt"][0], status=400)
        return _battle_response(request, battle, error=error)
    return _act(request, battle, services.turn_add, prompt=form.cleaned_data["prompt"])


@require_POST
@rate_limit("follow_up")
def retry_side(request: HttpRequest, uuid, side: str) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    return _act(request, battle, services.reply_retry, side=side)


@require_POST
@rate_limit("follow_up")
def regenerate(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    return _act(request, battle, services.turn_regenerate)


@require_POST
def stop(request: HttpRequest, uuid) -> HttpResponse:
    battle = selectors.battle_find_for_visitor(visitor=request.visitor, uuid=uuid)
    services.turn_stop(battle=battle)
    # The stream brings the stopped panes; the page needs nothing else.
    return HttpResponse(status=204) if request.htmx else _battle_response(request, battle)


def _login_required_response(request: HttpRequest, battle: Battle) -> HttpResponse:
    back = _session_url(battle.conversation)
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
        error = BattleError(form.errors["choice"][0], status=400)
        return _battle_response(request, battle, error=error)
    return _act(request, battle, services.vote_cast, choice=form.cleaned_data["choice"])


@require_POST
def conversation_rename(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    form = RenameForm(request.POST)
    if not form.is_valid():
        message = form.errors["title"][0]
        return _error_page(request, message, status=400, back=_session_url(conversation))
    services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
    if request.htmx:
        return HttpResponseClientRedirect(request.headers.get("HX-Current-URL") or "/")
    return redirect(_session_url(conversation))


@require_POST
def conversation_delete(request: HttpRequest, uuid) -> HttpResponse:
    conversation = selectors.conversation_get_for_visitor(visitor=request.visitor, uuid=uuid)
    services.conversation_hide(conversation=conversation)
    return HttpResponseClientRedirect("/") if request.htmx else redirect("arena:home")


@require_GET
def sidebar(request: HttpRequest) -> HttpResponse:
    """A page of the visitor's sessions: the sidebar's "Load more" fragment, or a page of its
    own without JavaScript."""
    form = SidebarPageForm(request.GET)
    offset = form.cleaned_data["offset"] if form.is_valid() else 0
    groups, next_offset = selectors.sidebar_groups(visitor=request.visitor, offset=offset)
    context = {"sidebar_groups": groups, "sidebar_next": next_offset, "title": "Your sessions"}
    template = "battles/sessions.html#sessions" if request.htmx else "battles/sessions.html"
    return render(request, template, context)


@require_GET
async def turn_events(request: HttpRequest, uuid, index: int) -> StreamingHttpResponse:
    """The turn's server-sent events (battles.stream): both sides, resumable."""
    turn = await sync_to_async(stream.turn_for_stream)(request.visitor, uuid, index)
    events = stream.turn_events(turn, last_event_id=request.headers.get("Last-Event-ID") or None)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
