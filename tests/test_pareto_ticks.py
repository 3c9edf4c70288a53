"""The plots' axes and labels (reports/pareto.py), checked against their definitions: round ticks that
cover the range, tick text with exactly the digits the step needs, log ticks that are every 1-2-5 value
in range, labels that never overlap a label or a point and stay inside the plot, and text that cannot
reorder the page. These are what a reader takes numbers from, so `make mutate` pairs them with the module."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tmd_bench.reports.pareto import (LABEL_CHAR_PX, LABEL_H, _grid, _place, _tick_text, _ticks_log, nice_ticks,
                                      plain)

FAST = settings(max_examples=150, deadline=None, database=None)


def _snap_125(step: float) -> float | None:
    """The 1-2-5 value ``step`` is (to float error), else None."""
    e = math.floor(math.log10(step))
    for m in (1, 2, 5, 10):
        if abs(step - m * 10.0 ** e) <= 1e-6 * step:
            return m * 10.0 ** e
    return None


ranges = st.tuples(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6)).map(lambda t: (t[0], t[0] + t[1]))


@FAST
@given(ranges, st.integers(3, 12))
def test_nice_ticks_are_round_evenly_spaced_and_cover_the_range(r, target):
    lo, hi = r
    assume(hi - lo > 1e-5 * abs(lo))  # ticks k·step then differ by far more than float error (ulps: below)
    t = nice_ticks(lo, hi, target)
    assert len(t) >= 3
    step = _snap_125((t[-1] - t[0]) / (len(t) - 1))
    assert step is not None
    tol = 1e-6 * step
    assert all(abs((b - a) - step) <= tol + 1e-12 * abs(b) for a, b in zip(t, t[1:]))
    assert all(abs(v / step - round(v / step)) < 1e-6 for v in t)  # each tick a multiple of the step
    assert lo - tol <= t[0] < lo + step + tol and hi - step - tol < t[-1] <= hi + tol  # covers: no gap at an end
    # about `target` of them: no other 1-2-5 step is nearer the target while giving 3 ticks or more
    def count(s):
        return math.floor(hi / s + 1e-9) - math.ceil(lo / s - 1e-9) + 1
    best = min(abs(count(m * 10.0 ** e) - target) for e in range(-8, 8) for m in (1, 2, 5)
               if count(m * 10.0 ** e) >= 3)
    assert abs(len(t) - target) == best


def test_nice_ticks_exact_cases_and_degenerate_ranges():
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.0, 1.0, target=3) == pytest.approx([0.0, 0.5, 1.0])
    assert nice_ticks(0.0, 1.0, target=11) == pytest.approx([i / 10 for i in range(11)])
    assert nice_ticks(0.0, 1.0, target=2) == pytest.approx([0.0, 0.5, 1.0])  # never fewer than 3
    # steps 0.1 and up give 2 ticks or fewer here: the finer 0.05 (before, 2 ticks: [1.7, 1.8])
    assert nice_ticks(1.625, 1.875, target=3) == pytest.approx([1.65, 1.7, 1.75, 1.8, 1.85])
    assert nice_ticks(-7.0, 13.0) == pytest.approx([-5.0, 0.0, 5.0, 10.0])
    assert nice_ticks(2.0, 2.0) == [2.0] and nice_ticks(3.0, 1.0) == [3.0]
    # a span of one ulp far from 0 ends (the old accumulating loop never did: v + step == v)
    lo = 1e17
    t = nice_ticks(lo, math.nextafter(lo, 2e17))
    assert 1 <= len(t) <= 2 and len(set(t)) == len(t)
    assert nice_ticks(-1e308, 1e308) == [-1e308]  # the span overflows: one tick, no crash


@pytest.mark.parametrize("v, percent, step, text", [
    (0.5, True, 0.1, "50%"), (0.5, True, 0.05, "50%"), (0.505, True, 0.005, "50.5%"), (0.5, True, 0.001, "50.0%"),
    (0.12345, True, 0.0001, "12.35%"), (0.5, True, 0.0, "50%"),
    (0.4, False, 0.2, "0.4"), (0.25, False, 0.05, "0.25"), (10.0, False, 5.0, "10"), (1500.0, False, 500.0, "1500"),
    (0.0035, False, 0.0005, "0.0035"), (3e-9, False, 1e-9, "3e-09"), (0.5, False, 0.0, "0.500"),
])
def test_tick_text_shows_the_digits_the_step_needs(v, percent, step, text):
    assert _tick_text(v, percent, step) == text


@FAST
@given(ranges, st.booleans())
def test_tick_texts_are_distinct_exact_and_carry_no_spare_digit(r, percent):
    lo, hi = r
    assume(hi - lo > 1e-5 * abs(lo))
    if percent:
        lo, hi = lo * 1e-6, hi * 1e-6  # rates
    t = nice_ticks(lo, hi)
    if len(t) < 2:
        return
    step = t[1] - t[0]
    texts = [_tick_text(v, percent, step) for v in t]
    assert len(set(texts)) == len(texts)
    scale = 100 if percent else 1
    for v, s in zip(t, texts):
        assert abs(float(s.rstrip("%")) - scale * v) <= 1e-6 * scale * step + 1e-9 * abs(scale * v)
    decimals = [len(s.rstrip("%").partition(".")[2]) for s in texts]
    if max(decimals) > 0 and "e" not in texts[0]:
        assert any(s.rstrip("%")[-1] != "0" for s in texts)  # one digit fewer would merge two ticks


def _every_125(lo: float, hi: float) -> list[float]:
    return sorted(float(f"{m}e{e}") for e in range(-30, 31) for m in (1, 2, 5) if lo <= float(f"{m}e{e}") <= hi)


@pytest.mark.parametrize("lo, hi", [(1, 100), (0.03, 0.4), (0.667, 1.5e4), (1e-7, 3e-6), (20, 20)])
def test_log_ticks_are_every_1_2_5_value_in_range(lo, hi):
    assert _ticks_log(lo, hi) == pytest.approx(_every_125(lo, hi))


def test_log_ticks_fall_back_to_the_ends_when_no_1_2_5_value_is_inside():
    assert _ticks_log(3, 4) == [3, 4] and _ticks_log(0.6, 0.9) == [0.6, 0.9]


@FAST
@given(st.floats(1e-9, 1e9), st.floats(1.01, 1e4))
def test_log_ticks_property(lo, ratio):
    hi = lo * ratio
    expect = _every_125(lo, hi)
    assert _ticks_log(lo, hi) == (pytest.approx(expect) if expect else [lo, hi])


def test_grid_draws_each_tick_where_its_value_is_and_labels_it():
    out: list[str] = []
    fx = lambda v: 100 + 10 * v  # noqa: E731
    fy = lambda v: 300 - 200 * v  # noqa: E731
    _grid(out, fx, fy, (100, 50, 400, 250), [1.0, 2.0, 5.0], ["1", "2", "5"], 0.0, 1.0, True)
    svg = "".join(out)
    assert '<rect x="100" y="50" width="400" height="250" class="frame"/>' in svg
    xs = re.findall(r'<line x1="([\d.]+)" x2="([\d.]+)" y1="50" y2="300" class="grid"/>'
                    r'<text x="([\d.]+)" y="316" text-anchor="middle" class="tick">([^<]*)</text>', svg)
    assert [(float(a), float(b), float(c), t) for a, b, c, t in xs] == [(110, 110, 110, "1"), (120, 120, 120, "2"),
                                                                         (150, 150, 150, "5")]
    ys = re.findall(r'<line x1="100" x2="500" y1="([\d.]+)" y2="([\d.]+)" class="grid"/>'
                    r'<text x="94" y="([\d.]+)" text-anchor="end" class="tick">([^<]*)</text>', svg)
    assert [(float(a), float(b), float(c), t) for a, b, c, t in ys] == [
        (fy(v), fy(v), round(fy(v) + 4, 1), f"{round(100 * v)}%") for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    out = []
    _grid(out, fx, fy, (100, 50, 400, 250), [], [], 0.0, 2.0, False)  # y in plain numbers, no x ticks
    assert re.findall(r'class="tick">([^<]*)<', "".join(out)) == ["0.0", "0.5", "1.0", "1.5", "2.0"]


def _box(x, y, anchor, width):
    left = x if anchor == "start" else x - width if anchor == "end" else x - width / 2
    return left, y - LABEL_H + 2, left + width, y + 2


@FAST
@given(st.lists(st.tuples(st.floats(0, 400), st.floats(0, 300), st.integers(1, 14)), min_size=1, max_size=40))
def test_placed_labels_overlap_no_label_or_point_and_stay_inside(specs):
    bounds = (0.0, 0.0, 400.0, 300.0)
    points = [(x, y) for x, y, _ in specs]
    boxes: list = []
    placed = []
    for (cx, cy, n) in specs:
        before = len(boxes)
        spot = _place(cx, cy, LABEL_CHAR_PX * n, boxes, bounds, points)
        if spot is None:
            assert len(boxes) == before
            continue
        box = _box(*spot, LABEL_CHAR_PX * n)
        assert boxes[-1] == pytest.approx(box) and len(boxes) == before + 1
        assert bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
        # near its own point: within 25 px of it on each axis
        assert box[0] - 25 <= cx <= box[2] + 25 and box[1] - 25 <= cy <= box[3] + 25
        for other in placed:
            assert not (box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3])
        for px, py in points:
            if (px, py) != (cx, cy):
                assert not (box[0] - 3 < px < box[2] + 3 and box[1] - 3 < py < box[3] + 3)
        placed.append(box)


def test_place_prefers_right_of_the_point_then_left_then_gives_up():
    bounds = (0, 0, 400, 300)
    boxes: list = []
    assert _place(100, 100, 30, boxes, bounds, [(100, 100)]) == (107, 104, "start")
    assert _place(395, 100, 30, [], bounds, [(395, 100)]) == (388, 104, "end")  # no room on the right
    # a crowd of points around (200, 150) leaves no free place
    crowd = [(200 + dx, 150 + dy) for dx in range(-60, 61, 4) for dy in range(-40, 41, 4)]
    boxes = []
    assert _place(200, 150, 30, boxes, bounds, crowd) is None and boxes == []


def test_plain_text_cannot_reorder_the_page():
    for ch in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert plain(f"a{ch}b") == f"a[U+{ord(ch):04X}]b"
    assert plain("x\ud800y") == "x?y"  # a lone surrogate UTF-8 cannot encode
    assert plain("tmd-M2 α→β ✓") == "tmd-M2 α→β ✓" and plain(3.5) == "3.5"
    assert plain("\u2065\u202f") == "\u2065\u202f"  # neighbours of the bidi ranges are not controls


def test_survivors_of_the_pareto_mutation_run_are_pinned():
    """Mutants `make mutate` found alive in reports/pareto.py, each killed by its exact case."""
    from tmd_bench.reports.pareto import isolate, pareto_front

    # a tie in |count − target| goes to the larger step (0.1 and 0.2 both give 1 tick off the target of 4)
    assert nice_ticks(0.0, 0.4, 4) == [0.0, 0.2, 0.4]
    assert nice_ticks(0.0, 1.2, 5) == [0.0, 0.5, 1.0]
    # steps that are exact powers of ten: log10 is exact there, so the 1e-9 guard must round up, not down
    assert _tick_text(0.3, False, 0.1) == "0.3" and _tick_text(3.0, False, 1.0) == "3"
    assert _tick_text(0.05, False, 0.001) == "0.050" and _tick_text(20.0, False, 10.0) == "20"
    assert _tick_text(2e-6, False, 1e-6) == "0.000002" and _tick_text(2e-7, False, 1e-7) == "2e-07"
    assert _tick_text(0.25, True, 0.05) == "25%" and _tick_text(0.25, True, 0.001) == "25.0%"
    # left-to-right text is emitted as it is; only right-to-left text is isolated
    assert isolate("tmd-M2 <a>") == "tmd-M2 &lt;a&gt;" and isolate("שלום") == "<bdi>שלום</bdi>"
    # a missing value (None, as pandas hands over an empty object column) is never on the front
    assert pareto_front([1.0, None, 3.0], [0.5, 0.9, 0.6]) == [True, False, True]
    assert pareto_front([1.0, 2.0], [None, 0.4]) == [False, True]
