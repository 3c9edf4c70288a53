"""The Pareto front of speed vs quality, and its plot as inline SVG (no plotting library, no network)."""

from __future__ import annotations

import math
import re
import unicodedata
from html import escape as _html_escape

import numpy as np

# Unicode's explicit bidirectional controls (embeddings, overrides, isolates, marks): in text from a run
# (a prompt, a row id, a folder name) they could reorder the page around it, so they are never emitted
# raw; each shows as a visible ``[U+202E]`` marker instead.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_RTL_CLASSES = frozenset({"R", "AL", "AN"})


def plain(text: object) -> str:
    """``text`` as a string that cannot reorder its surroundings: bidi controls replaced by visible markers,
    lone surrogates (which UTF-8 cannot encode) by ``?``."""
    s = BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", str(text))
    return s.encode("utf-8", "replace").decode("utf-8")


def escape(text: object) -> str:
    """HTML-escaped (quotes too, so it is safe in attributes) :func:`plain` text."""
    return _html_escape(plain(text))


def isolate(text: object) -> str:
    """Escaped text for element content, in ``<bdi>`` when it holds right-to-left characters, so that it
    cannot reorder what follows it (pure left-to-right text is emitted as is)."""
    s = escape(text)
    if any(unicodedata.bidirectional(ch) in _RTL_CLASSES for ch in s):
        return f"<bdi>{s}</bdi>"
    return s


def pareto_front(cost: list[float], quality: list[float]) -> list[bool]:
    """``True`` where no other point is at most as costly and at least as good, and strictly
    better in one of the two. NaN points are never on the front."""
    c, q = np.asarray(cost, float), np.asarray(quality, float)
    ok = np.isfinite(c) & np.isfinite(q)
    front = []
    for i in range(len(c)):
        if not ok[i]:
            front.append(False)
            continue
        dominated = ok & (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        front.append(not dominated.any())
    return front


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _ticks_log(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks or [lo, hi]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def scatter_svg(points: list[dict], x_label: str, y_label: str, title: str, log_x: bool = True,
                width: int = 600, height: int = 420) -> str:
    """An SVG scatter of ``points`` (dicts with x, y, label, group, front) with the front drawn.

    Each point has a ``<title>`` (hover text) and a visible label; points group by colour.
    """
    # finite and not so extreme that the axis bounds (±50 % of the range, log ticks) overflow
    pts = [p for p in points if abs(p["y"]) < 1e300 and (1e-300 < p["x"] < 1e300 if log_x else abs(p["x"]) < 1e300)]
    ml, mr, mt, mb = 64, 150, 36, 48
    pw, ph = width - ml - mr, height - mt - mb
    out = [f'<svg class="pareto" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{ml}" y="20" class="title">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{ml}" y="{mt + ph / 2}">no points with finite {escape(x_label)} and {escape(y_label)}</text></svg>')
        return "".join(out)
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
    if log_x:
        x_lo, x_hi = min(xs) / 1.5, max(xs) * 1.5
        fx = lambda v: ml + pw * (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))  # noqa: E731
        xticks = _ticks_log(x_lo, x_hi)
    else:
        span = (max(xs) - min(xs)) or 1.0
        x_lo, x_hi = min(xs) - 0.1 * span, max(xs) + 0.1 * span
        fx = lambda v: ml + pw * (v - x_lo) / (x_hi - x_lo)  # noqa: E731
        xticks = list(np.linspace(x_lo, x_hi, 5))
    y_lo, y_hi = min(ys), max(ys)
    pad = 0.08 * ((y_hi - y_lo) or max(abs(y_hi), 1.0))
    y_lo, y_hi = y_lo - pad, y_hi + pad
    fy = lambda v: mt + ph * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    for v in xticks:
        out.append(f'<line x1="{fx(v):.1f}" x2="{fx(v):.1f}" y1="{mt}" y2="{mt + ph}" class="grid"/>'
                   f'<text x="{fx(v):.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tick">{_fmt(v)}</text>')
    for v in np.linspace(y_lo + pad, y_hi - pad, 5):
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{fy(v):.1f}" y2="{fy(v):.1f}" class="grid"/>'
                   f'<text x="{ml - 6}" y="{fy(v) + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(x_label)}'
               f'{" (log scale)" if log_x else ""}</text>'
               f'<text transform="translate(16 {mt + ph / 2}) rotate(-90)" text-anchor="middle" class="axis">'
               f'{escape(y_label)}</text>')
    front = sorted((p for p in pts if p["front"]), key=lambda p: p["x"])
    if front:
        path, prev_y = [], None
        for p in front:  # staircase: quality holds until the next frontier point
            if prev_y is not None:
                path.append(f"L{fx(p['x']):.1f},{fy(prev_y):.1f}")
            path.append(("M" if not path else "L") + f"{fx(p['x']):.1f},{fy(p['y']):.1f}")
            prev_y = p["y"]
        out.append(f'<path d="{" ".join(path)}" class="front"/>')
    groups = sorted({p["group"] for p in pts}, key=str)
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    placed: list[tuple[float, float]] = []
    for p in sorted(pts, key=lambda q: (fx(q["x"]), fy(q["y"]))):
        cx, cy = fx(p["x"]), fy(p["y"])
        right = cx > ml + 0.7 * pw  # labels near the right edge go to the left of their point
        lx, ly = (cx - 7, cy - 6) if right else (cx + 7, cy - 6)
        while any(abs(ly - py) < 11 and abs(lx - px) < 90 for px, py in placed):  # stagger clashing labels
            ly += 11
        placed.append((lx, ly))
        tip = f'{p["label"]}: {x_label} {_fmt(p["x"])}, {y_label} {_fmt(p["y"])}' + (" (Pareto front)" if p["front"] else "")
        anchor = ' text-anchor="end"' if right else ""
        out.append(f'<g class="point{" on-front" if p["front"] else ""}" data-label="{escape(p["label"])}">'
                   f'<title>{escape(tip)}</title>'
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if p["front"] else 4.5}" fill="{colour[p["group"]]}"/>'
                   f'<text x="{lx:.1f}" y="{ly:.1f}" class="label"{anchor}>{escape(p["short"])}</text></g>')
    for i, g in enumerate(groups):  # legend
        y = mt + 12 + 18 * i
        out.append(f'<circle cx="{ml + pw + 16}" cy="{y}" r="5" fill="{colour[g]}"/>'
                   f'<text x="{ml + pw + 26}" y="{y + 4}" class="legend">{escape(g)}</text>')
    if front:  # a plot without a front (latency vs NFE of timing-only runs) has no legend entry for one
        y = mt + 12 + 18 * len(groups)
        out.append(f'<line x1="{ml + pw + 10}" x2="{ml + pw + 22}" y1="{y}" y2="{y}" class="front"/>'
                   f'<text x="{ml + pw + 26}" y="{y + 4}" class="legend">Pareto front</text>')
    out.append("</svg>")
    return "".join(out)
