"""Does a reply give away which model wrote it? (no Django)

A reply that names its own model, family or maker breaks the blind test, so the battle is
flagged and its vote kept out of the leaderboard. Terms come from the catalog entry (public
name, id, upstream model name, organisation) plus the common names of well-known families.
"""

import re
from collections.abc import Iterable

# Common spellings by which models and their makers name themselves.
FAMILY_ALIASES = {
    "openai": ("openai", "open ai", "chatgpt", "chat gpt", "gpt"),
    "anthropic": ("anthropic", "claude"),
    "google": ("google", "gemini", "gemma", "bard", "deepmind"),
    "meta": ("meta ai", "llama"),
    "mistral": ("mistral", "mixtral", "codestral"),
    "alibaba": ("alibaba", "qwen", "tongyi"),
    "deepseek": ("deepseek",),
    "microsoft": ("microsoft", "phi-3", "phi-4"),
    "xai": ("grok", "xai"),
    "cohere": ("cohere", "command r"),
}
_STOP = {
    "the",
    "model",
    "chat",
    "instruct",
    "local",
    "base",
    "mini",
    "small",
    "large",
    "and",
    "ai",
    "llm",
    "latest",
    "preview",
    "v1",
    "v2",
    "v3",
    "models",
}


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def identity_terms(*, name: str, slug: str, upstream: str, organization: str) -> set[str]:
    """The full public name, plus the leading distinctive word of each identifier.

    Only the leading word: trailing words of names are often ordinary English ("Claude Haiku",
    "Gemma Teacher") and would flag innocent replies.
    """
    terms: set[str] = {name.lower().strip()} if name.strip() else set()
    for source in (name, slug, upstream.split("/")[-1], organization.split("(")[0]):
        for word in _words(source):
            stem = re.sub(r"\d.*$", "", word)
            if len(stem) >= 3 and stem not in _STOP:
                terms.add(stem)
                break
    for family, aliases in FAMILY_ALIASES.items():
        if family in terms or terms.intersection(a for a in aliases if " " not in a):
            terms.update(aliases)
    return terms


def leaked_terms(text: str, terms: Iterable[str]) -> list[str]:
    lowered = text.lower()
    found = []
    for term in sorted(set(terms)):
        # Word boundaries, but allow a version to follow ("gpt4", "llama3").
        if re.search(rf"(?<![a-z]){re.escape(term)}(?![a-z])", lowered):
            found.append(term)
    return found
