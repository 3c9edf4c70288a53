"""Mutation testing of the modules where a silent bug corrupts results (`make mutate`; not in CI).

mutmut (PyPI) mutates one function at a time and runs the tests that call it: a mutant the tests
still pass on ("survived") is a bug class the suite would not catch. mutmut names a mutant after
the module path it read the file from, and the running code after the module it was imported
as; this repository installs ``distill/``, ``metrics/`` and ``reports/`` as ``tmd_bench.distill``,
``tmd_bench.metrics`` and ``tmd_bench.reports`` (pyproject's ``package-dir``), so the two names
would differ. The script therefore stages the package under its import layout in
``runs/mutate/`` (``tmd_bench/metrics/…``), runs mutmut there, and writes per-module counts.

    python benchmarks/mutate.py                       # every module of the issue (hours on 2 cores)
    python benchmarks/mutate.py --module reports/pareto.py --module tmd_bench/flow.py
    python benchmarks/mutate.py --summary-only        # re-read the last run's results
    python benchmarks/mutate.py --module metrics/oracle.py --stage runs/mutate-oracle --resume
                                                      # go on where a stopped run left off

A run can be stopped at any point (Ctrl-C, the end of a session): with ``--resume`` the stage folder is
kept, the package and tests are copied in again (file times kept, so mutmut regenerates only changed
files), and mutmut re-tests only mutants without a verdict and those of functions that changed since.
New tests are picked up by mutmut's incremental test statistics; mutants that already survived are
re-run against them only when named (``--recheck``).

Each module is paired with the fast, in-process tests that exercise it (``TESTS``): tests that
launch the CLI in a subprocess import the installed, unmutated package and cannot kill a mutant.
Output: ``runs/mutate/summary.csv`` (module, mutants, killed, survived, timeout, no tests, not checked, other) and
``runs/mutate/survivors.txt`` (every survivor's name, for ``mutmut show``).
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "runs" / "mutate"

# repository path → path under the import layout
LAYOUT = {"tmd_bench": "tmd_bench", "distill": "tmd_bench/distill", "metrics": "tmd_bench/metrics",
          "reports": "tmd_bench/reports", "prompts": "tmd_bench/prompts"}

# the modules of issue 16, each with the in-process tests that exercise it
TESTS = {
    "metrics/fidelity.py": ["tests/metrics/test_fidelity.py", "tests/test_guards_metrics.py"],
    "metrics/diversity.py": ["tests/metrics/test_diversity.py"],
    "metrics/vbench.py": ["tests/metrics/test_vbench.py"],
    "metrics/vbench_lite.py": ["tests/metrics/test_vbench_lite.py", "tests/test_guards_metrics.py",
                               "tests/metrics/test_world_scores.py"],
    "metrics/oracle.py": ["tests/metrics/test_oracle_adversarial.py", "tests/metrics/test_world_scores.py"],
    "metrics/shapes.py": ["tests/metrics/test_world_scores.py", "tests/metrics/test_oracle_adversarial.py"],
    "metrics/clip.py": ["tests/metrics/test_clip.py", "tests/test_guards_io.py"],
    "tmd_bench/harness.py": ["tests/test_harness.py", "tests/test_guards_metrics.py",
                             # harness.diagnose, on a TMD student
                             "tests/distill/test_tmd.py::test_inner_noise_sensitivity_is_zero_for_a_head_that_ignores_its_noise"],
    "tmd_bench/flow.py": ["tests/test_flow_sampling.py", "tests/test_guards_training.py"],
    "tmd_bench/sampling.py": ["tests/test_flow_sampling.py"],
    "distill/losses.py": ["tests/test_guards_training.py"],
    # the pure-function tests only: the report tests build pages and open a browser (minutes per mutant)
    "reports/pareto.py": ["tests/test_pooled.py", "tests/test_guards_metrics.py", "tests/test_pareto_ticks.py",
                          "tests/test_report.py::test_pareto_front_keeps_exactly_the_undominated_points",
                          "tests/test_report.py::test_svg_escapes_labels_and_marks_the_front",
                          "tests/test_report.py::test_pareto_front_equals_the_definition_with_ties_and_missing_points"],
}


def staged(module: str) -> str:
    top, _, rest = module.partition("/")
    return f"{LAYOUT[top]}/{rest}"


def stage(modules: list[str], folder: Path, resume: bool = False) -> None:
    """A copy of the package under its import layout, tests beside it, and mutmut's configuration in
    ``folder``. ``resume``: keep mutmut's ``mutants/`` (its verdicts and test statistics) and replace
    only the copies, with their file times, so that mutmut sees which files changed."""
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    for copied in ("tmd_bench", "tests"):
        if (folder / copied).exists():
            shutil.rmtree(folder / copied)
    folder.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dst in LAYOUT.items():
        shutil.copytree(ROOT / src, folder / dst, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore)
    shutil.copy2(ROOT / "README.md", folder / "README.md")  # tests read the README's tables and snippets
    tests = sorted({t for m in modules for t in TESTS[m]})
    only = ", ".join(f'"{staged(m)}"' for m in modules)
    selection = ", ".join(f'"{t}"' for t in tests)
    (folder / "pyproject.toml").write_text(f"""[tool.mutmut]
