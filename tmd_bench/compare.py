"""`tmd-bench compare`: every method distilled from one teacher and evaluated under one harness.

The plan below is the comparison the TMD paper makes (TMD at M = 1, 2; stage 1 alone vs stage
1 + 2; N = 1 vs N = 2 at inference; DMD2-v at 1, 2, 4 steps; rCM at 1, 2, 4; KD; MeanFlow; the
teacher's solvers). Each distillation runs in its own folder and resumes where it stopped, so
the whole comparison can be spread over several sessions; evaluation rows accumulate in one run
folder and the report merges them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tmd_bench.teachers import Teacher


@dataclass
class Entry:
    name: str  # folder under <out>/students
    method: str
    options: dict = field(default_factory=dict)


def plan(teacher_name: str) -> list[Entry]:
    return [
        Entry("tmd-M2", "tmd", {"outer_steps": 2, "inner_steps": 2}),
        Entry("tmd-M1", "tmd", {"outer_steps": 1, "inner_steps": 2}),
        Entry("dmd2-s1", "dmd2", {"steps": 1}),
        Entry("dmd2-s2", "dmd2", {"steps": 2}),
        Entry("dmd2-s4", "dmd2", {"steps": 4}),
        Entry("rcm", "rcm", {}),
        Entry("kd", "kd", {}),
        Entry("meanflow", "meanflow", {}),
    ]


def distill_entry(teacher: Teacher, entry: Entry, folder: Path, resume: bool) -> Path:
    """Distill one entry with its teacher preset; returns the student folder(s) root."""
    from tmd_bench.distill import dmd2, kd, meanflow, rcm, tmd_train

    name = teacher.name
    if entry.method == "tmd":
        cfg = tmd_train.preset(name, **entry.options)
        return tmd_train.run_tmd(teacher, cfg, folder, resume=resume)
    if entry.method == "dmd2":
        return dmd2.run_dmd2(teacher, dmd2.preset(name, **entry.options), folder, resume=resume)
    if entry.method == "rcm":
        return rcm.run_rcm(teacher, rcm.preset(name, **entry.options), folder, resume=resume)
    if entry.method == "kd":
        return kd.run_kd(teacher, kd.KDConfig(**entry.options), folder, resume=resume)
    if entry.method == "meanflow":
        return meanflow.run_meanflow(teacher, meanflow.preset(name, **entry.options), folder, resume=resume)
    raise ValueError(f"unknown method {entry.method!r}")


def evaluations(students: dict[str, Path]) -> list[tuple[list[str], list[int], dict, dict]]:
    """(methods, steps, checkpoints, extra EvalConfig fields) for each evaluation of the plan."""
    ev = [(["teacher-euler"], [1, 2, 4, 8, 50], {}, {}), (["teacher-unipc"], [2, 4, 8], {}, {})]
    s = students
    if "tmd-M2" in s:
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2"] / "stage2" / "student")}, {}))
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2"] / "stage2" / "student")}, {"inner_steps": 1}))
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2"] / "stage1" / "student")}, {"tag": "stage1"}))
    if "tmd-M1" in s:
        ev.append((["tmd"], [1], {"tmd": str(s["tmd-M1"] / "stage2" / "student")}, {}))
    for m in (1, 2, 4):
        if f"dmd2-s{m}" in s:
            ev.append((["dmd2"], [m], {"dmd2": str(s[f"dmd2-s{m}"] / "dmd2" / "student")}, {}))
    if "rcm" in s:
        ev.append((["rcm"], [1, 2, 4], {"rcm": str(s["rcm"] / "student")}, {}))
    if "kd" in s:
        ev.append((["kd"], [1], {"kd": str(s["kd"] / "student")}, {}))
    if "meanflow" in s:
        ev.append((["meanflow"], [1, 2], {"meanflow": str(s["meanflow"] / "student")}, {}))
    return ev


def compare(teacher: Teacher, out: str | Path, only: list[str] | None = None, resume: bool = True,
            limit: int | None = None, console=None) -> Path:
    """Distill (or resume) every planned student, evaluate all, write the report; returns it."""
    from tmd_bench.evaluate import EvalConfig, evaluate
    from tmd_bench.reports.html import build_report

    out = Path(out)
    entries = [e for e in plan(teacher.name) if not only or e.name in only]
    students: dict[str, Path] = {}
    for entry in entries:
        t0 = time.time()
        distill_entry(teacher, entry, out / "students" / entry.name, resume)
        students[entry.name] = out / "students" / entry.name
        if console:
            console.print(f"{entry.name}: distilled ({time.time() - t0:.0f} s this run)")
    run = out / "eval"
    for methods, steps, ckpts, extra in evaluations(students):
        tag = extra.pop("tag", None)
        evaluate(EvalConfig(teacher=teacher.name, methods=methods, steps=steps, checkpoints=ckpts, limit=limit,
                            out=str(run), row_suffix=tag, **extra), teacher=teacher)
    return build_report([run], out / "report")[1]
