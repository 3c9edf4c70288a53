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

from tmd_bench.teachers import ASSETS, Teacher

SHIPPED_STUDENTS = ASSETS / "students"  # what `make demo` evaluates beside the teacher


@dataclass
class Entry:
    name: str  # folder under <out>/students
    method: str
    options: dict = field(default_factory=dict)


def plan(teacher_name: str) -> list[Entry]:
    return [
        # stage 2 from the teacher: on the Shapes world it beats stage 2 from the TM-MF stage-1 student by
        # +3.2 ± 1.3 points at the same 1,000 stage-2 iterations (README, "Stage 1, ablated"), so it ships
        Entry("tmd-M2", "tmd", {"outer_steps": 2, "inner_steps": 2, "stages": (2,)}),
        # the paper's recipe: TM-MF stage 1, then stage 2 from it (its stage-1 student is evaluated too)
        Entry("tmd-M2-tmmf", "tmd", {"outer_steps": 2, "inner_steps": 2}),
        # M = 1 is trained three times longer, as the paper does (both methods: dmd2-s1-x3 below), and stage 2
        # from the teacher as tmd-M2; the 1,000-iteration snapshot of the same run is the matched budget of
        # dmd2-s1 (no setting depends on the total: constant learning rates, every draw seeded by its iteration)
        Entry("tmd-M1", "tmd", {"outer_steps": 1, "inner_steps": 2, "stages": (2,), "stage2_iterations": 3000}),
        # equal compute: a one-block flow head (effective NFE 2·(1 + 1/8) = 2.25 against H = 2's 2.5), stage 2
        # from the teacher as tmd-M2, so the two differ in the head alone
        Entry("tmd-M2-H1", "tmd", {"outer_steps": 2, "inner_steps": 2, "head_blocks": 1, "stages": (2,)}),
        Entry("dmd2-s1", "dmd2", {"steps": 1}),
        # one-step DMD2-v trained three times longer (3,000 iterations), as tmd-M1
        Entry("dmd2-s1-x3", "dmd2", {"steps": 1, "iterations": 3000}),
        # fair M = 1: DMD2-v's one-step student without its KD warm-up, as TMD M1 has none
        Entry("dmd2-s1-nokd", "dmd2", {"steps": 1, "kd_warmup_iterations": 0}),
        Entry("dmd2-s2", "dmd2", {"steps": 2}),
        Entry("dmd2-s3", "dmd2", {"steps": 3}),
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
        options = dict(entry.options)
        stages = tuple(options.pop("stages", (1, 2)))
        cfg = tmd_train.preset(name, **options)
        return tmd_train.run_tmd(teacher, cfg, folder, stages, resume=resume)
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
    # the 50-step teacher is every comparison's reference; the rest of the step sweep is marked "sweep"
    ev = [(["teacher-euler"], [1, 2, 4, 8], {}, {"sweep": True}), (["teacher-euler"], [50], {}, {}),
          (["teacher-unipc"], [2, 4, 8], {}, {"sweep": True})]
    ev += student_evaluations(students)
    return ev


def student_evaluations(students: dict[str, Path]) -> list[tuple[list[str], list[int], dict, dict]]:
    """The plan's evaluations of distilled students (those whose folders exist)."""
    ev: list = []
    s = {k: Path(v) for k, v in students.items()}
    if "tmd-M2" in s:
        # without a dedicated M = 1 student, the M = 2 student also samples at M = 1 (one 1 → 0 step, untrained)
        ev.append((["tmd"], [2] if "tmd-M1" in s else [1, 2], {"tmd": str(s["tmd-M2"] / "stage2" / "student")}, {}))
        for n in (1, 4):  # the paper's inference-time N: fewer or more inner steps than trained (N = 2)
            ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2"] / "stage2" / "student")}, {"inner_steps": n}))
    if "tmd-M2-tmmf" in s:  # the paper's recipe, and its stage 1 alone
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2-tmmf"] / "stage2" / "student")}, {"tag": "tmmf"}))
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2-tmmf"] / "stage1" / "student")}, {"tag": "stage1"}))
    if "tmd-M1" in s:
        ev.append((["tmd"], [1], {"tmd": str(s["tmd-M1"] / "stage2" / "student")}, {}))
    if "tmd-M2-H1" in s:
        ev.append((["tmd"], [2], {"tmd": str(s["tmd-M2-H1"] / "stage2" / "student")}, {}))
    for m in (1, 2, 3, 4):
        if f"dmd2-s{m}" in s:
            ev.append((["dmd2"], [m], {"dmd2": str(s[f"dmd2-s{m}"] / "dmd2" / "student")}, {}))
    if "dmd2-s1-x3" in s:
        ev.append((["dmd2"], [1], {"dmd2": str(s["dmd2-s1-x3"] / "dmd2" / "student")}, {"tag": "x3"}))
    if "dmd2-s1-nokd" in s:
        ev.append((["dmd2"], [1], {"dmd2": str(s["dmd2-s1-nokd"] / "dmd2" / "student")}, {"tag": "nokd"}))
    if "rcm" in s:
        ev.append((["rcm"], [1, 2, 4], {"rcm": str(s["rcm"] / "student")}, {}))
    if "kd" in s:
        ev.append((["kd"], [1], {"kd": str(s["kd"] / "student")}, {}))
    if "meanflow" in s:
        ev.append((["meanflow"], [1, 2], {"meanflow": str(s["meanflow"] / "student")}, {}))
    return [e for e in ev if all(Path(c).is_dir() for c in e[2].values())]


DRAW_SEED_STRIDE = 1000  # draw d evaluates with --seed 1000·d: clip i of the suite gets seed 1000·d + i
NOVEL_SUITE = "shapes-novel"  # colour–shape pairs never shown in training


def draw_seed(d: int) -> int:
    return DRAW_SEED_STRIDE * d


def draw_folder(root: Path, d: int) -> Path:
    """Draw 0 is ``root/eval`` (a single-draw run's folder); draw d > 0 is ``root/eval-draw<d>``."""
    return Path(root) / ("eval" if d == 0 else f"eval-draw{d}")


def draw_folders(root: Path, draws: int) -> tuple[list[Path], list[Path]]:
    """Every draw's folder, and those not written yet (no ``results.csv``): the pooled report waits for them."""
    folders = [draw_folder(root, d) for d in range(draws)]
    return folders, [f for f in folders if not (f / "results.csv").is_file()]


def novel_evaluations(evals: list) -> list:
    """The harder split: each student evaluation (and the 50-step teacher) again on ``shapes-novel``, rows
    suffixed ``novel``. Stage-1-only and sampler-ablation rows are left out: the split asks whether the
    shipped students generalise, not how their variants do."""
    out = [(["teacher-euler"], [50], {}, {"prompts": NOVEL_SUITE, "tag": "novel"})]
    for methods, steps, ckpts, extra in evals:
        if methods[0].startswith("teacher") or "tag" in extra or "inner_steps" in extra:
            continue
        out.append((methods, steps, ckpts, {**extra, "prompts": NOVEL_SUITE, "tag": "novel"}))
    return out


def run_draws(evals: list, root: Path, draws: int, limit: int | None = None, teacher: Teacher | None = None,
              console=None, only: list[int] | None = None, sweep_draws: int | None = None) -> list[Path]:
    """Every evaluation of ``evals`` on ``draws`` seed draws (draw d: ``--seed`` 1000·d, into
    :func:`draw_folder`); returns the draw folders. Rows already in a draw's folder are evaluated again
    (they replace themselves), so an interrupted run is finished by running it again. Evaluations marked
    ``"sweep"`` (the teacher's step sweep besides its 50-step reference) run on the first ``sweep_draws``
    draws only (default: all): they are context, never a baseline."""
    from tmd_bench.evaluate import EvalConfig, evaluate

    folders = []
    for d in range(draws):
        run = draw_folder(root, d)
        if only is not None and d not in only:
            folders.append(run)
            continue
        for methods, steps, ckpts, extra in evals:
            extra = dict(extra)
            if extra.pop("sweep", False) and sweep_draws is not None and d >= sweep_draws:
                continue
            tag = extra.pop("tag", None)
            evaluate(EvalConfig(teacher=teacher.name if teacher else "shapes", methods=methods, steps=steps,
                                checkpoints=ckpts, limit=limit, seed=draw_seed(d), out=str(run), row_suffix=tag,
                                **extra), teacher=teacher)
        if console and draws > 1:
            console.print(f"draw {d + 1}/{draws} (--seed {draw_seed(d)}) done: {run}")
        folders.append(run)
    return folders


# the teacher's components an exported student folder carries (tmd_bench.pipelines): copied byte for byte,
# so the pipeline encodes prompts and decodes exactly as the teacher does
TEACHER_PARTS = ("text_encoder", "tokenizer", "vae")


def student_folders(entry_root: Path) -> list[Path]:
    """The exported student folders under one plan entry's run folder."""
    return sorted(p.parent for p in entry_root.rglob("*.json")
                  if p.name in ("tmd_config.json", "student_config.json") and p.parent.name == "student")


def export_students(out: str | Path, dest: Path = SHIPPED_STUDENTS, names: list[str] | None = None) -> list[Path]:
    """Copy the students of a compare run into ``dest`` (default: the package's shipped students),
    weights as float16 (loaded back into the teacher's dtype), with a ``provenance.json`` per entry:
    the command that reproduces it, its training logs' wall time, the teacher's hash, the commit."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from tmd_bench.evaluate import git_commit

    out = Path(out)
    done = []
    for entry in plan("shapes"):
        root = out / "students" / entry.name
        if names and entry.name not in names or not root.is_dir():
            continue
        target = dest / entry.name
        if target.exists():
            shutil.rmtree(target)
        wall = {}
        for log in sorted(root.rglob("log.csv")):
            lines = log.read_text().strip().splitlines()
            if len(lines) > 1 and "elapsed_s" in lines[0]:
                wall[str(log.parent.relative_to(root))] = float(lines[-1].split(",")[lines[0].split(",").index("elapsed_s")])
        used = {Path(c).resolve() for ev in student_evaluations({entry.name: root}) for c in ev[2].values()}
        for folder in student_folders(root):
            if folder.resolve() not in used:  # e.g. DMD2-v's KD warm-up student: not evaluated, not shipped
                continue
            rel = folder.relative_to(root)
            for f in folder.rglob("*"):
                if f.is_dir():
                    continue
                t = target / rel / f.relative_to(folder)
                t.parent.mkdir(parents=True, exist_ok=True)
                if f.suffix == ".safetensors" and f.relative_to(folder).parts[0] not in TEACHER_PARTS:
                    save_file({k: v.to(torch.float16) if v.is_floating_point() else v
                               for k, v in load_file(str(f)).items()}, str(t))
                else:
                    shutil.copy(f, t)
            meta = json.loads(next(p for p in (folder / "tmd_config.json", folder / "student_config.json")
                                   if p.is_file()).read_text())
            teacher_hash = meta.get("teacher_sha256")
        options = " ".join(f"{k}={v}" for k, v in entry.options.items())
        command = (f"tmd-bench compare --only {entry.name} --distill-only --out runs/compare && "
                   f"tmd-bench compare --only {entry.name} --export --out runs/compare")
        for index in target.rglob("model_index.json"):  # the pipeline folder names the command that made it
            data = json.loads(index.read_text())
            index.write_text(json.dumps({**data, "_command": command}, indent=2))
        (target / "provenance.json").write_text(json.dumps({
            "entry": entry.name, "method": entry.method, "options": options,
            "teacher_sha256": teacher_hash, "training_wall_time_s": wall, "git_commit": git_commit(),
            "stored_as": "float16 copies of the float32 training exports",
            "command": command,
        }, indent=2))
        done.append(target)
    return done


def compare(teacher: Teacher, out: str | Path, only: list[str] | None = None, resume: bool = True,
            limit: int | None = None, console=None, distill_only: bool = False, draws: int = 1,
            novel: bool = True) -> Path | None:
    """Distill (or resume) every planned student, evaluate all on ``draws`` seed draws (pooled in the
    report, with its paired-gap and claims tables), write the report; returns it.

    ``distill_only``: stop after distilling (so several processes can share the entries out);
    a later call without it finds the students done and only evaluates."""
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
    if distill_only:
        return None
    evals = evaluations(students)
    if novel and teacher.spec.world == "shapes":
        evals += novel_evaluations(student_evaluations(students))
    folders = run_draws(evals, out, draws, limit, teacher, console)
    return build_report(folders, out / "report", pool=draws > 1)[1]
