"""Every model or visitor text goes through one sanitising markdown path: attacks stay text."""

import re
from html.parser import HTMLParser

import pytest

from core.markdown import render_markdown

XSS_CORPUS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<a href="#" onclick="alert(1)">click</a>',
    "<body onload=alert(1)>",
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<svg><script>alert(1)</script></svg>",
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "<object data='javascript:alert(1)'></object>",
    "<embed src='data:text/html,<script>alert(1)</script>'>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<p style='width: expression(alert(1))'>x</p>",
    "<style>body{background:url(javascript:alert(1))}</style>",
    "<link rel=stylesheet href=//evil.example/x.css>",
    "<meta http-equiv=refresh content='0;url=javascript:alert(1)'>",
    "<form action=javascript:alert(1)><button>go</button></form>",
    "<input autofocus onfocus=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "![img](javascript:alert(1))",
    '![x" onerror="alert(1)](https://example.com/x.png)',
    '[x](https://example.com "title\\" onmouseover=\\"alert(1)")',
    '<https://example.com/"onmouseover="alert(1)>',
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "```html\n<script>alert(1)</script>\n```",
    '```"><script>alert(1)</script>\nx\n```',
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | <script>x</script> |",
    "<a href='https://example.com' target=_blank>ok</a>",
    "<base href='https://evil.example/'>",
]

SAFE_TAGS = {
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


class _Elements(HTMLParser):
    """The tags and attributes a browser would build from the HTML (text stays text)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(html)
    return parser.elements


@pytest.mark.parametrize("payload", XSS_CORPUS)
def test_an_attack_payload_renders_as_harmless_html(payload):
    for tag, attrs in elements(render_markdown(payload)):
        assert tag in SAFE_TAGS, (payload, tag)
        for name, value in attrs.items():
            assert not name.startswith("on"), (payload, name)
            assert name in {
                "href",
                "title",
                "class",
                "rel",
                "type",
                "data-copy",
                "style",
                "start",
            }, (payload, name)
            if name == "href":
                assert (value or "").split(":")[0].lower() in ("https", "http", "mailto"), value
            if name == "style":
                assert re.fullmatch(r"text-align:\s*(left|right|center)\s*;?", value), value


def test_links_keep_safe_schemes_and_get_noopener():
    html = render_markdown("[docs](https://example.com/a?b=1) and [mail](mailto:a@example.com)")
    assert 'href="https://example.com/a?b=1"' in html and 'href="mailto:a@example.com"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_markdown_still_renders_code_tables_and_lists():
    html = render_markdown(
        "# Title\n\n- one\n- **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\ndef f():\n    return 1\n```"
    )
    for fragment in (
        "<h1>Title</h1>",
        "<li>one</li>",
        "<strong>two</strong>",
        "<table>",
        "<td>1</td>",
        'class="code-block"',
        'class="highlight"',
        "Copy",
    ):
        assert fragment in html, fragment
    # Code is highlighted, and its text stays text.
    assert "def" in html and "<script" not in render_markdown("```\n<script>x</script>\n```")
