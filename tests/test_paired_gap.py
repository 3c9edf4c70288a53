"""`tmd-bench gap`: paired (prompt, seed) differences, their SE and interval, pooled over run folders."""

import math

import pytest
from tmd_bench.reports.paired import GapError, paired_gap, verdict
from typer.testing import CliRunner

from tmd_bench.cli import app

HEADER = "prompt,seed,all_correct,read_background\n"


def write(run, row_id, clips, header=HEADER):
    """clips: [(prompt, seed, correct)] → RUN/per_clip/<row_id>.csv."""
    d = run / "per_clip"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{row_id}.csv").write_text(header + "".join(f"{p},{s},{c},black\n" for p, s, c in clips))


@pytest.fixture
def two_runs(tmp_path):
    """Run a (seeds 0–4) and run b (seeds 100–104). Baseline: 9/10 correct; row: 7/10 correct, paired as below.

    per-clip row − base: a: [0, -1, 0, 0, -1], b: [0, 0, +1, -1, 0] → mean −0.2, sum of squares 4,
    var = (4 − 10·0.04)/9 = 0.4, SE = √(0.4/10) = 0.2 → −20 ± 20 points, 95% [−59.2, +19.2].
    """
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "base", [("p0", 0, True), ("p1", 1, True), ("p2", 2, True), ("p3", 3, True), ("p4", 4, True)])
    write(a, "row", [("p0", 0, True), ("p1", 1, False), ("p2", 2, True), ("p3", 3, True), ("p4", 4, False)])
    write(b, "base", [("p0", 100, True), ("p1", 101, True), ("p2", 102, False), ("p3", 103, True),
                      ("p4", 104, True)])
    write(b, "row", [("p0", 100, True), ("p1", 101, True), ("p2", 102, True), ("p3", 103, False),
                     ("p4", 104, True)])
    return a, b


def test_difference_se_and_interval_match_hand_computation(two_runs):
    (r,) = paired_gap(list(two_runs), "base", ["row"])
    assert r["paired"] == 10 and r["runs"] == 2
    assert r["baseline_rate"] == pytest.approx(90) and r["row_rate"] == pytest.approx(70)
    assert r["diff"] == pytest.approx(-20)
    assert r["se"] == pytest.approx(20)
    assert (r["lo"], r["hi"]) == (pytest.approx(-59.2), pytest.approx(19.2))
    assert r["unpaired_row"] == 0 and r["unpaired_baseline"] == 0
    assert "within" not in r


def test_pooling_uses_every_run(two_runs):
    a, b = two_runs
    (only_a,) = paired_gap([a], "base", ["row"])
    assert only_a["paired"] == 5 and only_a["diff"] == pytest.approx(-40)
    (only_b,) = paired_gap([b], "base", ["row"])
    assert only_b["paired"] == 5 and only_b["diff"] == pytest.approx(0)
    # a run folder that holds one row only still contributes it
    c = a.parent / "c"
    write(c, "row", [("p9", 9, True)])
    write(a.parent / "d", "base", [("p9", 9, False)])
    (r,) = paired_gap([a, b, c, a.parent / "d"], "base", ["row"])
    assert r["paired"] == 11 and r["diff"] == pytest.approx(100 * (-2 + 1) / 11)


def test_unpaired_clips_are_counted_and_left_out(two_runs):
    a, b = two_runs
    write(a, "row", [("p0", 0, True), ("p1", 1, False), ("p2", 2, True), ("p3", 3, True), ("p4", 4, False),
                     ("p5", 5, False), ("p6", 6, False)])
    write(b, "row", [("p0", 100, True), ("p1", 101, True)])  # seeds 102–104 of the baseline are unpaired
    (r,) = paired_gap([a, b], "base", ["row"])
    assert r["paired"] == 7 and r["unpaired_row"] == 2 and r["unpaired_baseline"] == 3
    # a different seed is a different clip: the same prompt with seed 7 does not pair with seed 0
    assert r["row_rate"] == pytest.approx(100 * 5 / 7) and r["baseline_rate"] == pytest.approx(100)


@pytest.mark.parametrize("within,expected", [(60, "yes"), (25, "estimate only"), (19.9, "no"), (10, "no")])
def test_within_verdicts(two_runs, within, expected):
    (r,) = paired_gap(list(two_runs), "base", ["row"], within=within)
    assert r["within"] == expected


def test_verdict_rule():
    assert verdict(-1.0, -4.9, 5) == "yes"
    assert verdict(-1.0, -5.1, 5) == "estimate only"
    assert verdict(-5.1, -8.0, 5) == "no"
    assert verdict(-1.0, math.nan, 5) == "estimate only"  # one paired clip: no SE, no interval


def test_several_rows_and_numeric_metric(tmp_path):
    run = tmp_path / "r"
    write(run, "base", [("p", 0, 0.5), ("q", 1, 0.25)])
    write(run, "x", [("p", 0, 0.75), ("q", 1, 0.25)])
    write(run, "y", [("p", 0, 0.5), ("q", 1, 0.5)])
    x, y = paired_gap([run], "base", ["x", "y"])
    assert (x["row_id"], x["diff"], x["se"]) == ("x", pytest.approx(12.5), pytest.approx(12.5))
    assert (y["row_id"], y["diff"], y["se"]) == ("y", pytest.approx(12.5), pytest.approx(12.5))


