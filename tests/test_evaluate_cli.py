import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from tmd_bench.cli import app
from tmd_bench.evaluate import CORE_COLUMNS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("steps,msg", [("0", "positive integers"), ("abc", "comma-separated positive integers"),
                                       ("1,-2", "positive integers"), (",", "comma-separated")])
def test_bad_steps_are_rejected(steps, msg, tmp_path):
    r = run("evaluate", "--steps", steps, "--out", tmp_path / "o")
    assert r.exit_code == 2 and msg in r.output


def test_unknown_teacher_and_method(shapes_teacher_dir, tmp_path):
    r = run("evaluate", "--teacher", "sora", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "unknown teacher 'sora'" in r.output
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-heun", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "unknown solver 'heun'" in r.output
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "sdxl", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "unknown method 'sdxl'" in r.output


def test_missing_wan_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    r = run("evaluate", "--teacher", "wan2.1-14b", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Wan-AI/Wan2.1-T2V-14B-Diffusers" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("content,suffix,msg", [
    ("# only a comment\n\n", ".txt", "no prompts"),
    ('{"prompt": "a small red circle moving left on a black background"}\n{oops\n', ".jsonl", "p.jsonl:2: not valid JSON"),
    ('{"text": "x"}\n', ".jsonl", 'non-empty "prompt" string'),
    ("a small red circle moving left on a black background\na photo of a cat\n", ".txt", "prompt 2: not a Shapes-world prompt"),
])
def test_malformed_and_empty_suites(content, suffix, msg, shapes_teacher_dir, tmp_path):
    f = tmp_path / f"p{suffix}"
    f.write_text(content)
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--prompts", f, "--out", tmp_path / "o")
    assert r.exit_code == 2 and msg in r.output.replace("\n", " "), r.output


def test_missing_suite_names_the_builtin_ones(shapes_teacher_dir, tmp_path):
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--prompts", "nope", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "shapes-eval" in r.output


def test_unwritable_output_folder_fails_before_any_work(shapes_teacher_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--out", blocker / "run")
    assert r.exit_code == 2 and "cannot write to the output folder" in r.output


def test_evaluate_writes_rows_cards_and_samples(shapes_teacher_dir, tmp_path):
    out = tmp_path / "run"
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler,teacher-euler-nocfg",
            "--steps", "1,2", "--limit", "5", "--batch-size", "2", "--latency-repeats", "1", "--out", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns[:len(CORE_COLUMNS)]) == CORE_COLUMNS
    assert list(df["row_id"]) == ["teacher-euler-s1", "teacher-euler-s2", "teacher-euler-nocfg-s1",
                                  "teacher-euler-nocfg-s2"]
    assert list(df["nfe"]) == [2, 4, 1, 2] and (df["nfe"] == df["nfe_counted"]).all()
    assert df["all_correct"].between(0, 1).all() and (df["num_clips"] == 5).all()
    for c in ("acc_shape", "acc_motion", "subject_consistency", "sharpness", "latency_denoise_s"):
        assert c in df
    assert df[["world_quality", "world_semantic", "world_total"]].stack().between(0, 1).all()
    card = json.loads((out / df["run_card"][1]).read_text())
    for key in ("git_commit", "teacher", "suite", "seeds", "latency_protocol", "hardware", "software", "command"):
        assert key in card
    assert card["config"]["steps"] == 2 and card["suite"]["name"] == "shapes-eval[:5]"
    assert "--steps 2" in card["command"] and "--limit 5" in card["command"]
    assert (out / "samples" / "teacher-euler-s1.safetensors").exists()
    per_clip = pd.read_csv(out / "per_clip" / "teacher-euler-s1.csv")
    assert len(per_clip) == 5 and "read_shape" in per_clip


def test_rerunning_a_row_reproduces_it(shapes_teacher_dir, tmp_path):
    args = ["evaluate", "--teacher-path", shapes_teacher_dir, "--steps", "2", "--limit", "3", "--latency-repeats", "1"]
    run(*args, "--out", tmp_path / "a")
    run(*args, "--out", tmp_path / "b")
    a, b = pd.read_csv(tmp_path / "a" / "results.csv"), pd.read_csv(tmp_path / "b" / "results.csv")
    quality = [c for c in a.columns if c.startswith("acc_") or c in ("all_correct", "sharpness", "imaging_quality")]
    pd.testing.assert_frame_equal(a[quality], b[quality])


