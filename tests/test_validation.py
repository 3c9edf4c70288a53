"""Bad input is one line and exit status 2 — options, files and the environment — with nothing already
written overwritten; parsers are checked with hypothesis on arbitrary input."""

import errno
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tmd_bench import runtime
from tmd_bench.cli import MAX_MESSAGE, app
from tmd_bench.evaluate import parse_steps
from tmd_bench.suites import SuiteError, load_suite

STUDENTS = Path(__file__).resolve().parents[1] / "tmd_bench" / "assets" / "students"
PROMPT = "a small red circle moving left on a black background"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert text.startswith("error:") or "Usage:" in text, text
    assert "Traceback" not in text and len(text) <= MAX_MESSAGE + 200, text[:300]
    for n in needles:
        assert n in text, text


@pytest.mark.parametrize("args,needle", [
    (["--guidance", "nan"], "--guidance must be a finite number"),
    (["--guidance", "inf"], "--guidance must be a finite number"),
    (["--shift", "0"], "--shift must be > 0"),
    (["--shift", "-2"], "--shift must be > 0"),
    (["--inner-steps", "0"], "--inner-steps must be ≥ 1"),
    (["--preview", "-1"], "--preview must be ≥ 0"),
    (["--steps", "2,,4"], "an empty item"),
    (["--steps", "1000000000"], "--steps must be ≤ 1000"),
    (["--seed", str(2**70)], "--seed must be ≤"),
    (["--seed", "-1"], "--seed must be ≥ 0"),
    (["--device", "tpu"], "is not a device"),
    (["--limit", "0"], "--limit must be ≥ 1"),
])
def test_evaluate_options_are_checked(args, needle, tmp_path):
    r = run("evaluate", *args, "--out", tmp_path / "o")
    one_line_error(r, needle)
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("command,needle", [
    (["distill", "--checkpoint-every", "0"], "--checkpoint-every must be ≥ 1"),
    (["distill", "--checkpoint-every", "-1"], "--checkpoint-every must be ≥ 1"),
    (["distill", "--seed", str(2**70)], "--seed must be ≤"),
    (["distill", "--inner-steps", "0"], "--inner-steps must be ≥ 1"),
    (["distill", "--device", "cuda:x"], "is not a device"),
    (["teacher", "train", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    (["teacher", "train", "--checkpoint-every", "0"], "--checkpoint-every must be ≥ 1"),
    (["teacher", "train", "--lr", "nan"], "--lr must be a finite number"),
    (["data", "generate", "--prompts", "x", "--steps", "0"], "--steps must be ≥ 1"),
    (["data", "generate", "--prompts", "x", "--guidance", "inf"], "--guidance must be a finite number"),
    (["data", "generate", "--prompts", "x", "--solver", "heun"], "--solver must be euler, fmeuler or unipc"),
    (["bench", "latency", "--repeats", "0"], "--repeats must be ≥ 1"),
])
def test_training_data_and_bench_options_are_checked(command, needle, tmp_path):
    one_line_error(run(*command, "--out", tmp_path / "o"), needle)
    assert not (tmp_path / "o").exists()


def test_a_full_disk_is_one_line_and_keeps_what_was_written(shapes_teacher_dir, tmp_path, monkeypatch):
    from tmd_bench import evaluate

    real = evaluate.write_results
    calls = []

    def full(rows, path):
        calls.append(path)
        if len(calls) > 1:  # the first row lands, the second write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(rows, path)

    monkeypatch.setattr(evaluate, "write_results", full)
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--methods", "teacher-euler", "--steps", "1,2",
            "--limit", "2", "--latency-repeats", "1", "--device", "cpu", "--out", tmp_path / "o")
    one_line_error(r, "No space left on device", "the disk is full")
    import pandas as pd

    assert list(pd.read_csv(tmp_path / "o" / "results.csv")["row_id"]) == ["teacher-euler-s1"]  # the finished row stays


def test_an_output_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(run("evaluate", "--limit", "1", "--out", tmp_path / "file" / "run"), "cannot write")
    one_line_error(run("teacher", "train", "--steps", "1", "--out", tmp_path / "file" / "t"))


@pytest.fixture
def student(tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(STUDENTS / "dmd2-s2" / "dmd2" / "student", folder)
    return folder


def evaluate_student(folder, tmp_path):
    return run("evaluate", "--methods", "dmd2", "--checkpoint", f"dmd2={folder}", "--steps", "2", "--limit", "1",
               "--latency-repeats", "1", "--device", "cpu", "--out", tmp_path / "eval")


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_corrupt_student_checkpoint_is_one_line_naming_it(student, tmp_path, damage):
    weights = student / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(range(256)) * 64)
    one_line_error(evaluate_student(student, tmp_path), str(student / "transformer"))
    assert not (tmp_path / "eval").exists()  # a failed evaluation leaves no empty run folder


def test_a_student_without_weights_or_with_pickles_is_refused(student, tmp_path):
    weights = student / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    one_line_error(evaluate_student(student, tmp_path), "no .safetensors weights")
    (student / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    one_line_error(evaluate_student(student, tmp_path), "pickle formats are never loaded")


@pytest.mark.parametrize("config,needle", [("[1, 2]", "expected a JSON object"), ('{"method": "dmd2"}', "missing"),
                                           ("{not json", "not a readable JSON file")])
def test_a_malformed_student_config_is_one_line_naming_it(student, tmp_path, config, needle):
    (student / "student_config.json").write_text(config)
    one_line_error(evaluate_student(student, tmp_path), needle, "student_config.json")


def test_a_run_folder_of_another_kind_is_refused_before_any_compute(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    before = sorted(p.name for p in out.iterdir())
    one_line_error(run("evaluate", "--limit", "1", "--out", out), "no row_id column", str(out / "results.csv"))
    assert sorted(p.name for p in out.iterdir()) == before and (out / "results.csv").read_text() == "a,b\n1,2\n"
    (out / "results.csv").write_bytes(b'row_id,method\n"unterminated,x\n\xff\xfe')
    one_line_error(run("evaluate", "--limit", "1", "--out", out), str(out / "results.csv"))


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (PROMPT + "\n").encode())
    assert load_suite(str(path)).prompts == (PROMPT,)


def test_messages_do_not_echo_input_unbounded(shapes_teacher_dir, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("x" * 100_000 + "\n")
    r = run("evaluate", "--teacher-path", shapes_teacher_dir, "--prompts", path, "--out", tmp_path / "o")
    one_line_error(r, "not a Shapes-world prompt")
    r = run("evaluate", "--teacher", "t" * 100_000, "--out", tmp_path / "o")
    one_line_error(r, "unknown teacher")


# ---------------------------------------------------------------------------------------------
# Parsers on arbitrary input (hypothesis)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_steps_accepts_exactly_lists_of_positive_integers(text):
    try:
        steps = parse_steps(text)
    except ValueError as e:
        assert len(str(e)) < 300
        return
    items = [s.strip() for s in text.split(",")]
    assert steps == list(dict.fromkeys(int(s) for s in items))
    assert all(1 <= s <= runtime.MAX_STEPS for s in steps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, runtime.MAX_STEPS), min_size=1, max_size=6))
def test_parse_steps_round_trips(steps):
    assert parse_steps(",".join(map(str, steps))) == list(dict.fromkeys(steps))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".txt", ".jsonl"]))
def test_prompt_files_load_or_raise_a_suite_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("suite") / f"s{suffix}"
    path.write_bytes(data)
    try:
        suite = load_suite(str(path))
    except SuiteError as e:
        assert str(path) in str(e) and len(str(e)) < 600
        return
    assert suite.prompts and all(p == p.strip() and p for p in suite.prompts)
    if suffix == ".jsonl":
        assert all(isinstance(json.loads(line), dict) for line in data.decode("utf-8-sig").splitlines() if line.strip())
