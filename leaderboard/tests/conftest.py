import itertools
import uuid

import pytest

from battles.models import Battle, Conversation, Vote

# The real-browser fixtures (one Chromium, a fresh context per page), for the browser tests here.
from battles.tests.conftest import _orm_beside_playwright, browser, new_page, page  # noqa: F401

_style_lengths = itertools.count(100)


@pytest.fixture
def make_vote(db):
    """A counted vote between two models; keyword arguments override Vote fields."""

    def make(model_a, model_b, choice: str = "a", **fields) -> Vote:
        owner = f"v:{uuid.uuid4()}"
        conversation = Conversation.objects.create(owner_key=owner, title="Test")
        battle = Battle.objects.create(
            conversation=conversation,
            owner_key=owner,
            model_a=model_a,
            model_b=model_b,
            status=Battle.Status.VOTED,
            pair_probability=0.5,
            visitor_hash=fields.get("visitor_hash", uuid.uuid4().hex),
            turn_count=fields.get("turns", 1),
            identity_leak=fields.get("identity_leak", False),
        )
        length = next(_style_lengths)
        defaults = {
            "visitor_hash": battle.visitor_hash,
            "style": {
                "a": {"length": length, "headers": 0, "lists": 1, "bold": 0},
                "b": {"length": length, "headers": 0, "lists": 1, "bold": 0},
            },
        }
        return Vote.objects.create(
            battle=battle,
            choice=choice,
            model_a=model_a,
            model_b=model_b,
            **(defaults | fields),
        )

    return make


@pytest.fixture
def make_votes(make_vote):
    """Several identical votes: make_votes(a, b, "a", 3)."""

    def make(model_a, model_b, choice: str, count: int, **fields) -> list[Vote]:
        return [make_vote(model_a, model_b, choice, **fields) for _ in range(count)]

    return make


@pytest.fixture
def three_models(make_model):
    return make_model("Alpha"), make_model("Bravo"), make_model("Charlie")


@pytest.fixture
def rated(three_models, make_votes):
    """Alpha > Bravo > Charlie over 60 votes; returns the three models."""
    alpha, bravo, charlie = three_models
    make_votes(alpha, bravo, "a", 12)
    make_votes(alpha, bravo, "b", 4)
    make_votes(bravo, charlie, "a", 12)
    make_votes(bravo, charlie, "b", 4)
    make_votes(alpha, charlie, "a", 14)
    make_votes(charlie, alpha, "tie", 4)
    make_votes(alpha, charlie, "bothbad", 2)
    make_votes(bravo, alpha, "b", 8)
    return three_models


@pytest.fixture
def filters_on(settings):
    """The analysis-time filters on, with FastChat's parameters (whatever the environment says)."""
    settings.ARENA_PROMPT_DEDUP = True
    settings.ARENA_PROMPT_DEDUP_PERCENTILE = 0.999
    settings.ARENA_OUTLIER_DETECTION = True
    settings.ARENA_OUTLIER_ALPHA = 0.05
    settings.ARENA_OUTLIER_MIN_VOTES = 5
    settings.ARENA_OUTLIER_MAX_VOTES = 100


@pytest.fixture
def consensus(three_models, make_vote):
    """Five honest voters, eight votes each, always for the better model (Alpha > Bravo > C)."""
    alpha, bravo, charlie = three_models
    for voter in range(5):
        for i in range(8):
            pair = [
                (alpha, bravo, "a"),
                (bravo, alpha, "b"),
                (bravo, charlie, "a"),
                (alpha, charlie, "a"),
            ][i % 4]
            make_vote(*pair, visitor_hash=f"honest-{voter}")
    return three_models
