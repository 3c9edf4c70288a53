"""Rows pooled over seed draws, matched baselines, claim verdicts, and the plots that show them."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from tmd_bench.reports import pooled
from tmd_bench.reports.pareto import nice_ticks, scatter_svg


def _draw(seed, rate, fd, n=4, row_id="tmd-M2-N2H2", **extra):
    return {"row_id": row_id, "method": "tmd", "steps": 2, "teacher": "shapes", "suite": "shapes-eval",
            "num_clips": n, "seed": seed, "all_correct": rate, "acc_shape": rate, "fd_real": fd,
            "latency_total_s": 0.05, "effective_nfe": 2.5, "run": f"eval-{seed}", **extra}


def test_pooled_row_is_the_mean_of_its_draws_with_errors_over_clips_and_draws():
    df = pd.DataFrame([_draw(0, 0.5, 0.1), _draw(1000, 1.0, 0.3), _draw(2000, 0.75, 0.2)])
    (row,) = pooled.pool_rows(df).to_dict("records")
    assert row["all_correct"] == pytest.approx(0.75) and row["fd_real"] == pytest.approx(0.2)
    assert row["num_clips"] == 12 and row["draws"] == 3 and row["seeds"] == "0,1000,2000"
    assert row["all_correct_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 12))  # binomial over the pooled clips
    assert row["fd_real_se"] == pytest.approx(np.std([0.1, 0.3, 0.2], ddof=1) / math.sqrt(3))  # over draws
    assert "latency_total_s_se" not in row  # a cost, not a quality metric: no interval


def test_a_single_draw_is_left_as_it_is():
    (row,) = pooled.pool_rows(pd.DataFrame([_draw(0, 0.5, 0.1)])).to_dict("records")
    assert row["draws"] == 1 and row["all_correct"] == 0.5 and "fd_real_se" not in row


@pytest.mark.parametrize("change", [{"steps": 4}, {"suite": "shapes-novel"}, {"oracle_version": 2}])
def test_draws_of_different_configurations_are_not_pooled(change):
    a = _draw(0, 0.5, 0.1, oracle_version=3)
    b = {**_draw(1000, 0.5, 0.1, oracle_version=3), **change}
    with pytest.raises(pooled.PoolError, match="differ in"):
        pooled.pool_rows(pd.DataFrame([a, b]))


def test_two_draws_with_one_seed_are_not_pooled():
    with pytest.raises(pooled.PoolError, match="--seed 0"):
        pooled.pool_rows(pd.DataFrame([_draw(0, 0.5, 0.1), _draw(0, 0.7, 0.1)]))


def test_matched_baselines():
    rows = {"dmd2-s1", "dmd2-s2", "dmd2-s2-novel", "tmd-M2-N2H2", "rcm-s4", "teacher-euler-s50"}
    assert pooled.matched_baseline("tmd-M2-N2H2", rows) == "dmd2-s2"
    assert pooled.matched_baseline("tmd-M2-N1H2", rows) == "dmd2-s2"
    assert pooled.matched_baseline("tmd-M1-N2H2", rows) == "dmd2-s1"
    assert pooled.matched_baseline("tmd-M2-N2H2-novel", rows) == "dmd2-s2-novel"
    assert pooled.matched_baseline("tmd-M2-N2H2-stage1", rows) == "tmd-M2-N2H2"
    # stage 2 from the teacher ships as the plain row: stage 1 is then matched with the stage 2 trained from it
    two = rows | {"tmd-M2-N2H2-tmmf", "dmd2-s1-nokd"}
    assert pooled.matched_baseline("tmd-M2-N2H2-stage1", two) == "tmd-M2-N2H2-tmmf"
    assert pooled.matched_baseline("tmd-M2-N2H2-tmmf", two) == "dmd2-s2"  # a variant: its method's baseline
    assert pooled.matched_baseline("dmd2-s1-nokd", two) is None
    assert pooled.matched_baseline("kd-s1", rows) == "dmd2-s1" and pooled.matched_baseline("rcm-s2", rows) == "dmd2-s2"
    assert pooled.matched_baseline("rcm-s4", rows) is None  # no DMD2-v at 4 steps evaluated
    assert pooled.matched_baseline("dmd2-s2", rows) is None and pooled.matched_baseline("teacher-euler-s8", rows) is None
    assert pooled.split_tag("teacher-euler-s50-novel") == ("teacher-euler-s50", "-novel")


@pytest.mark.parametrize("kind,lo,hi,expected", [
    ("≥", 0.1, 3.0, "reproduced"), ("≥", -0.1, 3.0, "tie"), ("≥", -4.0, -0.2, "not reproduced"),
    ("close", -4.9, 1.0, "reproduced"), ("close", -6.0, 1.0, "undecided"), ("close", -9.0, -5.5, "not reproduced"),
    ("≥", float("nan"), float("nan"), "not tested")])
def test_claim_verdicts_follow_the_interval(kind, lo, hi, expected):
    assert pooled.verdict(kind, lo, hi) == expected


def _write_run(root, seed, outcomes):
    """A run folder as `tmd-bench evaluate` writes it: results.csv and per_clip/<row>.csv."""
    (root / "per_clip").mkdir(parents=True)
    rows = []
    for row_id, ok in outcomes.items():
        prompts = [f"a small red circle moving left on a black background #{i}" for i in range(len(ok))]
        pd.DataFrame({"prompt": prompts, "seed": [seed + i for i in range(len(ok))], "all_correct": ok}).to_csv(
            root / "per_clip" / f"{row_id}.csv", index=False)
        rows.append({**_draw(seed, float(np.mean(ok)), 0.1, n=len(ok), row_id=row_id),
                     "method": row_id.split("-")[0]})
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)


def test_claims_and_gaps_pair_clips_over_every_draw(tmp_path):
    rng = np.random.default_rng(0)
    runs = []
    for d in range(3):
        base = rng.random(40) < 0.8
        better = base | (rng.random(40) < 0.5)  # TMD correct wherever DMD2-v is, and more often
        _write_run(tmp_path / f"d{d}", 1000 * d, {"teacher-euler-s50": base, "dmd2-s2": base, "tmd-M2-N1H2": better})
        runs.append(tmp_path / f"d{d}")
    claims = {c["claim"]: c for c in pooled.claims(runs, ["teacher-euler-s50", "dmd2-s2", "tmd-M2-N1H2"])}
    c = claims["TMD ≥ DMD2-v at matched effective NFE (2 = 2)"]
    assert c["paired"] == 120 and c["verdict"] == "reproduced" and c["lo"] > 0
    assert "tmd-bench gap" in c["command"] and "--baseline dmd2-s2 --rows tmd-M2-N1H2" in c["command"]
    assert claims["TMD ≥ rCM at matched effective NFE (2 = 2)"]["verdict"] == "not tested"
    gaps = pooled.gap_table(runs, ["teacher-euler-s50", "dmd2-s2", "tmd-M2-N1H2"])
    kinds = {(g["row_id"], g["comparison"]) for g in gaps}
    assert ("tmd-M2-N1H2", "vs matched baseline") in kinds and ("dmd2-s2", "vs teacher 50 steps") in kinds
    g = next(g for g in gaps if g["row_id"] == "tmd-M2-N1H2" and g["comparison"] == "vs matched baseline")
    assert g["diff"] == pytest.approx(c["diff"]) and g["paired"] == 120


def test_variant_rows_are_compared_on_their_own_suite_and_ablation_claims_name_their_command(tmp_path):
    rng = np.random.default_rng(1)
    runs = []
    rows = ["teacher-euler-s50", "dmd2-s1-nokd", "tmd-M2-N2H2-tmmf", "tmd-M2-N2H2-stage1", "dmd2-s2"]
    for d in range(2):
        _write_run(tmp_path / f"d{d}", 1000 * d, {r: rng.random(30) < 0.7 for r in rows})
        runs.append(tmp_path / f"d{d}")
    gaps = {(g["row_id"], g["comparison"]): g["baseline"] for g in pooled.gap_table(runs, rows)}
    assert gaps[("dmd2-s1-nokd", "vs teacher 50 steps")] == "teacher-euler-s50"  # not "teacher-euler-s50-nokd"
    assert gaps[("tmd-M2-N2H2-tmmf", "vs matched baseline")] == "dmd2-s2"
    assert gaps[("tmd-M2-N2H2-stage1", "vs matched baseline")] == "tmd-M2-N2H2-tmmf"
    claims = {c["claim"]: c for c in pooled.claims(runs, rows)}
    plain = claims["TM-MF stage 1 ≥ plain TM stage 1 (stage 2 from each)"]
    assert plain["verdict"] == "not tested" and "tmd-bench curves runs/ablation/" in plain["why"]
    assert claims["stage 2 (DMD2-v through the head's rollout) ≥ stage 1 alone"]["paired"] == 60


def test_report_pools_draws_and_writes_the_claims_and_gap_tables(tmp_path):
    from tmd_bench.reports.html import build_report

    runs = []
    for d in range(2):
        ok = np.arange(20) % (3 + d) != 0
        _write_run(tmp_path / f"eval-{d}", 1000 * d, {"teacher-euler-s50": ok, "dmd2-s2": ok, "tmd-M2-N1H2": ok})
        runs.append(tmp_path / f"eval-{d}")
    csv_path, html_path = build_report(runs, tmp_path / "report", pool=True)
    df = pd.read_csv(csv_path)
    assert len(df) == 3 and set(df["draws"]) == {2} and set(df["num_clips"]) == {40}
    assert (tmp_path / "report" / "claims.csv").is_file() and (tmp_path / "report" / "gaps.csv").is_file()
    html = html_path.read_text()
    assert "The paper's claims on this world" in html and "Paired gaps" in html and "bars: 95% interval" in html
    md = (tmp_path / "report" / "report.md").read_text()  # what the README pastes: generated, never typed
    claim = pooled.claims(runs, list(df["row_id"]))[0]
    assert f"| {claim['claim']} | `tmd-M2-N1H2` | `dmd2-s2` | {pooled.fmt_gap(claim)} | **{claim['verdict']}** |" in md
    row = df.set_index("row_id").loc["tmd-M2-N1H2"]
    assert f"| `tmd-M2-N1H2` |" in md and f"{100 * row['all_correct']:.1f}% ± {100 * row['all_correct_se']:.1f}" in md


def test_nice_ticks_are_round():
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    for lo, hi in ((0.137, 0.962), (3.3, 97.0), (-0.02, 0.41)):
        t = nice_ticks(lo, hi)
        step = t[1] - t[0]
        assert all(abs(b - a - step) < 1e-9 for a, b in zip(t, t[1:]))
        assert re.fullmatch(r"[125]0*", f"{step:.10e}".split("e")[0].replace(".", "").rstrip("0") or "1")
        assert lo - 1e-9 <= t[0] and t[-1] <= hi + 1e-9 and 4 <= len(t) <= 7


def _boxes(svg):
    """(x0, y0, x1, y1) of each visible label, from its position, anchor and length."""
    out = []
    for m in re.finditer(r'<text x="([\d.]+)" y="([\d.]+)" class="label"(?: text-anchor="(\w+)")?>([^<]*)</text>', svg):
        x, y, anchor, text = float(m[1]), float(m[2]), m[3] or "start", m[4]
        w = 5.6 * len(text)
        left = x if anchor == "start" else x - w if anchor == "end" else x - w / 2
        out.append((left, y - 9, left + w, y + 2))
    return out


@pytest.mark.parametrize("n", [16, 19, 30])  # 0, 1 and 4 labels left out
def test_plot_labels_never_overlap_and_every_point_keeps_its_name(n):
    """Points crowded as the demo's are: no two visible labels overlap; a point whose label found
    no free place still names itself on hover, and the plot says how many were left out."""
    rng = np.random.default_rng(3)
    pts = [{"x": float(x), "y": float(y), "label": f"row-{i}", "short": f"method-s{i}", "group": f"g{i % 4}",
            "front": i < 3, "err": 0.05} for i, (x, y) in enumerate(zip(rng.uniform(0.03, 0.2, n), rng.uniform(0.8, 1.0, n)))]
    svg = scatter_svg(pts, "latency", "all_correct", "t", percent=True)
    boxes = _boxes(svg)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert svg.count("<title>") == n and svg.count('class="err"') == n
    hidden = n - len(boxes)
    assert len(boxes) >= 8  # most points keep a visible label
    assert (f">{hidden} label{'s' if hidden > 1 else ''} left out" in svg) == (hidden > 0)  # the count, exactly
    assert svg.count("left out") == (hidden > 0)
    assert "100%" in svg or "90%" in svg  # percent ticks


def test_error_bars_of_a_rate_stay_inside_0_and_1():
    from tmd_bench.reports.html import _err

    row = pd.Series({"all_correct": 0.98, "all_correct_se": 0.05})
    lo, hi = _err(row, "all_correct_se", percent=True)
    assert hi == pytest.approx(0.02) and lo == pytest.approx(1.96 * 0.05)


def _svg_reader(svg: str):
    """Read a scatter back the way a reader's eye does: tick values at their pixel positions, points at
    theirs. Returns (circles, x ticks, y ticks, root) with ticks as (pixel, value)."""
    import xml.etree.ElementTree as ET

    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)

    def value(text):
        return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)

    xt, yt = [], []
    for t in root.findall("s:text", ns):
        if t.get("class") != "tick" or t.text is None or "left out" in t.text:
            continue
        if t.get("text-anchor") == "middle":
            xt.append((float(t.get("x")), value(t.text)))
        elif t.get("text-anchor") == "end":
            yt.append((float(t.get("y")) - 4, value(t.text)))
    points = []
    for g in root.findall("s:g", ns):
        c = g.find("s:circle", ns)
        err = g.find("s:line", ns)
        points.append({"label": g.get("data-label"), "cx": float(c.get("cx")), "cy": float(c.get("cy")),
                       "r": float(c.get("r")), "fill": c.get("fill"), "front": "on-front" in g.get("class"),
                       "err": None if err is None else (float(err.get("y1")), float(err.get("y2"))),
                       "text": g.find("s:text", ns), "title": g.find("s:title", ns).text})
    return points, xt, yt, root


def _tick_map(ticks, t=lambda v: v):
    """The affine map (in ``t`` of the value) from value to pixel that an axis' first and last tick define."""
    (p0, v0), (p1, v1) = ticks[0], ticks[-1]
    return lambda v: p0 + (p1 - p0) * (t(v) - t(v0)) / (t(v1) - t(v0))