def test_run_without_per_clip(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GapError, match="empty: no per_clip/ folder"):
        paired_gap([*two_runs, tmp_path / "empty"], "base", ["row"])


def test_row_missing_from_every_run_lists_existing_rows(two_runs):
    with pytest.raises(GapError, match=r"'nope' is in none of the runs; rows there: base, row"):
        paired_gap(list(two_runs), "base", ["nope"])
    with pytest.raises(GapError, match=r"'teacher' is in none of the runs"):
        paired_gap(list(two_runs), "teacher", ["row"])


def test_missing_metric_column(two_runs):
    with pytest.raises(GapError, match=r"no column clip_score; columns: prompt, seed, all_correct"):
        paired_gap(list(two_runs), "base", ["row"], metric="clip_score")
    with pytest.raises(GapError, match=r"base\.csv:2: read_background is 'black', not a number"):
        paired_gap(list(two_runs), "base", ["row"], metric="read_background")


def test_same_clip_twice_for_one_row(two_runs, tmp_path):
    a, _ = two_runs
    write(tmp_path / "again", "row", [("p3", 3, True)])
    with pytest.raises(GapError, match=r"row row: clip \(prompt 'p3', seed 3\) appears twice"):
        paired_gap([a, tmp_path / "again"], "base", ["row"])


def test_zero_paired_clips(tmp_path):
    write(tmp_path / "a", "base", [("p", 0, True)])
    write(tmp_path / "b", "row", [("p", 1000, True)])
    with pytest.raises(GapError, match="share no \\(prompt, seed\\) clip"):
        paired_gap([tmp_path / "a", tmp_path / "b"], "base", ["row"])


def test_cli(two_runs, tmp_path):
    runner = CliRunner()
    a, b = two_runs
    r = runner.invoke(app, ["gap", str(a), str(b), "--baseline", "base", "--rows", "row", "--within", "25"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("│ row"))
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert cells == ["row", "2", "10", "90.0", "70.0", "-20.0", "20.0", "[-59.2, +19.2]", "0/0", "estimate only"]
    r = runner.invoke(app, ["gap", str(a), "--baseline", "base", "--rows", "row,nope"])
    assert r.exit_code == 2 and "'nope' is in none of the runs" in r.output and "Traceback" not in r.output


def write_groups(run, row_id, groups):
    """groups: [(prompt, first seed, div_vendi, div_world_energy)] → RUN/per_prompt/<row_id>.csv."""
    d = run / "per_prompt"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{row_id}.csv").write_text("prompt,seed,per_prompt,div_vendi,div_world_energy\n" + "".join(
        f"{p},{s},8,{v},{'' if e is None else e}\n" for p, s, v, e in groups))


def test_diversity_is_paired_per_prompt_in_its_own_units(tmp_path):
    """A prompt's K clips are the unit: Vendi row − base per prompt [−1, −2, 0, −1] → mean −1, var 2/3,
    SE √(2/3 / 4) (not × 100: a Vendi score is a count of distinct clips). An undefined energy (NaN or empty)
    leaves that prompt unpaired. Runs without per_prompt/ (draws evaluated without diversity) are skipped."""
    a, b, plain = tmp_path / "a", tmp_path / "b", tmp_path / "plain"
    write_groups(a, "base", [("p0", 0, 4.0, 0.1), ("p1", 8, 5.0, 0.2)])
    write_groups(a, "row", [("p0", 0, 3.0, 0.3), ("p1", 8, 3.0, None)])
    write_groups(b, "base", [("p0", 1000, 4.0, 0.1), ("p1", 1008, 2.0, "nan")])
    write_groups(b, "row", [("p0", 1000, 4.0, 0.5), ("p1", 1008, 1.0, 0.4)])
    write(plain, "base", [("p0", 0, True)])
    (g,) = paired_gap([a, b, plain], "base", ["row"], metric="div_vendi")
    se = math.sqrt((2 / 3) / 4)
    assert g["paired"] == 4 and g["units"] == "measure"
    assert (g["baseline_rate"], g["row_rate"]) == (pytest.approx(3.75), pytest.approx(2.75))
    assert g["diff"] == pytest.approx(-1.0) and g["se"] == pytest.approx(se)
    assert g["lo"] == pytest.approx(-1 - 1.96 * se) and g["hi"] == pytest.approx(-1 + 1.96 * se)
    (e,) = paired_gap([a, b], "base", ["row"], metric="div_world_energy")
    assert e["paired"] == 2 and e["diff"] == pytest.approx(((0.3 - 0.1) + (0.5 - 0.1)) / 2)
    assert (e["unpaired_row"], e["unpaired_baseline"]) == (1, 1)  # a's p1 and b's p1, one side each
    with pytest.raises(GapError, match="no per_prompt/ folder.*--metrics diversity"):
        paired_gap([plain], "base", ["row"], metric="div_vendi")
    # the CLI prints the measure's units, not points
    r = CliRunner().invoke(app, ["gap", str(a), str(b), "--baseline", "base", "--rows", "row", "--metric", "div_vendi"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("│ row"))
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert cells[:7] == ["row", "2", "4", "3.750", "2.750", "-1.000", f"{se:.3f}"]