@pytest.mark.parametrize("args,msg", [
    (["--head-blocks", "4"], "1 ≤ H < L = 4"),
    (["--head-blocks", "9"], "1 ≤ H < L = 4"),
    (["--outer-steps", "0"], "--outer-steps must be ≥ 1"),
    (["--inner-steps", "0"], "--inner-steps must be ≥ 1"),
    (["--stage", "3"], "--stage must be 1, 2 or all"),
    (["--method", "gan"], "unknown method 'gan'"),
    (["--tm-prob", "1.5"], "--tm-prob is a probability (0 to 1), got 1.5"),
    (["--method", "kd", "--no-rollout"], "--tm-prob and --no-rollout are TMD's"),
    (["--kd-warmup-iterations", "5"], "--kd-warmup-iterations is one-step dmd2's"),
    (["--method", "dmd2", "--steps", "2", "--kd-warmup-iterations", "3"], "only one-step dmd2 has a KD warm-up"),
    (["--method", "dmd2", "--steps", "1", "--kd-warmup-iterations", "-1"], "--kd-warmup-iterations must be ≥ 0"),
])
def test_distill_bad_input(args, msg, shapes_teacher_dir, tmp_path):
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--out", tmp_path / "d", *args)
    assert r.exit_code == 2 and msg in r.output, r.output


def test_distill_then_evaluate_tmd_and_resume_checks(shapes_teacher_dir, tmp_path):
    out = tmp_path / "d"
    base = ["distill", "--teacher-path", shapes_teacher_dir, "--outer-steps", "2", "--inner-steps", "2",
            "--head-blocks", "2", "--stage1-iterations", "2", "--stage2-iterations", "5", "--batch-size", "2",
            "--out", out]
    r = run(*base)
    assert r.exit_code == 0, r.output
    r = run(*base)  # a second fresh run must not overwrite the first
    assert r.exit_code == 2 and "--resume" in r.output
    r = run(*[a if a != "2" or i != base.index("--head-blocks") + 1 else "1" for i, a in enumerate(base)], "--resume")
    assert r.exit_code == 2 and "config differs" in r.output
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "tmd,teacher-euler", "--checkpoint",
            f"tmd={out / 'stage2' / 'student'}", "--steps", "1,2", "--limit", "3", "--latency-repeats", "1",
            "--inner-steps", "1", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "e" / "results.csv")
    tmd_rows = df[df["method"] == "tmd"]
    assert list(tmd_rows["row_id"]) == ["tmd-M1-N1H2", "tmd-M2-N1H2"]
    assert list(tmd_rows["nfe_counted"]) == [1, 2] and list(tmd_rows["inner_steps"]) == [1, 1]
    assert list(tmd_rows["effective_nfe"]) == pytest.approx([1.0, 2.0])
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "tmd", "--out", tmp_path / "f")
    assert r.exit_code == 2 and "--checkpoint tmd=FOLDER" in r.output


def test_distill_ablation_options_reach_the_students_training_config(shapes_teacher_dir, tmp_path):
    """The paper's ablations from the CLI: plain TM in stage 1 (--tm-prob 1) and no rollout in stage 2; each
    student records what it was trained with (its run card), and DMD2-v's one-step student without warm-up."""
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--tm-prob", "1", "--no-rollout", "--stage1-iterations",
            "1", "--stage2-iterations", "1", "--batch-size", "2", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    for stage in ("stage1", "stage2"):
        cfg = json.loads((tmp_path / "t" / stage / "student" / "tmd_config.json").read_text())["train_config"]
        assert cfg["tm_prob"] == 1.0 and cfg["stage2_rollout"] is False, cfg
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--method", "dmd2", "--steps", "1",
            "--kd-warmup-iterations", "0", "--iterations", "1", "--batch-size", "2", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "d" / "kd-warmup").exists() and (tmp_path / "d" / "dmd2" / "student").is_dir()
    cfg = json.loads((tmp_path / "d" / "dmd2" / "student" / "student_config.json").read_text())
    assert cfg["train_config"]["kd_warmup_iterations"] == 0, cfg


