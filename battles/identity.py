"""Does a reply give away which model wrote it? (no Django)

A reply that names *itself* breaks the blind test, so the battle is flagged and its vote kept
out of the leaderboard. Naming itself means one of:

- a first-person or attribution pattern around one of the model's names, its family or its
  maker: "I am Claude", "I'm an AI assistant named Gemini", "my name is Qwen", "as ChatGPT, I",
  "I was trained by Google", "a large language model developed by OpenAI" (said of itself),
  "Anthropic created me", "I'm an AI model from Mistral";
- its exact public name when that name has several words ("Command R", "SmolLM2 135M
  Precise"): such a string does not occur by chance.

A bare word is not a leak, however distinctive it looks: "test" in a reply of a model called
"test-model", "command" in a code answer of Command R, "phi" in a maths answer, "Google" in a
sentence about search engines. The old rule (any occurrence of the leading word of any of the
model's identifiers) flagged those and threw their honest votes away.

Terms come from the catalog entry (public name, slug, upstream model name, organisation) plus
the common names of well-known families and their makers.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Common spellings by which models and their makers name themselves.
FAMILY_ALIASES = {
    "openai": ("openai", "open ai", "chatgpt", "chat gpt", "gpt"),
    "anthropic": ("anthropic", "claude"),
    "google": ("google", "gemini", "gemma", "bard", "deepmind", "google deepmind"),
    "meta": ("meta", "meta ai", "llama"),
    "mistral": ("mistral", "mistral ai", "mixtral", "codestral"),
    "alibaba": ("alibaba", "alibaba cloud", "qwen", "tongyi"),
    "deepseek": ("deepseek",),
    "microsoft": ("microsoft", "phi"),
    "xai": ("grok", "xai"),
    "cohere": ("cohere", "command r"),
    "hugging": ("hugging face", "huggingface", "smollm"),
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

# Words a model uses to describe itself between "I am" and its name or its maker: "I am a large
# language model, trained by Google". Anything else in between ("I'm using PyTorch, developed
# by Meta") means the sentence is about something else.
_SELF_WORDS = (
    r"a|an|the|just|simply|only|here|your|large|small|helpful|friendly|open|open-source|"
    r"open-weights?|multimodal|multilingual|conversational|virtual|generative|advanced|"
    r"powerful|pre-?trained|instruction-tuned|fine-tuned|text-based|ai|artificial|"
    r"intelligence|language|model|models|assistant|chatbot|bot|llm|system|program|"
    r"computer|neural|network|transformer|version|variant|member|family|series|of|and|"
    r"based|on|called|named|known|as"
)
_VERBS = (
    r"developed|created|trained|built|made|designed|released|produced|programmed|"
    r"engineered|fine-?tuned|owned|maintained|provided|launched|brought\s+to\s+you|powered"
)
_I_AM = r"(?:i\s+am|i['’]m|i\s+was|i\s+have\s+been|i['’]ve\s+been)"
# After a name in "I am <name>": an end of clause or a word that continues a self-description.
# "I am an alpha tester" is not "I am Alpha".
_AFTER_NAME = (
    r"(?=\s*(?:[,.!;:)\]—–-]|$|\s*\n|\s+(?:model|assistant|ai|chatbot|bot|llm|language|here|"
    r"by|from|developed|created|trained|built|made|and|an|a|the|which|who|that|i|family|"
    r"series|version|variant|instruct|chat|at|for|to|\()\b))"
)
# An optional version after a name: "GPT-4o", "Llama 3.1", "qwen2.5", "Phi-3-mini".
_VERSION = r"(?:[\s-]?v?\d[\w.]*(?:-[a-z]+)?)?"
# A sentence ends at . ! ? or a new line; a gap inside one never crosses that.
_GAP = r"[^.!?\n]"


@dataclass(frozen=True)
class Identity:
    """What a model might call itself: `terms` inside the patterns, `exact_names` anywhere."""

    terms: frozenset[str]
    exact_names: frozenset[str]


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def identity_terms(*, name: str, slug: str, upstream: str, organization: str) -> Identity:
    """The model's names (whole, and their leading distinctive word), its maker's, its family's."""
    upstream = upstream.split("?")[0].split("/")[-1]
    organization = organization.split("(")[0]
    terms: set[str] = set()
    for source in (name, slug, upstream, organization):
        words = _words(source)
        if words:
            terms.add(" ".join(words))
        for word in words:
            stem = re.sub(r"\d.*$", "", word)
            if len(stem) >= 3 and stem not in _STOP:
                terms.add(stem)
                break
    for family, aliases in FAMILY_ALIASES.items():
        if family in terms or terms.intersection(aliases):
            terms.update(aliases)
    # The public name as written, and without a parenthesised remark ("Gemma 3 270M (base)").
    exact = {
        " ".join(variant.lower().split())
        for variant in (name, re.sub(r"\(.*?\)", "", name))
        if len(_words(variant)) >= 2
    }
    return Identity(frozenset(t for t in terms if t), frozenset(exact))


