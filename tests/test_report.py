import math
import shutil

import pandas as pd
import pytest
from tmd_bench.reports.html import QUALITY_METRICS, ReportError, build_report
from tmd_bench.reports.pareto import pareto_front, scatter_svg

from tmd_bench.evaluate import EvalConfig, evaluate


def test_pareto_front_keeps_exactly_the_undominated_points():
    cost = [1, 2, 3, 4, 2, float("nan")]
    qual = [0.1, 0.5, 0.4, 0.9, 0.5, 1.0]
    assert pareto_front(cost, qual) == [True, True, False, True, True, False]
    # a point strictly worse in both is never on the front; ties in both are both kept
    assert pareto_front([1, 1], [0.5, 0.5]) == [True, True]
    assert pareto_front([1, 2], [0.5, 0.4]) == [True, False]


def test_svg_escapes_labels_and_marks_the_front():
    svg = scatter_svg([{"x": 1.0, "y": 0.5, "label": "<b>x</b>", "short": "<i>", "group": "g&h", "front": True}],
                      "latency", "q", "t")
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "g&amp;h" in svg and 'class="front"' in svg


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, wan_teacher_dir):
    base = tmp_path_factory.mktemp("runs")
    suite = base / "p.txt"
    suite.write_text("<script>alert('pwned')</script> a cat\na dog on the grass\n")
    for name, methods in (("run-a", ["teacher-euler"]), ("run-b", ["teacher-unipc"])):
        evaluate(EvalConfig(teacher="wan2.1-1.3b", teacher_path=str(wan_teacher_dir), methods=methods, steps=[1, 2],
                            prompts=str(suite), frames=5, height=32, width=32, latency_repeats=1,
                            out=str(base / name)))
    return base


def test_report_merges_runs_and_escapes_text(two_runs, tmp_path):
    csv_path, html_path = build_report([two_runs / "run-a", two_runs / "run-b"], tmp_path / "rep",
                                       metric="latency_denoise_s")
    df = pd.read_csv(csv_path)
    assert sorted(df["run"]) == ["run-a", "run-a", "run-b", "run-b"]
    assert "pareto_latency" in df and df["pareto_latency"].any()
    for card in df["run_card"]:
        assert (tmp_path / "rep" / card).is_file()
    html = html_path.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


def test_report_errors(two_runs, tmp_path):
    with pytest.raises(ReportError, match="no results.csv"):
        build_report([tmp_path], tmp_path / "rep")
    with pytest.raises(ReportError, match="quality metric 'vbench'"):
        build_report([two_runs / "run-a"], tmp_path / "rep", metric="vbench")


def _chromium() -> str:
    from conftest import chromium

    return chromium()


def test_report_in_a_real_headless_browser(two_runs, tmp_path):
    """Open the page in Chromium: no console errors, both plots drawn, table sorts, no script injected."""
    playwright = pytest.importorskip("playwright.sync_api")
    _, html_path = build_report([two_runs / "run-a", two_runs / "run-b"], tmp_path / "rep", metric="latency_denoise_s")
    errors, dialogs = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(html_path.as_uri())
        page.wait_for_load_state("load")
        assert page.locator("svg.pareto").count() == 2
        assert page.locator("svg.pareto").first.is_visible()
        assert page.locator("svg.pareto g.point").count() == 8  # 4 configurations × 2 plots
        box = page.locator("svg.pareto").first.bounding_box()
        assert box["width"] > 300 and box["height"] > 200
        assert page.locator("svg.pareto g.on-front").count() >= 2
        legend = page.locator("svg.pareto").first.text_content()  # every method on the one plot, in its legend
        assert "teacher-euler" in legend and "teacher-unipc" in legend
        # the escaped prompt is visible as text, and sorting by a column reorders the rows
        assert "<script>alert('pwned')</script> a cat" in page.locator("table.samples").first.inner_text()
        header = page.locator("table.sortable th", has_text="latency_total_s")
        col = [h.inner_text() for h in page.locator("table.sortable th").all()].index("latency_total_s (ms)")
        header.click()
        values = [float(c.get_attribute("data-key")) for c in
                  page.locator(f"table.sortable tbody tr td:nth-child({col + 1})").all()]
        assert values == sorted(values)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == [] and dialogs == []


