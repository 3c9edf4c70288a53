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


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi], about ``target`` of them and at least 3
    (at most one per representable value: a span of a few ulps cannot loop)."""
    span = hi - lo
    if not span > 0 or not math.isfinite(span):
        return [lo]
    raw = span / max(target - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))

    def ends(step: float) -> tuple[int, int]:  # the first and last multiples of step inside [lo, hi]
        return math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)

    def count(step: float) -> int:
        first, last = ends(step)
        return last - first + 1

    # the step whose count is nearest ``target`` among those giving 3 ticks or more (the larger on a tie);
    # mag ≤ span, so 0.2·mag always gives at least 4
    steps = [m * mag for m in (0.2, 0.5, 1, 2, 5, 10)]
    step = min(steps, key=lambda st: (abs(count(st) - target) if count(st) >= 3 else math.inf, -st))
    first, last = ends(step)
    return list(dict.fromkeys(k * step for k in range(first, last + 1)))


def _tick_text(v: float, percent: bool, step: float) -> str:
    if percent:
        digits = max(0, -math.floor(math.log10(step * 100) + 1e-9)) if step > 0 else 0
        return f"{100 * v:.{digits}f}%"
    if not step > 0:
        return f"{v:.3f}"
    exponent = math.floor(math.log10(step) + 1e-9)
    if exponent >= -6:
        return f"{v:.{max(0, -exponent)}f}"
    # a tiny step: as many significant digits as tell two ticks apart (3e-09; 1.0000002 beside 1.0000004)
    sig = max(1, math.floor(math.log10(max(abs(v), step)) + 1e-9) - exponent + 1)
    return f"{v:.{sig}g}"


LABEL_CHAR_PX = 5.6  # width of one character of a 10 px label (a safe over-estimate for system-ui)
LABEL_H = 11


def _place(cx: float, cy: float, width: float, boxes: list, bounds: tuple, points: list) -> tuple | None:
    """A label position near (cx, cy) whose box clashes with no placed label, no other point and stays
    inside ``bounds`` (x0, y0, x1, y1): (x, y, anchor), or None when every candidate clashes."""
    x0, y0, x1, y1 = bounds
    for dx, dy, anchor in ((7, 4, "start"), (-7, 4, "end"), (7, -7, "start"), (-7, -7, "end"), (7, 14, "start"),
                           (-7, 14, "end"), (0, -9, "middle"), (0, 19, "middle"), (9, -16, "start"), (-9, -16, "end"),
                           (9, 24, "start"), (-9, 24, "end")):
        lx, ly = cx + dx, cy + dy
        left = lx if anchor == "start" else lx - width if anchor == "end" else lx - width / 2
        box = (left, ly - LABEL_H + 2, left + width, ly + 2)
        if box[0] < x0 or box[2] > x1 or box[1] < y0 or box[3] > y1:
            continue
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            continue
        if any(box[0] - 3 < px < box[2] + 3 and box[1] - 3 < py < box[3] + 3 for px, py in points if (px, py) != (cx, cy)):
            continue
        boxes.append(box)
        return lx, ly, anchor
    return None


def _grid(out: list[str], fx, fy, box: tuple, xticks: list[float], xtext: list[str], y_lo: float, y_hi: float,
          percent: bool) -> None:
    """The plot frame, its vertical grid at ``xticks`` (labelled ``xtext``) and round y ticks."""
    ml, mt, pw, ph = box
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    for v, text in zip(xticks, xtext):
        out.append(f'<line x1="{fx(v):.1f}" x2="{fx(v):.1f}" y1="{mt}" y2="{mt + ph}" class="grid"/>'
                   f'<text x="{fx(v):.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tick">{text}</text>')
    yticks = nice_ticks(y_lo, y_hi)
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    for v in yticks:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{fy(v):.1f}" y2="{fy(v):.1f}" class="grid"/>'
                   f'<text x="{ml - 6}" y="{fy(v) + 4:.1f}" text-anchor="end" class="tick">'
                   f'{_tick_text(v, percent, ystep)}</text>')


def _svg_open(cls: str, width: int, height: int, title: str, ml: int) -> list[str]:
    return [f'<svg class="{cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
            f'<text x="{ml}" y="20" class="title">{escape(title)}</text>']


def _svg_empty(out: list[str], x: float, y: float, message: str) -> str:
    out.append(f'<text x="{x}" y="{y}">{escape(message)}</text></svg>')
    return "".join(out)


def scatter_svg(points: list[dict], x_label: str, y_label: str, title: str, log_x: bool = True,
                width: int = 640, height: int = 440, percent: bool = False, groups: list | None = None) -> str:
    """An SVG scatter of ``points`` (dicts with x, y, label, short, group, front, optional ``err``: the
    half-width of the point's 95 % interval on y) with the Pareto front drawn.

    Every point has a ``<title>`` (hover text: name, both values, interval); its visible label is placed
    where it overlaps no other label or point, and left out (the count said above the plot) where no
    place is free. Ticks are round values; ``percent`` shows y (a rate in [0, 1]) in percent. ``groups``:
    every group of the page in order, so that a method keeps its colour from plot to plot."""
    # finite and not so extreme that the axis bounds (±50 % of the range, log ticks) overflow
    pts = [p for p in points if abs(p["y"]) < 1e300 and (1e-300 < p["x"] < 1e300 if log_x else abs(p["x"]) < 1e300)]
    ml, mr, mt, mb = 64, 150, 36, 48
    pw, ph = width - ml - mr, height - mt - mb
    out = _svg_open("pareto", width, height, title, ml)
    if not pts:
        return _svg_empty(out, ml, mt + ph / 2, f"no points with finite {x_label} and {y_label}")
    err = {}  # id → (below, above): half-widths of the 95 % interval (a rate's is clipped to [0, 1])
    for p in pts:
        e = p.get("err")
        if e is None:
            continue
        lo, hi = (e, e) if not isinstance(e, (tuple, list)) else e
        if all(math.isfinite(float(v)) and 0 <= float(v) < 1e300 for v in (lo, hi)):
            err[id(p)] = (float(lo), float(hi))
    xs = [p["x"] for p in pts]
    if log_x:
        x_lo, x_hi = min(xs) / 1.5, max(xs) * 1.5
        fx = lambda v: ml + pw * (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))  # noqa: E731
        xticks = _ticks_log(x_lo, x_hi)
        xtext = [_fmt(v) for v in xticks]
    else:
        span = (max(xs) - min(xs)) or 1.0
        x_lo, x_hi = min(xs) - 0.1 * span, max(xs) + 0.1 * span
        fx = lambda v: ml + pw * (v - x_lo) / (x_hi - x_lo)  # noqa: E731
        xticks = nice_ticks(x_lo, x_hi)
        step = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
        xtext = [_tick_text(v, False, step) for v in xticks]
    y_lo = min(p["y"] - err.get(id(p), (0.0, 0.0))[0] for p in pts)
    y_hi = max(p["y"] + err.get(id(p), (0.0, 0.0))[1] for p in pts)
    pad = 0.08 * ((y_hi - y_lo) or max(abs(y_hi), 1.0))
    y_lo, y_hi = y_lo - pad, y_hi + pad
    fy = lambda v: mt + ph * (1 - (v - y_lo) / (y_hi - y_lo))  # noqa: E731
    _grid(out, fx, fy, (ml, mt, pw, ph), xticks, xtext, y_lo, y_hi, percent)
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(x_label)}'
               f'{" (log scale)" if log_x else ""}</text>'
               f'<text transform="translate(16 {mt + ph / 2}) rotate(-90)" text-anchor="middle" class="axis">'
               f'{escape(y_label)}{" (%)" if percent else ""}{"; bars: 95% interval" if err else ""}</text>')
    front = sorted((p for p in pts if p["front"]), key=lambda p: p["x"])
    if front:
        path, prev_y = [], None
        for p in front:  # staircase: quality holds until the next frontier point
            if prev_y is not None:
                path.append(f"L{fx(p['x']):.1f},{fy(prev_y):.1f}")
            path.append(("M" if not path else "L") + f"{fx(p['x']):.1f},{fy(p['y']):.1f}")
            prev_y = p["y"]
        out.append(f'<path d="{" ".join(path)}" class="front"/>')
    every = list(groups) if groups else []
    every += sorted({p["group"] for p in pts} - set(every), key=str)
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(every)}
    groups = [g for g in every if any(p["group"] == g for p in pts)]
    centres = [(fx(p["x"]), fy(p["y"])) for p in pts]
    boxes: list = []
    hidden = 0
    fmt_y = (lambda v: f"{100 * v:.1f}%") if percent else _fmt  # noqa: E731
    # front points first, then left to right: the labels that matter most get the free places
    for p in sorted(pts, key=lambda q: (not q["front"], fx(q["x"]), fy(q["y"]))):
        cx, cy = fx(p["x"]), fy(p["y"])
        e = err.get(id(p))
        tip = (f'{p["label"]}: {x_label} {_fmt(p["x"])}, {y_label} {fmt_y(p["y"])}'
               + (f" (95% interval {fmt_y(p['y'] - e[0])} to {fmt_y(p['y'] + e[1])})" if e is not None else "")
               + (" (Pareto front)" if p["front"] else ""))
        bar = (f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{fy(p["y"] - e[0]):.1f}" y2="{fy(p["y"] + e[1]):.1f}" '
               f'class="err" stroke="{colour[p["group"]]}"/>' if e and max(e) > 0 else "")
        spot = _place(cx, cy, LABEL_CHAR_PX * len(str(p["short"])), boxes, (ml, mt, ml + pw, mt + ph), centres)
        label = ""
        if spot is None:
            hidden += 1
        else:
            lx, ly, anchor = spot
            label = (f'<text x="{lx:.1f}" y="{ly:.1f}" class="label"'
                     f'{"" if anchor == "start" else f" text-anchor={chr(34)}{anchor}{chr(34)}"}>{escape(p["short"])}</text>')
        out.append(f'<g class="point{" on-front" if p["front"] else ""}" data-label="{escape(p["label"])}">'
                   f'<title>{escape(tip)}</title>{bar}'
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if p["front"] else 4.5}" fill="{colour[p["group"]]}"/>'
                   f'{label}</g>')
    if hidden:
        out.append(f'<text x="{ml + pw}" y="{mt - 6}" text-anchor="end" class="tick">{hidden} label'
                   f'{"s" if hidden > 1 else ""} left out (they would overlap): hover a point</text>')
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


def line_svg(series: dict[str, list[tuple[float, float, float]]], x_label: str, y_label: str, title: str,
             percent: bool = False, width: int = 560, height: int = 360) -> str:
    """Lines of ``(x, y, err)`` points, one per series, each with its band ``y ± err`` (a 95 % interval;
    a rate's band is kept inside [0, 1]); round ticks, a legend. Each point has a ``<title>``."""
    pts = {k: sorted((float(x), float(y), float(e)) for x, y, e in v if math.isfinite(x) and math.isfinite(y))
           for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    ml, mr, mt, mb = 64, 170, 36, 48
    pw, ph = width - ml - mr, height - mt - mb
    out = _svg_open("curve", width, height, title, ml)
    if not pts:
        return _svg_empty(out, ml, mt + ph / 2, "no points")
    lo_hi = lambda y, e: (max(y - e, 0.0), min(y + e, 1.0)) if percent else (y - e, y + e)  # noqa: E731
    xs = [x for v in pts.values() for x, _, _ in v]
    ys = [b for v in pts.values() for _, y, e in v for b in lo_hi(y, e)]
    x_lo, x_hi = min(0.0, min(xs)), max(xs) * 1.05 or 1.0
    y_lo, y_hi = min(ys), max(ys)
    pad = 0.08 * ((y_hi - y_lo) or max(abs(y_hi), 1.0))
    y_lo, y_hi = y_lo - pad, y_hi + pad
    fx = lambda v: ml + pw * (v - x_lo) / ((x_hi - x_lo) or 1.0)  # noqa: E731
    fy = lambda v: mt + ph * (1 - (v - y_lo) / ((y_hi - y_lo) or 1.0))  # noqa: E731
    xt = nice_ticks(x_lo, x_hi)
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    _grid(out, fx, fy, (ml, mt, pw, ph), xt, [_tick_text(v, False, xstep) for v in xt], y_lo, y_hi, percent)
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(x_label)}</text>'
               f'<text transform="translate(16 {mt + ph / 2}) rotate(-90)" text-anchor="middle" class="axis">'
               f'{escape(y_label)}{" (%)" if percent else ""}</text>')
    fmt_y = (lambda v: f"{100 * v:.1f}%") if percent else _fmt  # noqa: E731
    for i, (name, v) in enumerate(pts.items()):
        c = PALETTE[i % len(PALETTE)]
        upper = [f"{fx(x):.1f},{fy(lo_hi(y, e)[1]):.1f}" for x, y, e in v]
        lower = [f"{fx(x):.1f},{fy(lo_hi(y, e)[0]):.1f}" for x, y, e in reversed(v)]
        out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{c}" opacity="0.15" class="band"/>')
        out.append(f'<polyline points="{" ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in v)}" fill="none" '
                   f'stroke="{c}" stroke-width="2" class="line"/>')
        for x, y, e in v:
            lo, hi = lo_hi(y, e)
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3.5" fill="{c}"><title>{escape(name)}: '
                       f'{escape(x_label)} {_fmt(x)}, {escape(y_label)} {fmt_y(y)} (95% {fmt_y(lo)} to {fmt_y(hi)})'
                       f'</title></circle>')
        y = mt + 12 + 18 * i
        out.append(f'<line x1="{ml + pw + 10}" x2="{ml + pw + 24}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2"/>'
                   f'<text x="{ml + pw + 30}" y="{y + 4}" class="legend">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