def test_distill_dmd2_and_kd_from_the_cli(shapes_teacher_dir, tmp_path):
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--method", "dmd2", "--steps", "2", "--iterations", "5",
            "--batch-size", "2", "--out", tmp_path / "dmd2")
    assert r.exit_code == 0, r.output
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--method", "kd", "--iterations", "3",
            "--batch-size", "2", "--kd-pairs", "4", "--kd-teacher-steps", "1", "--out", tmp_path / "kd")
    assert r.exit_code == 0, r.output
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "dmd2,kd", "--steps", "1,2", "--limit", "2",
            "--checkpoint", f"dmd2={tmp_path / 'dmd2' / 'dmd2' / 'student'}", "--checkpoint",
            f"kd={tmp_path / 'kd' / 'student'}", "--latency-repeats", "1", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "e" / "results.csv")
    assert list(df["row_id"]) == ["dmd2-s1", "dmd2-s2", "kd-s1", "kd-s2"]
    assert (df["nfe"] == df["nfe_counted"]).all()
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "kd", "--checkpoint",
            f"kd={tmp_path / 'dmd2' / 'dmd2' / 'student'}", "--out", tmp_path / "f")
    assert r.exit_code == 2 and "not a 'kd' one" in r.output


@pytest.mark.parametrize("method", ["rcm", "meanflow"])
def test_distill_and_evaluate_rcm_and_meanflow(method, shapes_teacher_dir, tmp_path):
    r = run("distill", "--teacher-path", shapes_teacher_dir, "--method", method, "--iterations", "2",
            "--batch-size", "2", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.output
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", method, "--steps", "1,2", "--limit", "2",
            "--checkpoint", f"{method}={tmp_path / 'd' / 'student'}", "--latency-repeats", "1", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "e" / "results.csv")
    assert list(df["row_id"]) == [f"{method}-s1", f"{method}-s2"] and (df["nfe"] == df["nfe_counted"]).all()


