"""Vote categories: which slice of the votes a snapshot rates.

A category is a name plus a filter on the columns that battles.Vote and ImportedVote share
(turns, prompt_chars, has_code, language), all filled once when the vote is written.
"""

import re
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

OVERALL = "overall"
LANGUAGE_PREFIX = "lang:"
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Category:
    key: str
    label: str


def long_prompt_chars() -> int:
    return settings.ARENA_LONG_PROMPT_CHARS


def fixed_categories() -> list[Category]:
    return [
        Category(OVERALL, "Overall"),
        Category("multi_turn", "Multi-turn"),
        Category("long_prompt", f"Long prompt (> {long_prompt_chars()} chars)"),
        Category("code", "Coding"),
    ]


def language_category(code: str) -> str:
    return f"{LANGUAGE_PREFIX}{code}"


def category_label(key: str) -> str:
    for category in fixed_categories():
        if category.key == key:
            return category.label
    if key.startswith(LANGUAGE_PREFIX):
        return f"Language: {key.removeprefix(LANGUAGE_PREFIX)}"
    return key


def is_valid_category(key: str) -> bool:
    if any(key == c.key for c in fixed_categories()):
        return True
    code = key.removeprefix(LANGUAGE_PREFIX)
    return key.startswith(LANGUAGE_PREFIX) and bool(_LANGUAGE_RE.match(code))


def category_filter(key: str) -> Q:
    """The filter selecting a category's votes (on Vote or ImportedVote)."""
    if key == OVERALL:
        return Q()
    if key == "multi_turn":
        return Q(turns__gt=1)
    if key == "long_prompt":
        return Q(prompt_chars__gt=long_prompt_chars())
    if key == "code":
        return Q(has_code=True)
    if is_valid_category(key):
        return Q(language=key.removeprefix(LANGUAGE_PREFIX))
    raise ValueError(f"Unknown category {key!r}.")
