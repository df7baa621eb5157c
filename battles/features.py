"""What a vote records about its conversation, computed once when the vote is written.

The prompt's language, whether code is involved, each side's style counts and the prompt's
fingerprint. Pure functions of text (no database): the vote stores their results, and the
leaderboard reads those columns (categories, style control, hot-prompt down-sampling).
"""

import functools
import hashlib
import re
import unicodedata

# The style counts stored per side; the database derives one difference column from each.
STYLE_FEATURES = ("length", "headers", "lists", "bold")

# Below this many letters a language guess is noise ("ok", "hi", code only).
MIN_LETTERS_FOR_LANGUAGE = 12
MIN_LANGUAGE_CONFIDENCE = 0.8
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")

_CODE_RE = re.compile(r"```|^\s{4}\S|\bdef \w+\(|\bfunction\b|#include|;\s*$|</\w+>", re.M)
_HEADER_RE = re.compile(r"^#{1,6}\s", re.M)
_LIST_RE = re.compile(r"^\s*(?:[-*+]|\d+\.)\s", re.M)
_BOLD_RE = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


@functools.cache
def _identifier():
    # Loaded on first use (about a second of CPU): only votes need it, and the web server
    # warms it up in the background (config/warmup.py).
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def prompt_language(text: str) -> str:
    """ISO 639 code of the prompt's language, or "" when the text is too short or unclear."""
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS_FOR_LANGUAGE:
        return ""
    code, confidence = _identifier().classify(text)
    unknown = code in ("und", "zxx") or not _LANGUAGE_RE.match(code)
    if unknown or confidence < MIN_LANGUAGE_CONFIDENCE:
        return ""
    return code


def has_code(*texts: str) -> bool:
    return any(_CODE_RE.search(text) for text in texts)


def style_features(text: str) -> dict[str, int]:
    return {
        "length": len(text),
        "headers": len(_HEADER_RE.findall(text)),
        "lists": len(_LIST_RE.findall(text)),
        "bold": len(_BOLD_RE.findall(text)),
    }


def prompt_fingerprint(prompts: list[str]) -> str:
    """sha256 of a conversation's visitor prompts, as FastChat keys duplicate prompts.

    FastChat joins every user turn (each followed by a newline) and cuts at 10,000 characters;
    here each prompt is also normalised (NFKC, case-folded, whitespace collapsed) so trivial
    variations of one prompt count as the same prompt.
    """
    text = "".join(
        " ".join(unicodedata.normalize("NFKC", prompt).casefold().split()) + "\n"
        for prompt in prompts
    )
    return hashlib.sha256(text[:10_000].encode()).hexdigest()