def test_compare_distills_evaluates_and_reports(shapes_teacher_dir, tmp_path, monkeypatch):
    from dataclasses import replace

    from tmd_bench.distill import dmd2, tmd_train

    monkeypatch.setitem(tmd_train.PRESETS, "shapes", replace(tmd_train.PRESETS["shapes"], stage1_iterations=2,
                                                            stage2_iterations=5, batch_size=2))
    monkeypatch.setitem(dmd2.PRESETS, "shapes", replace(dmd2.PRESETS["shapes"], iterations=5, batch_size=2))
    r = run("compare", "--teacher-path", shapes_teacher_dir, "--only", "tmd-M2,tmd-M2-tmmf,dmd2-s2", "--limit", "2",
            "--draws", "2", "--no-novel", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    # the shipped TMD trains stage 2 from the teacher; the paper's two-stage recipe is its own entry
    assert not (tmp_path / "c" / "students" / "tmd-M2" / "stage1").exists()
    assert (tmp_path / "c" / "students" / "tmd-M2-tmmf" / "stage1" / "student").is_dir()
    df = pd.read_csv(tmp_path / "c" / "eval" / "results.csv")
    assert {"tmd-M2-N2H2", "tmd-M2-N1H2", "tmd-M2-N4H2", "tmd-M2-N2H2-tmmf", "tmd-M2-N2H2-stage1", "dmd2-s2",
            "teacher-euler-s50"} <= set(df["row_id"])
    # the second draw: the same rows on --seed 1000, pooled in the report with its claims and paired gaps
    d1 = pd.read_csv(tmp_path / "c" / "eval-draw1" / "results.csv")
    assert set(d1["row_id"]) == set(df["row_id"]) and set(d1["seed"]) == {1000} and set(df["seed"]) == {0}
    rep = pd.read_csv(tmp_path / "c" / "report" / "report.csv")
    assert set(rep["draws"]) == {2} and set(rep["num_clips"]) == {4} and set(rep["seeds"]) == {"0,1000"}
    claims = pd.read_csv(tmp_path / "c" / "report" / "claims.csv")
    c = claims.set_index("claim").loc["TMD ≥ DMD2-v at matched effective NFE (2 = 2)"]
    assert c["paired"] == 4 and c["verdict"] in ("reproduced", "tie", "not reproduced")
    from tmd_bench.reports.paired import paired_gap

    (g,) = paired_gap([tmp_path / "c" / "eval", tmp_path / "c" / "eval-draw1"], "dmd2-s2", ["tmd-M2-N1H2"])
    assert c["diff"] == pytest.approx(g["diff"])  # the claims table is `tmd-bench gap` on the draws
    assert (tmp_path / "c" / "report" / "report.html").is_file()

    # shipping: float16 copies with provenance, loaded back into the teacher's dtype, sample as the originals
    import json

    import torch
    from tmd_bench.distill.tmd import load_student, sample_tmd

    from tmd_bench.compare import export_students, student_evaluations
    from tmd_bench.teachers import load_teacher

    shipped = export_students(tmp_path / "c", dest=tmp_path / "ship")
    assert {p.name for p in shipped} == {"tmd-M2", "tmd-M2-tmmf", "dmd2-s2"}
    prov = json.loads((tmp_path / "ship" / "tmd-M2" / "provenance.json").read_text())
    assert prov["command"].startswith("tmd-bench compare --only tmd-M2 ") and prov["teacher_sha256"]
    assert set(prov["training_wall_time_s"]) == {"stage2"}
    prov = json.loads((tmp_path / "ship" / "tmd-M2-tmmf" / "provenance.json").read_text())
    assert set(prov["training_wall_time_s"]) == {"stage1", "stage2"}
    two_stage = claims.set_index("claim").loc["the two-stage recipe (TM-MF stage 1, then stage 2) ≥ stage 2 from the teacher"]
    assert two_stage["paired"] == 4 and two_stage["verdict"] != "not tested"
    rows = student_evaluations({p.name: p for p in shipped})
    # tmd M2 (N2, N1, N4), the two-stage recipe and its stage 1, dmd2-s2: the plan's rows, from the shipped folders
    assert len(rows) == 6
    teacher = load_teacher("shapes", shapes_teacher_dir)
    a = load_student(tmp_path / "c" / "students" / "tmd-M2" / "stage2" / "student", teacher)
    b = load_student(tmp_path / "ship" / "tmd-M2" / "stage2" / "student", teacher)
    assert next(b.parameters()).dtype == torch.float32
    noise = torch.randn(teacher.latent_shape(1), generator=torch.Generator().manual_seed(0))
    text = teacher.encode_text(["a small red circle moving up on a black background"])
    outer, inner = a.config.outer_grid(), a.config.inner_grid()
    xa, xb = sample_tmd(a, noise, text, outer, inner, [0]), sample_tmd(b, noise, text, outer, inner, [0])
    assert not torch.equal(xa, xb) and (xa - xb).abs().max() < 2e-2

    r = run("compare", "--teacher-path", shapes_teacher_dir, "--only", "nope", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "unknown plan entries" in r.output


def test_demo_runs_on_the_shipped_teacher(tmp_path):
    """The shipped Shapes teacher loads from the package and the demo writes its table and report; its
    draws can be spread over processes (`--draw`), the report waiting until every draw's folder exists,
    and --sweep-draws keeps the teacher's step sweep to the first draws (one launch pair serves both)."""
    from tmd_bench.teachers import SHAPES_TEACHER_DIR, load_teacher

    teacher = load_teacher("shapes")
    assert teacher.path == SHAPES_TEACHER_DIR and teacher.meta["train"]["steps"] > 0
    assert (SHAPES_TEACHER_DIR / "training_log.csv").is_file()
    out = tmp_path / "demo"
    common = ("demo", "--limit", "2", "--draws", "2", "--sweep-draws", "1", "--latency-warmup", "0",
              "--latency-repeats", "1", "--out", out)
    r = run(*common, "--draw", "1")
    assert r.exit_code == 0, r.output
    assert "the report waits for" in r.output and not (out / "report").exists()
    d1 = set(pd.read_csv(out / "eval-draw1" / "results.csv")["row_id"])
    assert "teacher-euler-s50" in d1 and "teacher-euler-s1" not in d1 and "dmd2-s2" in d1  # no sweep on draw 1
    r = run(*common, "--draw", "0")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "eval" / "results.csv")  # draw 0: what a single-draw demo writes
    assert list(df["row_id"])[:8] == ["teacher-euler-s1", "teacher-euler-s2", "teacher-euler-s4", "teacher-euler-s8",
                                      "teacher-euler-s50", "teacher-unipc-s2", "teacher-unipc-s4", "teacher-unipc-s8"]
    assert (out / "report" / "report.html").is_file() and "report:" in r.output
    # the shipped students sit beside the teacher, with counted NFE equal to the declared one
    from tmd_bench.compare import SHIPPED_STUDENTS, plan, student_evaluations

    shipped = {e.name: SHIPPED_STUDENTS / e.name for e in plan("shapes") if (SHIPPED_STUDENTS / e.name).is_dir()}
    students = df[~df["method"].str.startswith("teacher")]
    assert set(students["method"]) == {m for ev in student_evaluations(shipped) for m in ev[0]}
    assert (students["nfe"] == students["nfe_counted"]).all()
    protocols = [json.loads((out / "eval" / c).read_text())["latency_protocol"] for c in df["run_card"]]
    assert {(p["warmup"], p["repeats"]) for p in protocols} == {(0, 1)}  # the demo's latency options, on every row
    # the harder split: every shipped student and the 50-step teacher again on shapes-novel
    novel = df[df["row_id"].str.endswith("-novel")]
    assert {s.split("[")[0] for s in novel["suite"]} == {"shapes-novel"}
    assert {"teacher-euler-s50-novel", "tmd-M2-N2H2-novel", "dmd2-s2-novel"} <= set(novel["row_id"])
    assert "tmd-M2-N2H2-novel" not in r.output.split("report:")[0]  # the printed table is the main suite's
    # pooled over the two draws, with the claims
    rep = pd.read_csv(out / "report" / "report.csv").set_index("row_id")
    assert rep.loc["teacher-euler-s1", "draws"] == 1 and rep.loc["teacher-euler-s50", "draws"] == 2
    assert rep.loc["dmd2-s2", "seeds"] == "0,1000" and (out / "report" / "claims.csv").is_file()
    assert "pooled over 2 seed draws" in r.output
    r = run(*common, "--draw", "2")
    assert r.exit_code == 2 and "--draw must name draws between 0 and 1" in r.output


def test_shipped_students_were_distilled_from_the_shipped_teacher():
    import json

    from tmd_bench.compare import SHIPPED_STUDENTS
    from tmd_bench.teachers import load_teacher

    teacher_hash = load_teacher("shapes").checkpoint_hash()
    for prov in SHIPPED_STUDENTS.glob("*/provenance.json"):
        meta = json.loads(prov.read_text())
        assert meta["teacher_sha256"] == teacher_hash, f"{prov.parent.name} was distilled from another teacher"
        assert meta["command"].startswith("tmd-bench compare")


def test_rows_read_by_two_oracles_do_not_share_a_table(shapes_teacher_dir, tmp_path):
    """v3 is the default reader; a run folder whose rows were read by v2 takes more rows only with
    --oracle 2, and refuses the default with one line that says so, before any compute."""
    out = tmp_path / "o"
    base = ("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler", "--limit", "1",
            "--metrics", "shapes", "--out", out)
    r = run(*base, "--steps", "1", "--oracle", "2")
    assert r.exit_code == 0, r.output
    before = (out / "results.csv").read_text()
    r = run(*base, "--steps", "2")
    assert r.exit_code == 2 and "read with oracle v2, this run reads with v3" in r.output and "--oracle 2" in r.output
    assert (out / "results.csv").read_text() == before
    r = run(*base, "--steps", "2", "--oracle", "2")
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(out / "results.csv")["oracle_version"]) == {2}
    r = run(*base[:-1], tmp_path / "v3", "--steps", "1")
    assert r.exit_code == 0 and set(pd.read_csv(tmp_path / "v3" / "results.csv")["oracle_version"]) == {3}