def _term_regex(terms: Iterable[str]) -> str:
    # Longest first, so "command r" wins over "command"; parts of a name may be joined by a
    # space, a hyphen or nothing ("Chat GPT", "chat-gpt", "ChatGPT").
    parts = [
        r"[\s_-]*".join(re.escape(w) for w in term.split())
        for term in sorted(terms, key=len, reverse=True)
    ]
    return rf"(?<![a-z0-9])(?:{'|'.join(parts)}){_VERSION}(?![a-z])"


def _patterns(terms: Iterable[str]) -> list[re.Pattern[str]]:
    t = _term_regex(terms)
    self_desc = rf"(?:(?:\b(?:{_SELF_WORDS})\b|,|\s)+)?"
    by_whom = rf"(?:{_VERBS})\s+(?:\w+ly\s+)?(?:by|from|at)\s+(?:the\s+)?(?:[\w-]+\s+){{0,3}}?{t}"
    return [
        # "I am Claude", "I'm ChatGPT.", "I am a Llama model", "I'm an AI assistant named Gemini"
        re.compile(
            rf"\b(?:{_I_AM}|my\s+name\s+is|call\s+me|i\s+go\s+by)\s+{self_desc}{t}{_AFTER_NAME}"
        ),
        # "You're chatting with Claude", "you are talking to Gemini"
        re.compile(rf"\byou(?:['’]re|\s+are)\s+(?:talking|chatting|speaking)\s+(?:to|with)\s+{t}"),
        # "I am a large language model, trained by Google"; "I'm Qwen, created by Alibaba Cloud"
        re.compile(rf"\b{_I_AM}\s+(?:\b(?:{_SELF_WORDS})\b|,|\s|{t})*?\s*{by_whom}"),
        # "... an AI model from Mistral", "I'm the Gemma model from Google"
        re.compile(
            rf"\b{_I_AM}\s+{self_desc}(?:{t}\s+)?(?:model|assistant|ai|chatbot|llm)\s+from\s+"
            rf"(?:the\s+)?{t}"
        ),
        # "As ChatGPT, I ...", "as an OpenAI model, I", "as an AI developed by Meta, I"
        re.compile(
            rf"\bas\s+{self_desc}(?:{t}(?:\s+(?:model|assistant|ai|chatbot|llm))?|"
            rf"(?:ai|model|assistant|chatbot|language\s+model)\s*,?\s*{by_whom})\s*,\s*i\b"
        ),
        # "Anthropic created me", "OpenAI trained me"; "my creators at Google"
        re.compile(rf"{t}\s+(?:\w+\s+){{0,2}}?(?:{_VERBS})\s+me\b"),
        re.compile(
            rf"\bmy\s+(?:creators?|developers?|makers?|trainers?|team)\s+(?:at|from|are|is)\s+"
            rf"(?:the\s+)?{t}"
        ),
        # "I'm based on GPT-4", "I am a version of Llama", "I run on Gemini"
        re.compile(rf"\b{_I_AM}\s+{self_desc}(?:based|built)\s+on\s+(?:the\s+)?{t}"),
        re.compile(rf"\b{_I_AM}\s+powered\s+by\s+(?:the\s+)?{t}"),
    ]


def leaked_terms(text: str, identity: Identity) -> list[str]:
    """The self-identifications found in `text` (empty: the reply does not name itself)."""
    lowered = text.lower()
    found = []
    for name in sorted(identity.exact_names):
        # As written (a hyphen stays a hyphen: "test-model" is a name, "test model" is prose),
        # with any run of white space between its words.
        spaced = r"\s+".join(re.escape(w) for w in name.split())
        match = re.search(rf"(?<![a-z0-9]){spaced}(?![a-z0-9])", lowered)
        if match:
            found.append(match.group(0))
    if identity.terms:
        for pattern in _patterns(identity.terms):
            match = pattern.search(lowered)
            if match:
                found.append(match.group(0).strip())
    return found
