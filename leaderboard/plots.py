"""Server-rendered SVG charts: no script, no inline style.

Colours come from classes in static/arena/leaderboard.css, which map them to the theme's CSS
variables, so every chart follows the light and dark themes. Geometry and intensity use SVG
presentation attributes (x, y, fill-opacity), which the Content-Security-Policy allows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
ROW_HEIGHT = 22
SERIES_CLASSES = 8
# Labels are sized by character count (the server cannot measure text): a generous average
# width for the 11 px chart font, so a label never runs past its chart's edge. A longer name
# is cut with an ellipsis and shown whole in its tooltip.
CHAR_WIDTH = 6.4
MAX_LABEL_WIDTH = 190
LABEL_GAP = 8
HISTORY_LABEL_WIDTH = 190


def _num(value: float) -> str:
    return f"{value:.1f}"


def _fit(label: str, width: float) -> str:
    """The label, cut with an ellipsis if it would be wider than `width` px."""
    limit = max(1, int(width // CHAR_WIDTH))
    return label if len(label) <= limit else label[: limit - 1].rstrip() + "…"


def _label_width(labels: Sequence[str]) -> float:
    """Room for the longest label, up to MAX_LABEL_WIDTH."""
    return min(MAX_LABEL_WIDTH, max(len(label) for label in labels) * CHAR_WIDTH)


def _label(label: str, width: float, attributes: str) -> str:
    """An SVG text cut to `width` px, with the whole label as its tooltip when cut."""
    shown = _fit(label, width)
    tip = f"<title>{escape(label)}</title>" if shown != label else ""
    return f"<text {attributes}>{escape(shown)}{tip}</text>"


def _spread(positions: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Move label positions at least `gap` apart, in their order, within [low, high]."""
    order = sorted(range(len(positions)), key=lambda k: positions[k])
    placed = [positions[k] for k in order]
    for i in range(len(placed)):
        placed[i] = max(placed[i], low if i == 0 else placed[i - 1] + gap)
    for i in reversed(range(len(placed))):
        placed[i] = min(placed[i], high if i == len(placed) - 1 else placed[i + 1] - gap)
    spread = [0.0] * len(positions)
    for k, value in zip(order, placed, strict=True):
        spread[k] = max(low, value)
    return spread


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values spanning [low, high]."""
    span = max(high - low, 1e-9)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def _svg(title: str, width: float, height: float, body: list[str], css: str) -> SafeString:
    return mark_safe(  # noqa: S308 - every label below goes through escape()
        f'<svg class="plot {css}" viewBox="0 0 {_num(width)} {_num(height)}" '
        f'width="{_num(width)}" height="{_num(height)}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def ci_bars(rows: Sequence, *, title: str = "Score with 95% confidence interval") -> SafeString:
    """One line per model: the interval as a bar, the score as a dot."""
    rows = [r for r in rows if r.lower is not None and r.upper is not None]
    if not rows:
        return mark_safe("")
    low = min(r.lower for r in rows)
    high = max(r.upper for r in rows)
    pad = (high - low) * 0.05 or 10
    low, high = low - pad, high + pad
    label_w = _label_width([r.model.name for r in rows])
    left = label_w + LABEL_GAP
    plot_w = WIDTH - left - 20
    height = ROW_HEIGHT * len(rows) + 30

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    body = []
    for tick in _ticks(low, high):
        body.append(
            f'<line class="plot-grid" x1="{_num(x(tick))}" x2="{_num(x(tick))}" y1="0" '
            f'y2="{height - 22}"/><text class="plot-muted" x="{_num(x(tick))}" '
            f'y="{height - 6}" text-anchor="middle">{tick:g}</text>'
        )
    for i, row in enumerate(rows):
        y = ROW_HEIGHT * i + ROW_HEIGHT / 2
        body.append(
            _label(
                row.model.name,
                label_w,
                f'class="plot-text" x="{_num(label_w)}" y="{_num(y + 4)}" text-anchor="end"',
            )
            + f'<line class="plot-interval" x1="{_num(x(row.lower))}" x2="{_num(x(row.upper))}" '
            f'y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<circle class="plot-point" cx="{_num(x(row.rating))}" cy="{_num(y)}" r="4">'
            f"<title>{escape(row.model.name)}: {row.rating:.0f} "
            f"({row.lower:.0f} to {row.upper:.0f})</title></circle>"
        )
    return _svg(title, WIDTH, height, body, "plot-ci")


def heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    *,
    title: str,
    kind: str,
) -> SafeString:
    """A square matrix (row model vs column model). kind "win_rate" is diverging around 0.5
    (A colour above, B colour below); kind "count" shades one colour by count."""
    n = len(labels)
    if not n:
        return mark_safe("")
    label_w = _label_width(labels)
    left = label_w + LABEL_GAP
    cell = max(18, min(44, int(WIDTH - left) // n))
    # Column labels are rotated 60 degrees: they rise 0.87 of their length and lean right by
    # half of it, past the last column.
    top = 20 + int(label_w * 0.87)
    width = max(left + cell * n + 10, left + cell * (n - 0.5) + 4 + label_w * 0.5 + 10)
    height = top + cell * n + 10
    peak = max((v for row in matrix for v in row if v), default=1) or 1
    body = []
    for j, label in enumerate(labels):
        cx = left + cell * j + cell / 2
        body.append(
            _label(
                label,
                label_w,
                f'class="plot-text" transform="translate({_num(cx + 4)} {top - 6}) rotate(-60)"',
            )
        )
    for i, label in enumerate(labels):
        y = top + cell * i
        body.append(
            _label(
                label,
                label_w,
                f'class="plot-text" x="{_num(label_w)}" y="{_num(y + cell / 2 + 4)}" '
                'text-anchor="end"',
            )
        )
        for j in range(n):
            value = matrix[i][j]
            x = left + cell * j
            if value is None or i == j:
                shade, opacity, text = "plot-empty", 1.0, ""
            elif kind == "win_rate":
                shade = "plot-a" if value >= 0.5 else "plot-b"
                opacity = 0.15 + 0.85 * min(1.0, abs(value - 0.5) * 2)
                text = f"{value:.2f}"
            else:
                shade, opacity, text = "plot-accent", 0.1 + 0.9 * value / peak, f"{value:g}"
            tip = f"{labels[i]} vs {labels[j]}: {text or 'no battles'}"
            body.append(
                f'<rect class="{shade}" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                f'fill-opacity="{opacity:.2f}"><title>{escape(tip)}</title></rect>'
            )
            if text and cell >= 30:
                body.append(
                    f'<text class="plot-cell" x="{_num(x + cell / 2)}" '
                    f'y="{_num(y + cell / 2 + 4)}" text-anchor="middle">{text}</text>'
                )
    return _svg(title, width, height, body, "plot-heatmap")


def history(
    series: Sequence[tuple[str, Sequence[tuple[dt.datetime, float, float | None, float | None]]]],
    *,
    title: str = "Rating over time",
    band: bool = False,
) -> SafeString:
    """One line per model over snapshot times; `band` shades the interval (for one model)."""
    points = [p for _, values in series for p in values]
    if len({p[0] for p in points}) < 2:
        return mark_safe("")
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    bounded = [v for p in points for v in ((p[2], p[3]) if band else ()) if v is not None]
    low = min([p[1] for p in points] + bounded)
    high = max([p[1] for p in points] + bounded)
    pad = (high - low) * 0.08 or 10
    low, high = low - pad, high + pad
    left, right, top, bottom = 50, WIDTH - HISTORY_LABEL_WIDTH, 10, 230
    height = bottom + 30

    def x(when: dt.datetime) -> float:
        return left + (when.timestamp() - t0) / (t1 - t0) * (right - left)

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    body = []
    for tick in _ticks(low, high):
        body.append(
            f'<line class="plot-grid" x1="{left}" x2="{right}" y1="{_num(y(tick))}" '
            f'y2="{_num(y(tick))}"/><text class="plot-muted" x="{left - 6}" '
            f'y="{_num(y(tick) + 4)}" text-anchor="end">{tick:g}</text>'
        )
    start, end = min(p[0] for p in points), max(p[0] for p in points)
    fmt = "%Y-%m-%d" if (end - start).days >= 2 else "%m-%d %H:%M"
    for when, anchor in ((start, "start"), (end, "end")):
        body.append(
            f'<text class="plot-muted" x="{_num(x(when))}" y="{bottom + 18}" '
            f'text-anchor="{anchor}">{when.strftime(fmt)}</text>'
        )
    # Each line's end label sits beside its last point, moved apart so none overlaps another.
    ends = _spread(
        [y(values[-1][1]) + 4 if values else bottom for _, values in series],
        gap=13,
        low=top + 8,
        high=bottom + 4,
    )
    for k, (label, values) in enumerate(series):
        css = f"series-{k % SERIES_CLASSES}"
        if band:
            edges = [(x(p[0]), y(p[3])) for p in values if p[3] is not None] + [
                (x(p[0]), y(p[2])) for p in reversed(values) if p[2] is not None
            ]
            if edges:
                body.append(
                    f'<polygon class="plot-band {css}" points="'
                    + " ".join(f"{_num(a)},{_num(b)}" for a, b in edges)
                    + '"/>'
                )
        line = " ".join(f"{_num(x(p[0]))},{_num(y(p[1]))}" for p in values)
        body.append(f'<polyline class="plot-line {css}" points="{line}"/>')
        if values:
            score = f" {values[-1][1]:.0f}"
            room = HISTORY_LABEL_WIDTH - 10 - len(score) * CHAR_WIDTH
            shown = _fit(label, room)
            tip = f"<title>{escape(label)}{score}</title>" if shown != label else ""
            body.append(
                f'<text class="plot-label {css}" x="{right + 6}" y="{_num(ends[k])}">'
                f"{escape(shown)}{score}{tip}</text>"
            )
    return _svg(title, WIDTH, height, body, "plot-history")