def test_tag_keeps_two_evaluations_of_one_method_apart_and_gap_pairs_them(shapes_teacher_dir, tmp_path):
    """``--tag`` ends every row id: two runs of one method share a folder (rows, cards, per-clip files
    side by side) and `gap` pairs them clip by clip; the same sampler on the same seeds differs by exactly 0."""
    base = ["evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler", "--steps", "2",
            "--limit", "3", "--latency-warmup", "0", "--latency-repeats", "1", "--preview", "0"]
    for tag in ("first", "second"):
        r = run(*base, "--tag", tag, "--out", tmp_path / "e")
        assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "e" / "results.csv")
    assert sorted(df["row_id"]) == ["teacher-euler-s2-first", "teacher-euler-s2-second"]
    for row in df["row_id"]:
        assert json.loads((tmp_path / "e" / "cards" / f"{row}.json").read_text())["row_id"] == row
        assert len(pd.read_csv(tmp_path / "e" / "per_clip" / f"{row}.csv")) == 3
    r = run("gap", tmp_path / "e", "--baseline", "teacher-euler-s2-first", "--rows", "teacher-euler-s2-second")
    assert r.exit_code == 0, r.output
    assert "+0.0" in r.output and "[+0.0, +0.0]" in r.output, r.output
    for bad in ("a/b", "x,y", " ", "t\n"):
        r = run(*base, "--tag", bad, "--out", tmp_path / "bad")
        assert r.exit_code == 2 and "--tag" in r.output, r.output
        assert not (tmp_path / "bad").exists()
