from django.urls import path, register_converter

from battles import views


class SideConverter:
    """A battle side in a URL: `a` or `b` (anything else is not found)."""

    regex = "[ab]"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SideConverter, "side")

app_name = "battles"

urlpatterns = [
    path("battle/", views.start, name="start"),
    path("compare/", views.compare, name="compare"),
    path("chat/", views.chat, name="chat"),
    path("c/<uuid:uuid>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:uuid>/continue/", views.conversation_continue, name="continue"),
    path("c/<uuid:uuid>/rename/", views.conversation_rename, name="rename"),
    path("c/<uuid:uuid>/delete/", views.conversation_delete, name="delete"),
    path("sessions/", views.sidebar, name="sidebar"),
    path("b/<uuid:uuid>/follow-up/", views.follow_up, name="follow_up"),
    path("b/<uuid:uuid>/retry/<side:side>/", views.retry_side, name="retry"),
    path("b/<uuid:uuid>/regenerate/", views.regenerate, name="regenerate"),
    path("b/<uuid:uuid>/stop/", views.stop, name="stop"),
    path("b/<uuid:uuid>/vote/", views.vote, name="vote"),
    path("b/<uuid:uuid>/actions/", views.actions, name="actions"),
    path("b/<uuid:uuid>/turns/<int:index>/events/", views.turn_events, name="events"),
]
