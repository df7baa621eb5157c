"""The one path by which model and visitor text becomes HTML: markdown, then sanitised.

markdown-it renders CommonMark plus tables and strikethrough with raw HTML disabled; Pygments
highlights fenced code; nh3 (the Ammonia sanitiser) then keeps only a small allow-list of tags
and attributes, so neither a model nor a visitor can inject script, handlers or javascript: links.
"""

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
    "span",
    "div",
    "button",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "code": {"class"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
    "button": {"class", "type", "data-copy"},
}
_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else guess_lexer(code)
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    return highlight(code, lexer, _FORMATTER)


def _fence(self, tokens, idx, options, env) -> str:  # bound to the renderer
    token = tokens[idx]
    lang = token.info.strip().split(maxsplit=1)[0] if token.info else ""
    body = _highlight(token.content, lang, None)
    label = nh3.clean_text(lang) if lang else "code"
    return (
        f'<div class="code-block"><div class="code-head"><span class="code-lang">{label}</span>'
        '<button type="button" class="copy-btn" data-copy="code">Copy</button></div>'
        f'<pre class="highlight"><code>{body}</code></pre></div>\n'
    )


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("fence", _fence)
    return md


def render_markdown(text: str) -> str:
    html = _md().render(text or "")
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )
