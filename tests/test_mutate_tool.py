"""`make mutate`'s staging (benchmarks/mutate.py): the package under its import layout, mutmut's
configuration, and a stopped run resumed without losing its verdicts. mutmut itself is not run here
(minutes per module); what is checked is what the script hands it."""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "benchmarks" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_lays_out_the_import_names_and_pairs_each_module_with_its_tests(mutate, tmp_path):
    folder = tmp_path / "stage"
    mods = ["metrics/oracle.py", "tmd_bench/flow.py"]
    mutate.stage(mods, folder)
    # distill/, metrics/, reports/ install as tmd_bench.*: the staged files sit where the imports find them
    assert (folder / "tmd_bench/metrics/oracle.py").read_bytes() == (ROOT / "metrics/oracle.py").read_bytes()
    assert (folder / "tmd_bench/distill/tmd.py").is_file() and (folder / "tmd_bench/reports/pareto.py").is_file()
    assert (folder / "tests" / Path(__file__).name).is_file() and (folder / "README.md").is_file()
    cfg = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert cfg["only_mutate"] == ["tmd_bench/metrics/oracle.py", "tmd_bench/flow.py"]
    assert sorted(cfg["pytest_add_cli_args_test_selection"]) == sorted(
        set(mutate.TESTS["metrics/oracle.py"]) | set(mutate.TESTS["tmd_bench/flow.py"]))
    assert mutate.made_for(folder) == mods
    assert mutate.made_for(tmp_path / "nothing") is None
    # every paired test exists (a renamed test file would silently select nothing)
    for tests in mutate.TESTS.values():
        for t in tests:
            assert (ROOT / t.split("::")[0]).is_file(), t


def test_a_new_run_wipes_the_stage_and_a_resumed_one_keeps_mutmuts_verdicts(mutate, tmp_path):
    folder = tmp_path / "stage"
    mods = ["tmd_bench/flow.py"]
    mutate.stage(mods, folder)
    verdicts = folder / "mutants" / "tmd_bench" / "flow.py.meta"  # where mutmut keeps a file's verdicts
    verdicts.parent.mkdir(parents=True)
    verdicts.write_text('{"exit_code_by_key": {"tmd_bench.flow.x_shift__mutmut_1": 1}}')
    stale = folder / "tmd_bench" / "gone.py"  # a file removed from the repository since the last stage
    stale.write_text("")
    mutate.stage(mods, folder, resume=True)
    assert verdicts.read_text().startswith('{"exit_code_by_key"')
    assert not stale.exists()
    # copies keep their file times: mutmut regenerates the mutants of changed files only
    src, dst = ROOT / "tmd_bench" / "flow.py", folder / "tmd_bench" / "flow.py"
    assert os.stat(dst).st_mtime == os.stat(src).st_mtime
    mutate.stage(mods, folder)
    assert not verdicts.exists()


def _main(mutate, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["mutate.py", *argv])
    return mutate.main()


def test_bad_input_is_one_line_and_exit_status_2_before_anything_is_touched(mutate, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "stage"
    mutate.stage(["tmd_bench/flow.py"], folder)
    (folder / "mutants").mkdir()
    keep = folder / "mutants" / "kept"
    keep.write_text("verdicts")
    # resuming a run with other modules would make mutmut reset every verdict: refused
    assert _main(mutate, monkeypatch, "--stage", str(folder), "--resume", "--module", "reports/pareto.py") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made for tmd_bench/flow.py" in err[0]
    assert _main(mutate, monkeypatch, "--stage", str(folder), "--recheck", str(tmp_path / "none.txt")) == 2
    assert "no such file" in capsys.readouterr().err
    assert _main(mutate, monkeypatch, "--stage", str(tmp_path / "empty"), "--summary-only") == 2
    assert "no mutmut run" in capsys.readouterr().err
    assert keep.read_text() == "verdicts" and (folder / "tmd_bench" / "flow.py").is_file()