source_paths = ["tmd_bench"]
also_copy = ["README.md"]
only_mutate = [{only}]
pytest_add_cli_args_test_selection = [{selection}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
process_isolation = "forkserver"

[tool.pytest.ini_options]
testpaths = ["tests"]
""")


STATUS = re.compile(r"^\s*(\S+): (\w[\w ]*)$")


def summarise(modules: list[str], folder: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=folder,
                         capture_output=True, text=True)
    counts: dict[str, Counter] = {m: Counter() for m in modules}
    survivors = []
    by_prefix = {staged(m)[:-3].replace("/", "."): m for m in modules}
    for line in out.stdout.splitlines():
        hit = STATUS.match(line)
        if not hit:
            continue
        name, status = hit.groups()
        module = next((m for p, m in by_prefix.items() if name.startswith(p + ".")), None)
        if module is None:
            continue
        counts[module][status] += 1
        if status == "survived":
            survivors.append(name)
    rows = []
    for m in modules:
        c = counts[m]
        rows.append({"module": m, "mutants": sum(c.values()), "killed": c["killed"], "survived": c["survived"],
                     "timeout": c["timeout"], "no_tests": c["no tests"],
                     "not_checked": c["not checked"],  # the run was stopped before it reached them
                     "other": sum(v for k, v in c.items()
                                  if k not in ("killed", "survived", "timeout", "no tests", "not checked"))})
    with open(folder / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (folder / "survivors.txt").write_text("".join(s + "\n" for s in survivors))
    return rows


def made_for(folder: Path) -> list[str] | None:
    """The modules a stage folder was made for (its mutmut configuration's ``only_mutate``), if any."""
    import tomllib

    config = folder / "pyproject.toml"
    if not config.is_file():
        return None
    by_staged = {staged(m): m for m in TESTS}
    only = tomllib.loads(config.read_text()).get("tool", {}).get("mutmut", {}).get("only_mutate", [])
    return [by_staged[p] for p in only if p in by_staged] or None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", choices=sorted(TESTS), help="a module to mutate (repeatable)")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--stage", type=Path, default=None, help="staging folder (default runs/mutate); a run "
                    "wipes it unless --resume, so runs kept side by side need their own")
    ap.add_argument("--resume", action="store_true", help="go on with the run in --stage: keep its verdicts, "
                    "test only the mutants it has not checked (and those of functions changed since)")
    ap.add_argument("--summary-only", action="store_true", help="summarise the last run in the stage folder")
    ap.add_argument("--recheck", type=Path, help="run only the mutants named in this file (one per line, e.g. "
                    "a previous run's survivors.txt): after new tests, are they killed now?")
    args = ap.parse_args()
    folder = (args.stage or STAGE).resolve()
    before = made_for(folder)
    modules = args.module or ((args.resume or args.summary_only) and before) or list(TESTS)
    if args.recheck is not None and not args.recheck.is_file():
        print(f"--recheck {args.recheck}: no such file (a list of mutant names, e.g. a run's survivors.txt)",
              file=sys.stderr)
        return 2
    if args.resume and before is not None and sorted(before) != sorted(modules):
        # another test selection resets every verdict in mutmut: that is a new run, not a resumed one
        print(f"--resume: {folder} was made for {', '.join(before)}, not {', '.join(modules)} "
              "(drop --resume to start a new run there, or use another --stage)", file=sys.stderr)
        return 2
    if (args.resume or args.summary_only) and not (folder / "mutants").is_dir():
        if args.summary_only:
            print(f"--summary-only: no mutmut run in {folder}", file=sys.stderr)
            return 2
        print(f"--resume: no run in {folder} yet; starting one")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutation testing needs mutmut: `pip install mutmut` (make mutate installs it)", file=sys.stderr)
        return 2
    if not args.summary_only:
        config_before = (folder / "pyproject.toml").read_text() if (folder / "pyproject.toml").is_file() else None
        stage(modules, folder, resume=args.resume)
        if args.resume and config_before not in (None, (folder / "pyproject.toml").read_text()):
            print(f"--resume: the tests paired with {', '.join(modules)} changed since this run (TESTS); "
                  "mutmut re-tests every mutant")
        names = args.recheck.read_text().split() if args.recheck else []
        try:
            rc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children),
                                 *names], cwd=folder).returncode
        except KeyboardInterrupt:  # mutmut has saved every verdict it reached
            rc = None
            print(f"\nstopped: go on with `python benchmarks/mutate.py --stage {folder} --resume`", file=sys.stderr)
        if rc not in (0, None):
            print(f"mutmut exited with {rc}", file=sys.stderr)
    rows = summarise(modules, folder)
    print(f"{'module':28} {'mutants':>8} {'killed':>7} {'survived':>9} {'timeout':>8} {'no tests':>9} "
          f"{'not checked':>12}")
    for r in rows:
        print(f"{r['module']:28} {r['mutants']:>8} {r['killed']:>7} {r['survived']:>9} {r['timeout']:>8} "
              f"{r['no_tests']:>9} {r['not_checked']:>12}" + (f"  (other: {r['other']})" if r["other"] else ""))
    print(f"survivors: {folder / 'survivors.txt'} (inspect one: cd {folder} && mutmut show NAME)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
