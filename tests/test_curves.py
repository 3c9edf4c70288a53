"""Training-efficiency curves: snapshots kept during distillation, evaluated under one harness."""

import json

import pandas as pd
from typer.testing import CliRunner

from tmd_bench.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_snapshots_are_kept_and_evaluated_into_curves(shapes_teacher_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tmd_bench.distill import trainer

    monkeypatch.setattr(trainer, "SNAPSHOT_ITERATIONS", (2, 4))  # Shapes runs keep 100, 200, 500, … by default
    out = tmp_path / "tmd"
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--outer-steps", "2", "--inner-steps", "2",
            "--head-blocks", "2", "--stage1-iterations", "2", "--stage2-iterations", "5", "--batch-size", "2",
            "--checkpoint-every", "3", "--out", out)
    assert r.exit_code == 0, r.output
    snaps = trainer.snapshot_folders(out / "stage2")
    assert [k for k, _ in snaps] == [2, 4]  # kept whatever --checkpoint-every (3): a snapshot is a checkpoint too
    meta = [json.loads((d / "snapshot.json").read_text()) for _, d in snaps]
    assert meta[0]["elapsed_s"] <= meta[1]["elapsed_s"]
    # a snapshot is the student as exported at that iteration: the 4-iteration one differs from the final
    w4 = load_file(str(next((snaps[1][1]).glob("tmd_head/*.safetensors"))))
    w5 = load_file(str(next((out / "stage2" / "student").glob("tmd_head/*.safetensors"))))
    assert w4.keys() == w5.keys() and any((w4[k] != w5[k]).any() for k in w4)

    r = run("curves", out, "--teacher-path", shapes_teacher_dir, "--limit", "2", "--out", tmp_path / "curves")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "curves" / "curves.csv")
    stage2 = df[df["run"] == "tmd/stage2"]
    assert list(stage2["iteration"]) == [2, 4, 5] and stage2["wall_s"].is_monotonic_increasing
    stage1 = df[df["run"] == "tmd/stage1"]
    assert list(stage1["iteration"]) == [2] and stage2["wall_s"].min() >= stage1["wall_s"].max()
    assert set(df["num_clips"]) == {2} and df["all_correct"].between(0, 1).all()
    # the Markdown table carries the CSV's numbers: one line per run and stage, a column per iteration
    md = (tmp_path / "curves" / "curves.md").read_text().splitlines()
    assert md[0].startswith("| run / stage | 2 it | 4 it | 5 it |") and len(md) == 2 + df["run"].nunique()
    line = next(x for x in md if x.startswith("| `tmd/stage2` |")).split(" | ")
    for k, col in ((2, 1), (4, 2), (5, 3)):
        r = stage2[stage2["iteration"] == k].iloc[0]
        assert line[col] == f"{100 * r['all_correct']:.1f}% ± {100 * r['all_correct_se']:.1f}"
    assert line[4] == f"{stage2['wall_s'].iloc[-1]:,.0f} s (5 it)"
    stage1_line = next(x for x in md if x.startswith("| `tmd/stage1` |")).split(" | ")
    assert stage1_line[1] != "" and stage1_line[2] == "" and stage1_line[3] == ""  # stage 1 has no 4 or 5
    html = (tmp_path / "curves" / "curves.html").read_text()
    assert html.count("<svg") >= 4 and "distillation iterations" in html and "training wall time" in html
    # the rows are ordinary evaluation rows, one per snapshot, tagged by run, stage and iteration
    rows = pd.read_csv(tmp_path / "curves" / "eval" / "results.csv")
    assert {"tmd-M2-N2H2-tmd-stage2-it2", "tmd-M2-N2H2-tmd-stage2-it5"} <= set(rows["row_id"])
    assert "div_pairwise" not in df  # diversity only when asked for

    # diversity curves: K clips per prompt, every snapshot; the CSV's values are the rows' own, plotted and tabled
    r = run("curves", out, "--teacher-path", shapes_teacher_dir, "--limit", "2", "--metrics", "shapes,diversity",
            "--per-prompt", "2", "--out", tmp_path / "div")
    assert r.exit_code == 0, r.output
    div = pd.read_csv(tmp_path / "div" / "curves.csv")
    rows = pd.read_csv(tmp_path / "div" / "eval" / "results.csv").set_index("row_id")
    assert set(div["num_clips"]) == {4} and set(rows["div_per_prompt"]) == {2}
    for _, rec in div.iterrows():
        for m in ("div_pairwise", "div_vendi", "div_world_coverage"):
            assert rec[m] == rows.loc[rec["row_id"], m]
    assert div["div_vendi"].between(1, 2).all()
    text = (tmp_path / "div" / "curves.md").read_text()
    assert "`div_vendi` (higher is more diverse)" in text and "`div_world_coverage` (higher is more diverse)" in text
    html = (tmp_path / "div" / "curves.html").read_text()
    assert "div_vendi vs distillation iterations" in html and "div_vendi vs training wall time" in html
    # the energy distance is NaN for these untrained students (no clip readable): left out, not plotted as 0
    assert div["div_world_energy"].isna().all() if "div_world_energy" in div else True
    assert "`div_world_energy`" not in text
    assert (tmp_path / "div" / "eval" / "per_prompt" / "tmd-M2-N2H2-tmd-stage2-it5.csv").is_file()
    r = run("curves", out, "--metrics", "diversity", "--per-prompt", "1", "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "--per-prompt must be ≥ 2" in r.output and not (tmp_path / "bad").exists()


def test_curves_of_a_folder_without_training_is_one_line(shapes_teacher_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("curves", tmp_path / "empty", "--teacher-path", shapes_teacher_dir, "--out", tmp_path / "c")
    assert r.exit_code == 2 and "no training run inside" in r.output
    r = run("curves", tmp_path / "missing", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "no such run folder" in r.output


def test_a_lower_is_better_diversity_measure_is_labelled_so(tmp_path):
    from tmd_bench.curves import write_curves

    recs = [{"run": "a/stage2", "method": "tmd", "steps": 2, "iteration": k, "wall_s": float(k), "row_id": f"r{k}",
             "draws": 2, "num_clips": 16, "all_correct": 0.5, "all_correct_se": 0.1, "div_world_energy": e,
             "div_world_energy_se": 0.01} for k, e in ((100, 0.25), (200, 0.125))]
    write_curves(recs, tmp_path)
    text = (tmp_path / "curves.md").read_text()
    assert "`div_world_energy` (lower is more diverse)" in text and "| `a/stage2` | 0.25 ± 0.01 | 0.125 ± 0.01 |" in text
    assert "div_world_energy (lower is better)" in (tmp_path / "curves.html").read_text()


def test_demo_refuses_a_bad_metric_option_before_touching_its_folder(tmp_path):
    out = tmp_path / "demo"
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "results.csv").write_text("row_id\nkept\n")  # a previous demo's draw: removed only by a real run
    r = run("demo", "--metrics", "shapes,diversity", "--per-prompt", "1", "--out", out)
    assert r.exit_code == 2 and "--per-prompt must be ≥ 2" in r.output
    r = run("demo", "--metrics", "shapes,nope", "--out", out)
    assert r.exit_code == 2 and "nope" in r.output
    r = run("demo", "--latency-repeats", "0", "--out", out)
    assert r.exit_code == 2 and "--latency-repeats must be ≥ 1, got 0" in r.output
    assert (out / "eval" / "results.csv").read_text() == "row_id\nkept\n"
