from battles import services


def adopt_anonymous_battles(sender, request, user, **kwargs) -> None:
    """After a login, the account owns the battles this browser started anonymously."""
    visitor = getattr(request, "visitor", None) if request is not None else None
    if visitor is not None:
        services.visitor_adopt(anonymous_key=f"v:{visitor.anonymous_id}", user=user)
