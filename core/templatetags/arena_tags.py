from django import template
from django.utils.safestring import mark_safe

from core.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> str:
    """Markdown through the one sanitising path (core.markdown)."""
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitised by nh3 just above
