"""Staff review of the voters the outlier test flagged."""

import re

import pytest

from leaderboard import recompute
from leaderboard.models import FlaggedVoter

CHANGELIST = "/admin/leaderboard/flaggedvoter/"

pytestmark = pytest.mark.usefixtures("filters_on")


def test_staff_see_flagged_voters_most_suspicious_first_and_cleared_ones_last(staff):
    FlaggedVoter.objects.create(visitor_hash="a" * 32, e_value=21.5, votes_tested=6, votes_total=7)
    FlaggedVoter.objects.create(visitor_hash="f" * 32, e_value=25.0, votes_tested=2, votes_total=9)
    FlaggedVoter.objects.create(
        visitor_hash="c" * 32, e_value=90.0, votes_tested=4, votes_total=4, cleared=True
    )
    response = staff.get(CHANGELIST)
    assert response.status_code == 200
    body = response.content.decode()
    shown = re.findall(r"\b([acf])\1{31}\b", body)
    assert list(dict.fromkeys(shown)) == ["f", "a", "c"]
    assert "25.0" in body and "21.5" in body


def test_the_flagged_voters_are_for_staff_only(client, django_user_model):
    anonymous = client.get(CHANGELIST)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    client.force_login(django_user_model.objects.create_user("member", password="pw-123"))
    not_staff = client.get(CHANGELIST)
    assert not_staff.status_code == 302 and "/admin/login/" in not_staff["Location"]


def test_staff_clear_a_flagged_voter_and_the_next_recompute_counts_their_votes(
    staff, consensus, make_vote
):
    alpha, bravo, charlie = consensus
    for i in range(10):
        make_vote(*[(alpha, bravo, "b"), (bravo, charlie, "b")][i % 2], visitor_hash="contrarian")
    assert recompute.ratings_recompute(style=False).excluded["voter_flagged"] == 10
    flagged = FlaggedVoter.objects.get()

    response = staff.post(f"{CHANGELIST}{flagged.pk}/change/", {"cleared": "on"})
    assert response.status_code == 302

    snapshot = recompute.ratings_recompute(style=False)
    assert FlaggedVoter.objects.get().cleared
    assert snapshot.excluded["voter_flagged"] == 0
    assert snapshot.vote_count == 50