def _run_with(src, dst, **columns):
    """A copy of run ``src`` whose results.csv gains ``columns`` (name → one value per row), as if the
    metric had been computed."""
    shutil.copytree(src, dst)
    df = pd.read_csv(dst / "results.csv")
    for name, values in columns.items():
        df[name] = values
    df.to_csv(dst / "results.csv", index=False)
    return dst


def test_report_of_timing_only_runs_shows_speed_and_says_how_to_add_quality(two_runs, tmp_path):
    """A Wan checkpoint evaluated without --metrics has latency/NFE columns only: the report is still built."""
    results = pd.read_csv(two_runs / "run-a" / "results.csv")
    assert set(results) & set(QUALITY_METRICS) == set() and set(results["teacher"]) == {"wan2.1-1.3b"}
    csv_path, html_path = build_report([two_runs / "run-a"], tmp_path / "rep")
    df = pd.read_csv(csv_path)
    assert list(df["row_id"]) == list(results["row_id"]) and "pareto_latency" not in df
    html = html_path.read_text()
    assert "No quality metric was computed" in html and "--metrics fidelity" in html and "--metrics clip" in html
    assert "latency vs effective NFE" in html and 'class="front"' not in html  # no front drawn or in a legend
    for c in ("nfe", "effective_nfe", "latency_total_s (ms)"):
        assert f"<th>{c}</th>" in html
    for row_id in results["row_id"]:
        assert f">{row_id}</td>" in html


def test_report_picks_an_available_quality_column_in_the_right_direction(two_runs, tmp_path):
    lat = pd.read_csv(two_runs / "run-a" / "results.csv")["latency_total_s"]
    run = _run_with(two_runs / "run-a", tmp_path / "psnr", psnr_teacher=[25.0, 30.0])
    _, html_path = build_report([run], tmp_path / "rep")
    assert "Quality axis: <b>psnr_teacher</b>" in html_path.read_text()
    # fd_real is lower-is-better: the faster row with the smaller distance dominates the other one
    fast = lat == lat.min()
    run = _run_with(two_runs / "run-a", tmp_path / "fd", fd_real=[0.1 if f else 0.5 for f in fast])
    csv_path, html_path = build_report([run], tmp_path / "rep-fd")
    assert list(pd.read_csv(csv_path)["pareto_latency"]) == list(fast)
    assert "fd_real (lower is better)" in html_path.read_text()


def test_report_metric_that_is_not_a_column_is_a_one_line_error(two_runs, tmp_path):
    with pytest.raises(ReportError, match="quality metric 'nonexistent' is not in the results") as e:
        build_report([two_runs / "run-a"], tmp_path / "rep", metric="nonexistent")
    assert "\n" not in str(e.value)


def test_pareto_front_equals_the_definition_with_ties_and_missing_points():
    """Against the definition, brute force, on small integer grids (so ties in cost, in quality and in
    both are common) with NaN/inf points anywhere, first and last included."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    value = st.one_of(st.integers(0, 3).map(float), st.sampled_from([float("nan"), float("inf")]))

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(value, value), min_size=1, max_size=7))
    def check(points):
        cost, qual = [p[0] for p in points], [p[1] for p in points]
        finite = [math.isfinite(c) and math.isfinite(q) for c, q in points]
        expected = [finite[i] and not any(
            finite[j] and cost[j] <= cost[i] and qual[j] >= qual[i] and (cost[j] < cost[i] or qual[j] > qual[i])
            for j in range(len(points))) for i in range(len(points))]
        assert pareto_front(cost, qual) == expected

    check()