@pytest.mark.parametrize("log_x,percent", [(True, True), (False, False)])
def test_scatter_points_sit_where_the_axes_say(log_x, percent):
    """Every point, error bar, tick and the front read back from the SVG alone: the pixel of each point
    is the affine map (in log x when log_x) that the tick labels define, to a pixel; errors bars span
    y ± err; front points are drawn bigger and joined by a staircase; colours follow the legend."""
    import math
    import re

    from tmd_bench.reports.pareto import pareto_front, scatter_svg

    xs = [1.0, 2.0, 2.5, 4.0, 8.0, 50.0]
    ys = [0.30, 0.55, 0.52, 0.80, 0.78, 0.91] if percent else [3.0, 5.5, 5.2, 8.0, 7.8, 9.1]
    errs = [0.02, 0.03, 0.0, 0.05, 0.01, 0.02] if percent else [0.2, 0.3, 0.0, 0.5, 0.1, 0.2]
    front = pareto_front(xs, ys)  # cost x, quality y (higher is better)
    groups = ["dmd2", "tmd", "tmd", "rcm", "teacher", "teacher"]
    pts = [{"x": x, "y": y, "err": e, "label": f"m{i}", "short": f"m{i}", "group": g, "front": f}
           for i, (x, y, e, g, f) in enumerate(zip(xs, ys, errs, groups, front))]
    svg = scatter_svg(pts, "effective NFE", "all-correct", "t", log_x=log_x, percent=percent)
    read, xt, yt, root = _svg_reader(svg)
    assert len(xt) >= 2 and len(yt) >= 3 and len(read) == len(pts)
    fx = _tick_map(xt, math.log10 if log_x else (lambda v: v))
    fy = _tick_map(yt)
    for px, v in xt:  # every tick on the same map
        assert abs(fx(v) - px) < 0.6
    for py, v in yt:
        assert abs(fy(v) - py) < 0.6
    assert yt[-1][0] < yt[0][0] and xt[-1][0] > xt[0][0]  # y grows upwards, x rightwards
    frame = root.find("{http://www.w3.org/2000/svg}rect")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    # the frame inside the picture, with room for the tick labels and the legend
    assert 0 < x0 and x1 + 100 < float(root.get("width")) and 0 < y0 and y1 + 20 < float(root.get("height"))
    # data span most of the frame on x (padding, not a half-empty axis)
    cxs = [r["cx"] for r in read]
    assert min(cxs) - x0 < 0.3 * (x1 - x0) and x1 - max(cxs) < 0.3 * (x1 - x0)
    by = {p["label"]: p for p in read}
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3g}")  # noqa: E731
    for p in pts:
        r = by[p["label"]]
        assert abs(r["cx"] - fx(p["x"])) < 0.6 and abs(r["cy"] - fy(p["y"])) < 0.6, (p, r)
        assert x0 < r["cx"] < x1 and y0 < r["cy"] < y1
        assert r["front"] == p["front"] and r["r"] == (6 if p["front"] else 4.5)
        if p["err"] > 0:
            lo, hi = sorted(r["err"])
            assert abs(hi - fy(p["y"] - p["err"])) < 0.6 and abs(lo - fy(p["y"] + p["err"])) < 0.6
        else:
            assert r["err"] is None
        assert r["title"].startswith(f"{p['label']}: effective NFE {p['x']:.3g}, all-correct {fmt(p['y'])}")
        if p["err"] > 0:
            assert f"(95% interval {fmt(p['y'] - p['err'])} to {fmt(p['y'] + p['err'])})" in r["title"]
        assert ("(Pareto front)" in r["title"]) == p["front"]
        if r["text"] is not None:  # a visible label sits next to its point, inside the frame
            lx, ly = float(r["text"].get("x")), float(r["text"].get("y"))
            assert math.hypot(lx - r["cx"], ly - r["cy"]) < 30 and x0 <= lx <= x1 and y0 <= ly <= y1
            assert r["text"].text == p["short"]
    # one colour per group, the legend's
    legend = {t.text: None for t in root.findall("{http://www.w3.org/2000/svg}text") if t.get("class") == "legend"}
    assert set(legend) == set(groups) | {"Pareto front"}
    for g in set(groups):
        fills = {by[p["label"]]["fill"] for p in pts if p["group"] == g}
        assert len(fills) == 1
    assert len({by[p["label"]]["fill"] for p in pts}) == len(set(groups))
    # the front: a staircase through the front points, left to right
    path = root.find("{http://www.w3.org/2000/svg}path").get("d")
    verts = [tuple(map(float, v.split(","))) for v in re.findall(r"[ML]([\d.]+,[\d.]+)", path)]
    on = sorted((p for p in pts if p["front"]), key=lambda p: p["x"])
    expect = []
    for i, p in enumerate(on):
        if i:
            expect.append((fx(p["x"]), fy(on[i - 1]["y"])))
        expect.append((fx(p["x"]), fy(p["y"])))
    assert len(verts) == len(expect) and all(abs(a - c) < 0.6 and abs(b - d) < 0.6 for (a, b), (c, d) in zip(verts, expect))
    assert "; bars: 95% interval" in svg and ("(log scale)" in svg) == log_x and ("(%)" in svg) == percent


