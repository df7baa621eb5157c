"""The opt-in share link of a personal leaderboard: a signed, revocable token.

The token is the share row's random nonce signed with the secret key (`django.core.signing`),
so a guessed or altered link fails the signature before any lookup; revoking deletes the row,
so a link that was handed out stops working at once.
"""

import secrets

from django.core import signing

from leaderboard.models import PersonalShare

SALT = "leaderboard.personal-share"


def _token(nonce: str) -> str:
    return signing.dumps(nonce, salt=SALT)


def share_token(*, owner_key: str) -> str | None:
    """The owner's current link token, or None when they do not share."""
    nonce = PersonalShare.objects.filter(owner_key=owner_key).values_list("nonce", flat=True)
    return _token(nonce[0]) if nonce else None


def share_create(*, owner_key: str) -> str:
    """Share (or keep sharing): the owner's link token."""
    share, _ = PersonalShare.objects.get_or_create(
        owner_key=owner_key, defaults={"nonce": secrets.token_hex(16)}
    )
    return _token(share.nonce)


def share_revoke(*, owner_key: str) -> None:
    """Stop sharing: every link handed out so far stops working."""
    PersonalShare.objects.filter(owner_key=owner_key).delete()


def share_owner(*, token: str) -> str | None:
    """Whose board a link shows, or None (bad signature, or revoked)."""
    try:
        nonce = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(nonce, str):
        return None
    owner = PersonalShare.objects.filter(nonce=nonce).values_list("owner_key", flat=True)
    return owner[0] if owner else None