def test_report_compares_each_row_s_diversity_with_the_teacher_s_per_prompt(tmp_path):
    """Per-prompt diversity records of two draws: the report's diversity table is row − teacher paired by
    prompt (the hand computation below), a row without records is left out, and no table without any."""
    from tmd_bench.reports.html import build_report

    runs = []
    teacher = {0: [0.30, 0.20, 0.25], 1: [0.35, 0.15, 0.20]}  # div_pairwise per prompt, draw → prompts
    student = {0: [0.10, 0.10, 0.05], 1: [0.20, 0.05, 0.10]}
    for d in range(2):
        run = tmp_path / f"eval-{d}"
        ok = np.arange(24) % 4 != 0
        _write_run(run, 1000 * d, {"teacher-euler-s50": ok, "tmd-M2-N2H2": ok, "dmd2-s2": ok})
        (run / "per_prompt").mkdir()
        for row_id, values in (("teacher-euler-s50", teacher[d]), ("tmd-M2-N2H2", student[d])):
            pd.DataFrame({"prompt": [f"p{i}" for i in range(3)], "seed": [1000 * d + 8 * i for i in range(3)],
                          "per_prompt": 8, "div_pairwise": values}).to_csv(run / "per_prompt" / f"{row_id}.csv",
                                                                            index=False)
        runs.append(run)
    diffs = np.array(student[0] + student[1]) - np.array(teacher[0] + teacher[1])
    table = pooled.diversity_table(runs, ["teacher-euler-s50", "tmd-M2-N2H2", "dmd2-s2"])
    (g,) = table  # dmd2-s2 has no per-prompt records; the teacher is the baseline, not a row against itself
    assert (g["row_id"], g["baseline"], g["metric"], g["paired"]) == ("tmd-M2-N2H2", "teacher-euler-s50", "div_pairwise", 6)
    assert g["diff"] == pytest.approx(diffs.mean()) and g["se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(6))
    assert g["better"] == "higher"
    build_report(runs, tmp_path / "report", pool=True)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Diversity vs the teacher" in md and f"| `tmd-M2-N2H2` | `div_pairwise` | higher | 6 |" in md
    assert pooled.fmt_measure(g) in md and pooled.fmt_measure(g) in (tmp_path / "report" / "report.html").read_text()
    assert len(pd.read_csv(tmp_path / "report" / "diversity.csv")) == 1
    for run in runs:
        import shutil

        shutil.rmtree(run / "per_prompt")
    build_report(runs, tmp_path / "report2", pool=True)
    assert "Diversity vs the teacher" not in (tmp_path / "report2" / "report.md").read_text()
    assert not (tmp_path / "report2" / "diversity.csv").exists()


@pytest.mark.parametrize("percent", [True, False])
def test_line_svg_points_bands_and_legend_sit_where_the_axes_say(percent):
    """The training curves read back from the SVG alone: each point at the affine map its tick labels define,
    the line through a series' points left to right, its band y ± err (a rate's clipped to [0, 1]) traced
    along the top then back along the bottom, one colour per series shared by line, band, points and legend,
    and hover text with the interval; points that are not finite, and series left with none, are dropped."""
    import math

    from tmd_bench.reports.pareto import line_svg

    s = "{http://www.w3.org/2000/svg}"
    scale = 1.0 if percent else 10.0
    series = {
        "tmd": [(500, 0.72 * scale, 0.03 * scale), (100, 0.40 * scale, 0.05 * scale), (1000, 0.97 * scale, 0.05 * scale)],
        "dmd2": [(200, 0.60 * scale, 0.0), (800, 0.02 * scale, 0.04 * scale), (300, float("nan"), 0.1)],
        "gone": [(float("inf"), 0.5, 0.1)],
    }
    svg = line_svg(series, "distillation iterations", "all-correct", "t", percent=percent)
    _, xt, yt, root = _svg_reader(svg)
    assert len(xt) >= 3 and len(yt) >= 3
    assert xt[0][1] == 0  # iterations start the axis at 0
    fx, fy = _tick_map(xt), _tick_map(yt)
    assert all(abs(fx(v) - p) < 0.6 for p, v in xt) and all(abs(fy(v) - p) < 0.6 for p, v in yt)
    assert xt[-1][0] > xt[0][0] and yt[-1][0] < yt[0][0]
    frame = root.find(f"{s}rect")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    xy = lambda text: tuple(map(float, text.split(",")))  # noqa: E731
    lines = root.findall(f"{s}polyline")
    bands = root.findall(f"{s}polygon")
    legend = [t.text for t in root.findall(f"{s}text") if t.get("class") == "legend"]
    assert legend == ["tmd", "dmd2"] and len(lines) == len(bands) == 2
    rows = [float(t.get("y")) for t in root.findall(f"{s}text") if t.get("class") == "legend"]
    assert rows[1] - rows[0] >= 11 and all(float(t.get("x")) > x1 for t in root.findall(f"{s}text")
                                           if t.get("class") == "legend")  # stacked, right of the plot
    circles = root.findall(f"{s}circle")
    clip = (lambda lo, hi: (max(lo, 0.0), min(hi, 1.0))) if percent else (lambda lo, hi: (lo, hi))  # noqa: E731
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3g}")  # noqa: E731
    colours = []
    for name, line, band in zip(legend, lines, bands):
        pts = sorted((x, y, e) for x, y, e in series[name] if math.isfinite(x) and math.isfinite(y))
        c = line.get("stroke")
        colours.append(c)
        assert band.get("fill") == c
        verts = [xy(v) for v in line.get("points").split()]
        assert len(verts) == len(pts)
        for (vx, vy), (x, y, _) in zip(verts, pts):
            assert abs(vx - fx(x)) < 0.6 and abs(vy - fy(y)) < 0.6 and x0 <= vx <= x1 and y0 <= vy <= y1
        ends = [clip(y - e, y + e) for _, y, e in pts]
        expect = [(fx(x), fy(hi)) for (x, _, _), (_, hi) in zip(pts, ends)]
        expect += [(fx(x), fy(lo)) for (x, _, _), (lo, _) in reversed(list(zip(pts, ends)))]
        got = [xy(v) for v in band.get("points").split()]
        assert len(got) == len(expect) and all(abs(a - c_) < 0.6 and abs(b - d) < 0.6 for (a, b), (c_, d) in zip(got, expect))
        mine = [ci for ci in circles if ci.get("fill") == c]
        assert len(mine) == len(pts)
        for ci, (x, y, _), (lo, hi) in zip(mine, pts, ends):
            assert abs(float(ci.get("cx")) - fx(x)) < 0.6 and abs(float(ci.get("cy")) - fy(y)) < 0.6
            assert ci.find(f"{s}title").text == (f"{name}: distillation iterations {x:.3g}, all-correct {fmt(y)} "
                                                 f"(95% {fmt(lo)} to {fmt(hi)})")
    assert len(set(colours)) == 2
    # a legend swatch in its series' colour beside each name
    swatches = [ln.get("stroke") for ln in root.findall(f"{s}line") if ln.get("class") is None]
    assert swatches == colours
    assert ("(%)" in svg) == percent and root.find(f"{s}text").text == "t"
    assert "no points" in line_svg({"a": [(float("nan"), 1.0, 0.0)]}, "x", "y", "t")
