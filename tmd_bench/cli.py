"""The `tmd-bench` command line: evaluate, report, teacher training, demo.

Errors a user can fix (unknown teacher, missing weights, malformed prompts, bad options,
unwritable folders, incompatible checkpoints) print one clear message and exit with status 2;
nothing else is lost (evaluation rows and training checkpoints are written as they complete).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tmd_bench.runtime import DEVICE_HELP, DTYPE_HELP

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluation-first benchmarking and distillation for few-step video diffusion.")
teacher_app = typer.Typer(no_args_is_help=True, help="Teachers: list them, train the Shapes teacher.")
app.add_typer(teacher_app, name="teacher")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures (never timed assertions).")
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)
# Tables are wide; when output goes to a file or CI log, don't squeeze them into 80 columns.
out_console = Console(width=None if Console().is_terminal else 160)


# The toolkit's user-facing exception classes, by module: the wrapper below looks them up only in
# modules already imported (an exception of a class whose module never loaded cannot occur), so a
# command that fails fast never imports torch just to report it.
_USER_ERRORS = (("tmd_bench.registry", "TeacherNotFound"), ("tmd_bench.checkpoint", "IncompatibleCheckpoint"),
                ("tmd_bench.metrics.clip", "ClipWeightsNotFound"), ("tmd_bench.reports.html", "ReportError"),
                ("tmd_bench.suites", "SuiteError"))


def _user_error_types() -> tuple[type, ...]:
    types: list[type] = [PermissionError, FileExistsError, FileNotFoundError, FloatingPointError, ValueError]
    for module, name in _USER_ERRORS:
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


# Environment errors a user can act on (disk full, read-only or unwritable folder, a file where a folder
# is expected): one line naming the path, not a traceback.
_ENV_ERRNOS = {"ENOSPC": "the disk is full: free space or choose another folder",
               "EDQUOT": "the disk quota is exceeded: free space or choose another folder",
               "EROFS": "the file system is read-only: choose another folder",
               "EACCES": "permission denied: choose a folder you can write to",
               "EPERM": "operation not permitted: choose a folder you can write to",
               "ENOTDIR": "a file stands where a folder is expected", "EISDIR": "a folder stands where a file is expected",
               "ENAMETOOLONG": "the path is too long"}
MAX_MESSAGE = 600  # characters of an error line: input is never echoed unbounded


def _environment_error(e: BaseException) -> str | None:
    import errno

    if not isinstance(e, OSError) or e.errno is None:
        return None
    name = errno.errorcode.get(e.errno, "")
    if name not in _ENV_ERRNOS:
        return None
    where = e.filename or "the output folder"
    return f"cannot write {where}: {e.strerror or name} ({_ENV_ERRNOS[name]}); files already written are intact"


def _safetensors_error(e: BaseException) -> bool:
    module = sys.modules.get("safetensors")
    return module is not None and isinstance(e, getattr(module, "SafetensorError", ()))


def _one_line(text: str) -> str:
    text = " ".join(str(text).splitlines())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def user_errors(fn):
    """Turn the toolkit's user-facing exceptions into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: completed rows and checkpoints are on disk; "
                          "re-run (training: with --resume) to continue.")
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is a user-facing error
            message = _environment_error(e)
            if message is None and _safetensors_error(e):
                message = f"a .safetensors file is corrupt or truncated ({e}); re-create or re-download it"
            if message is None and isinstance(e, _user_error_types()):
                message = str(e)
            if message is None:
                raise  # an internal error: its traceback is what a bug report needs
            console.print("[bold red]error:[/] " + _escape(_one_line(message)), highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _steps(value: str) -> list[int]:
    from tmd_bench.evaluate import parse_steps

    try:
        return parse_steps(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _checkpoints(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise typer.BadParameter(f"--checkpoint takes METHOD=FOLDER, got {v!r}")
        k, p = v.split("=", 1)
        out[k] = p
    return out


@app.command()
@user_errors
def evaluate(
    teacher: str = typer.Option("shapes", help="Teacher id: shapes, wan2.1-1.3b, wan2.1-14b."),
    teacher_path: Optional[Path] = typer.Option(None, help="Folder with the teacher in the diffusers layout "
                                                "(default: shipped shapes teacher / Hugging Face cache)."),
    methods: str = typer.Option("teacher", help="Comma-separated methods: teacher (the checkpoint's own sampler), "
                                "teacher-unipc, teacher-fmeuler (diffusers' schedulers, as WanPipeline), teacher-euler "
                                "(tmd-bench's uniform grid), …-nocfg, and distilled ones with --checkpoint."),
    steps: str = typer.Option("1,2,4,8,50", help="Comma-separated step counts (outer steps M for TMD)."),
    prompts: Optional[str] = typer.Option(None, help="Prompt suite: a built-in name (shapes-eval, shapes-novel) "
                                          "or a .txt/.jsonl file. Default: the teacher's own suite."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N prompts of the suite."),
    seed: int = typer.Option(0, help="Base seed: clip i uses seed + i."),
    batch_size: int = typer.Option(32, help="Clips generated per batch (quality pass)."),
    guidance: Optional[float] = typer.Option(None, help="CFG scale for teacher solvers (default: the teacher's)."),
    shift: Optional[float] = typer.Option(None, help="Timestep shift for teacher solvers (default: the teacher's)."),
    latency_warmup: int = typer.Option(1, help="Untimed warm-up generations before timing."),
    latency_repeats: int = typer.Option(3, help="Timed generations (the median is reported)."),
    preview: int = typer.Option(4, help="Clips per configuration kept for the report's side-by-side samples."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the transformer blocks; the compile time "
                                  "is reported apart (compile_s), the timed runs follow a compiling warm-up."),
    frames: Optional[int] = typer.Option(None, help="Video frames (Wan teachers; default 81)."),
    height: Optional[int] = typer.Option(None, help="Video height (Wan teachers; default 480)."),
    width: Optional[int] = typer.Option(None, help="Video width (Wan teachers; default 832)."),
    checkpoint: list[str] = typer.Option([], help="METHOD=FOLDER of a distilled student (repeatable)."),
    inner_steps: Optional[int] = typer.Option(None, help="TMD: inner steps N at inference (default: the checkpoint's)."),
    oracle: int = typer.Option(3, help="Shapes world: the oracle that reads attributes — 3 (every object on its own, "
                               "ambiguous or out-of-range readings wrong) or 2 (the earlier reader, to compare old runs)."),
    per_prompt: Optional[int] = typer.Option(None, help="Clips per prompt K (clip j of prompt i: seed + i·K + j). "
                                             "Default 1, or 8 with --metrics diversity."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated: shapes, clip, fidelity, vbench-lite, shapes-clip, "
                                          "fd, diversity (default: shapes,shapes-clip,fd on the Shapes world, none "
                                          "elsewhere)."),
    clip_model: str = typer.Option("ViT-B-32", help="open_clip model for --metrics clip (e.g. ViT-B-32, ViT-H-14)."),
    clip_weights: Optional[Path] = typer.Option(None, help="Local .safetensors CLIP weights (default: the HF cache)."),
    nproc: Optional[int] = typer.Option(None, help="Processes (GPUs) on this machine: the suite is split across them "
                                        "under torchrun, rank 0 scores and writes (same numbers as one process)."),
    tag: Optional[str] = typer.Option(None, help="Suffix of every row id (tmd-M2-N2H2-TAG): two students of one "
                                      "method, evaluated into one folder or paired by `tmd-bench gap`, stay apart."),
    out: Path = typer.Option(Path("runs/eval"), help="Run folder (results.csv, cards/, samples/)."),
):
    """Sample a prompt suite with each method × step count; write results.csv and run cards."""
    from tmd_bench import runtime

    runtime.check_device(device)
    runtime.check_dtype(dtype)
    runtime.prepare_teacher(teacher, teacher_path, frames, height, width)  # fail fast, before torch loads

    from tmd_bench import distributed
    from tmd_bench.evaluate import EvalConfig
    from tmd_bench.evaluate import evaluate as run_eval

    if nproc is not None and not distributed.launched():
        raise typer.Exit(distributed.torchrun(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    device = distributed.init(runtime.resolve_device(device))

    cfg = EvalConfig(dtype=dtype, compile=compile_, teacher=teacher, teacher_path=str(teacher_path) if teacher_path else None,
                     methods=[m.strip() for m in methods.split(",") if m.strip()], steps=_steps(steps),
                     prompts=prompts, limit=limit, seed=seed, batch_size=batch_size, guidance=guidance,
                     shift=shift, latency_warmup=latency_warmup, latency_repeats=latency_repeats,
                     preview=preview, device=device, frames=frames, height=height, width=width, checkpoints=_checkpoints(checkpoint), inner_steps=inner_steps, per_prompt=per_prompt, oracle=oracle,
                     metrics=_metric_list(metrics),
                     clip_model=clip_model, clip_weights=str(clip_weights) if clip_weights else None,
                     row_suffix=tag, out=str(out))
    run_eval(cfg, console=out_console if distributed.is_main() else None)
    if distributed.is_main():
        out_console.print(f"results: {out / 'results.csv'}")
    distributed.shutdown()


@app.command()
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders written by `tmd-bench evaluate`."),
    out: Path = typer.Option(Path("runs/report"), help="Folder for report.csv and report.html."),
    metric: Optional[str] = typer.Option(None, help="Quality axis (default: all_correct on Shapes)."),
    pool: bool = typer.Option(False, help="The runs are seed draws of the same rows (--draws, or evaluate with "
                              "--seed 0, 1000, …): pool each row over them, add the paired-gap and claims tables."),
):
    """Merge runs into report.csv and a self-contained report.html with Pareto plots."""
    from tmd_bench.reports.html import build_report

    csv_path, html_path = build_report(runs, out, metric, pool=pool)
    out_console.print(f"report: {html_path}\ntable:  {csv_path}"
                      + (f"\ngaps:   {csv_path.parent / 'gaps.csv'}\nclaims: {csv_path.parent / 'claims.csv'}" if pool else ""))


def _metric_list(metrics: Optional[str]) -> Optional[list[str]]:
    """``--metrics a,b`` as a list (None: the evaluation's default)."""
    return [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None


def _metric_options(metrics: Optional[str], per_prompt: Optional[int], limit: Optional[int]) -> Optional[list[str]]:
    """``--metrics``/``--per-prompt``/``--limit`` of a command that evaluates many rows, checked as `evaluate`
    checks them (one line, exit 2) before any work; returns the metric list."""
    from tmd_bench.evaluate import EvalConfig

    chosen = _metric_list(metrics)
    EvalConfig(metrics=chosen, per_prompt=per_prompt, limit=limit).validate()
    return chosen


@app.command()
@user_errors
def curves(
    runs: list[Path] = typer.Argument(..., help="Run folders written by `tmd-bench distill` (or compare's students/<entry>)."),
    out: Path = typer.Option(Path("runs/curves"), help="Folder for the evaluations, curves.csv and curves.html."),
    draws: int = typer.Option(1, help="Seed draws K per snapshot (--seed 0, 1000, …), pooled."),
    limit: Optional[int] = typer.Option(None, help="Evaluate on the first N prompts only."),
    teacher: str = typer.Option("shapes", help="The teacher the students were distilled from."),
    teacher_path: Optional[Path] = typer.Option(None, help="Its folder (diffusers layout)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    draw: Optional[str] = typer.Option(None, help="Only these draws (comma-separated, 0-based): spread --draws "
                                       "over processes, then run once more with --report-only."),
    report_only: bool = typer.Option(False, help="Only pool the draws already evaluated into the curves."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated, as for `evaluate` (default: its default). "
                                          "Add diversity for diversity curves (K clips per prompt: with --limit, "
                                          "e.g. --limit 16 --per-prompt 8, the same clip count as 128 prompts × 1)."),
    per_prompt: Optional[int] = typer.Option(None, help="Clips per prompt K, as for `evaluate` (default 1, or 8 with "
                                             "--metrics diversity)."),
):
    """Training-efficiency curves: every kept student snapshot evaluated under one harness, quality
    against distillation iterations and training wall time (Shapes world: snapshots at 100, 200, 500,
    1,000, 2,000 iterations are kept by default)."""
    from tmd_bench import runtime
    from tmd_bench.curves import curves as run_curves
    from tmd_bench.curves import find_snapshots

    runtime.check_number("--draws", draws, 1, 64)
    chosen = runtime.parse_indices("--draw", draw, draws) if draw else None
    chosen_metrics = _metric_options(metrics, per_prompt, limit)  # a bad option fails before the teacher loads
    snaps = find_snapshots(runs)  # a missing or empty run folder fails here, before the teacher loads
    out_console.print(f"{len(snaps)} student snapshots in {len(runs)} run(s)")
    t = None if report_only else runtime.load(teacher, teacher_path, device, None)
    done = run_curves(snaps, out, draws, limit, console=out_console, teacher=t, only=chosen, evaluate=not report_only,
                      metrics=chosen_metrics, per_prompt=per_prompt)
    if done is None:
        out_console.print(f"draws done; the curves wait for the other draws (then: tmd-bench curves … --draws {draws} "
                          f"--report-only --out {out})")
        return
    csv_path, html_path = done
    out_console.print(f"curves: {html_path}\ntable:  {csv_path}")


@app.command()
@user_errors
def gap(
    runs: list[Path] = typer.Argument(..., help="Run folders written by `tmd-bench evaluate` (pooled)."),
    baseline: str = typer.Option(..., help="Row id to compare against, e.g. teacher-euler-s50."),
    rows: str = typer.Option(..., help="Comma-separated row ids, e.g. tmd-M2-N2H2,tmd-M2-N1H2."),
    metric: str = typer.Option("all_correct", help="Per-clip column (True/False or a number in [0, 1]), or a "
                               "diversity measure (div_pairwise, div_vendi, div_world_coverage, div_world_energy: "
                               "per prompt, paired by prompt and its K seeds, in the measure's units)."),
    within: Optional[float] = typer.Option(None, help="Margin X in points: is each row within X of the baseline?"),
):
    """Row − baseline in points, paired by (prompt, seed) clip, with its paired standard error and 95% interval."""
    from rich.table import Table

    from tmd_bench.reports.paired import paired_gap, table_of

    chosen = [r.strip() for r in rows.split(",") if r.strip()]
    results = paired_gap(runs, baseline, chosen, metric=metric, within=within)
    grouped = table_of(metric) == "per_prompt"  # diversity: one value per prompt's K clips, in its own units
    unit, pct, fmt = ("", "", "{:.3f}") if grouped else (" (pts)", " %", "{:.1f}")
    pair = "(prompt, its K seeds)" if grouped else "(prompt, seed)"
    table = Table(title=f"tmd-bench gap — {metric}, row − {baseline}, paired by {pair} over {len(runs)} run(s)")
    for c in ("row", "runs", "paired prompts" if grouped else "paired", f"baseline{pct}", f"row{pct}",
              f"diff{unit}", f"SE{unit}", "95% interval", "unpaired row/base"):
        table.add_column(c, justify="left" if c == "row" else "right")
    if within is not None:
        table.add_column(f"within {within:g}{' pts' if not grouped else ''}")
    signed = fmt.replace("{:", "{:+")
    for r in results:
        cells = [r["row_id"], str(r["runs"]), str(r["paired"]), fmt.format(r["baseline_rate"]), fmt.format(r["row_rate"]),
                 signed.format(r["diff"]), fmt.format(r["se"]),
                 f"[{signed.format(r['lo'])}, {signed.format(r['hi'])}]",
                 f"{r['unpaired_row']}/{r['unpaired_baseline']}"]
        if within is not None:
            cells.append(r["within"])
        table.add_row(*(_escape(c) for c in cells))
    out_console.print(table)
    if within is not None:
        out_console.print(f"yes: the 95% lower bound of row − baseline is ≥ −{within:g}; estimate only: only the "
                          "point estimate is; no: neither.", highlight=False)


@app.command()
@user_errors
def card(
    student: Path = typer.Argument(..., help="An exported student folder (it has model_index.json)."),
    results: Path = typer.Option(..., help="results.csv or report.csv (e.g. a pooled report) holding its rows."),
    rows: str = typer.Option(..., help="Comma-separated row ids of this student, e.g. tmd-M2-N2H2,tmd-M2-N2H2-novel."),
):
    """Write the student's model card (README.md, Hugging Face format) with its tmd-bench results rows."""
    from tmd_bench.pipelines import update_card

    path = update_card(student, results, [r.strip() for r in rows.split(",") if r.strip()])
    out_console.print(f"model card: {path}", highlight=False)


@app.command()
@user_errors
def distill(
    teacher: str = typer.Option("shapes", help="Teacher id: shapes, wan2.1-1.3b, wan2.1-14b."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout)."),
    method: str = typer.Option("tmd", help="Distillation method: tmd, dmd2, rcm, kd, meanflow."),
    steps: Optional[int] = typer.Option(None, help="dmd2: student steps M (1 adds a KD warm-up)."),
    iterations: Optional[int] = typer.Option(None, help="dmd2/kd: training iterations (default: the preset's)."),
    kd_pairs: Optional[int] = typer.Option(None, help="kd (and one-step dmd2's warm-up): teacher ODE pairs to cache."),
    kd_teacher_steps: Optional[int] = typer.Option(None, help="kd: teacher Euler steps per pair."),
    prompts: Optional[str] = typer.Option(None, help="kd and one-step dmd2 on a Wan teacher: prompt file (or suite) "
                                          "for the teacher ODE pairs (default: the prompts recorded in --data)."),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    frames: Optional[int] = typer.Option(None, help="Wan: video frames of the clips the teacher samples (kd pairs, "
                                         "one-step dmd2's warm-up); training on --data uses the data's size."),
    height: Optional[int] = typer.Option(None, help="Wan: video height (see --frames)."),
    width: Optional[int] = typer.Option(None, help="Wan: video width (see --frames)."),
    outer_steps: Optional[int] = typer.Option(None, help="TMD: outer steps M (default: the teacher's preset)."),
    inner_steps: Optional[int] = typer.Option(None, help="TMD: inner steps N."),
    head_blocks: Optional[int] = typer.Option(None, help="TMD: flow-head blocks H."),
    stage: str = typer.Option("all", help="TMD: 1 (TM-MF), 2 (DMD2-v with rollout) or all."),
    stage1_iterations: Optional[int] = typer.Option(None, help="Override the preset's stage-1 iterations."),
    stage2_iterations: Optional[int] = typer.Option(None, help="Override the preset's stage-2 iterations."),
    batch_size: Optional[int] = typer.Option(None, help="Override the preset's batch size."),
    init: Optional[Path] = typer.Option(None, help="Stage 2 alone: start from this TMD student (default: the teacher)."),
    dropped_target: Optional[str] = typer.Option(None, help="TMD stage 1: the target of text-dropped samples — "
                                                 "guided (default: the CFG target, as the shipped students were "
                                                 "trained) or unguided (their own TM-MF target, as FastGen's "
                                                 "MeanFlow; 1.2 points worse in the README's ablation)."),
    tm_prob: Optional[float] = typer.Option(None, help="TMD stage 1: probability of r = s (default 0.75, TM-MF); "
                                            "1 trains plain transition matching (the paper's ablation)."),
    rollout: bool = typer.Option(True, "--rollout/--no-rollout", help="TMD stage 2: the student's sample rolled "
                                 "out through the head's N inner steps (default), or the head's one jump s_N ≈ 1 → 0 "
                                 "(the paper's no-rollout ablation; sampling still takes N steps)."),
    kd_warmup_iterations: Optional[int] = typer.Option(None, help="dmd2 --steps 1: iterations of its KD warm-up "
                                                       "(default: the preset's; 0: none, DMD2-v from the teacher)."),
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(100, help="Iterations between checkpoints."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    nproc: Optional[int] = typer.Option(None, help="TMD: processes (GPUs) on this machine; runs this command under "
                                        "torchrun (or launch `torchrun --nproc-per-node K -m tmd_bench distill …`)."),
    strategy: str = typer.Option("ddp", help="Under torchrun: ddp (networks fit one GPU) or fsdp (FSDP2: teacher, "
                                 "student, fake score and discriminator sharded)."),
    grad_accumulation: int = typer.Option(1, help="Under torchrun: micro-batches per process and optimiser step; the "
                                          "global batch (--batch-size) is processes × accumulation × micro-batch."),
    mixed_precision: bool = typer.Option(False, help="Under torchrun: bf16 compute, fp32 weights and optimiser "
                                         "(FSDP2 MixedPrecisionPolicy; DDP autocast)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help="Recompute the student's blocks in backward "
                                                          "(default: the preset's; on for Wan)."),
    data: Optional[Path] = typer.Option(None, help="Train on a folder of latents written by `tmd-bench data "
                                        "generate/encode` (needed for Wan teachers; default: the Shapes world). "
                                        "Under torchrun each process reads its rows of the global batch."),
    out: Path = typer.Option(Path("runs/distill"), help="Run folder (stage1/, stage2/, each with student/)."),
):
    """Distill a few-step student from a teacher (TMD: stage 1 then stage 2, resumable)."""
    from tmd_bench import runtime
    from tmd_bench.registry import clip_text

    if method not in ("tmd", "dmd2", "rcm", "kd", "meanflow"):
        raise ValueError(f"unknown method {clip_text(method)!r}; available: tmd, dmd2, rcm, kd, meanflow")
    runtime.check_device(device)
    runtime.check_dtype(dtype)
    runtime.check_seed(seed)
    runtime.check_number("--checkpoint-every", checkpoint_every, 1)
    runtime.check_number("--steps", steps, 1, 16)
    for flag, v in (("--iterations", iterations), ("--stage1-iterations", stage1_iterations),
                    ("--stage2-iterations", stage2_iterations), ("--kd-pairs", kd_pairs)):
        runtime.check_number(flag, v, 1, 10_000_000)
    runtime.check_number("--kd-warmup-iterations", kd_warmup_iterations, 0, 10_000_000)
    if method != "tmd" and (tm_prob is not None or not rollout):
        raise ValueError("--tm-prob and --no-rollout are TMD's (stage 1 and stage 2); "
                         f"--method {clip_text(method)} has neither")
    if kd_warmup_iterations is not None and method != "dmd2":
        raise ValueError(f"--kd-warmup-iterations is one-step dmd2's; --method {clip_text(method)} has no warm-up")
    runtime.check_number("--kd-teacher-steps", kd_teacher_steps, 1, runtime.MAX_STEPS)
    runtime.check_number("--outer-steps", outer_steps, 1, 16)
    runtime.check_number("--inner-steps", inner_steps, 1, 64)
    runtime.check_number("--head-blocks", head_blocks, 1)
    runtime.check_number("--batch-size", batch_size, 1, 1_000_000)
    _, spec = runtime.prepare_teacher(teacher, teacher_path, frames, height, width)  # fail fast, before torch loads
    size = dict(frames=frames, height=height, width=width)
    if prompts is not None and method not in ("kd", "dmd2"):
        raise ValueError("--prompts feeds the teacher ODE pairs of kd and one-step dmd2; "
                         f"{method} trains on --data (or the Shapes world)")
    if prompts is not None:
        from tmd_bench.suites import load_suite

        load_suite(prompts)  # a bad prompt file fails now, not after the teacher has loaded

    from tmd_bench import distributed
    from tmd_bench.distill.tmd_train import preset, run_tmd
    parallel = None
    if nproc is not None or distributed.launched():
        if method != "tmd":
            raise ValueError(f"several processes (--nproc, torchrun) run --method tmd; {method} runs in one process")
        if not distributed.launched():
            raise typer.Exit(distributed.torchrun(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
        parallel = distributed.Parallel(strategy, grad_accumulation, mixed_precision)
        parallel.validate()
        device = distributed.init(runtime.resolve_device(device))
    elif grad_accumulation != 1 or mixed_precision:
        raise ValueError("--grad-accumulation and --mixed-precision apply under torchrun: add --nproc 1 (or more)")
    device = runtime.resolve_device(device)
    if method != "tmd":
        _distill_full_student(method, teacher, teacher_path, steps, iterations, batch_size, seed, device,
                              resume, out, checkpoint_every, kd_pairs, kd_teacher_steps, data, dtype=dtype,
                              prompts=prompts, size=size, gradient_checkpointing=gradient_checkpointing,
                              shapes=spec.world == "shapes", kd_warmup_iterations=kd_warmup_iterations)
        return
    stages = {"all": (1, 2), "1": (1,), "2": (2,)}.get(stage)
    if stages is None:
        raise ValueError(f"--stage must be 1, 2 or all, got {stage!r}")
    cfg = preset(teacher, outer_steps=outer_steps, inner_steps=inner_steps, head_blocks=head_blocks,
                 stage1_iterations=stage1_iterations, stage2_iterations=stage2_iterations,
                 batch_size=batch_size, seed=seed, gradient_checkpointing=gradient_checkpointing,
                 dropped_target=dropped_target, tm_prob=tm_prob, stage2_rollout=None if rollout else False)
    if parallel is not None and parallel.mixed_precision:
        dtype = "float32"  # fp32 master weights, bf16 compute
    t = runtime.load(teacher, teacher_path, device, dtype, **size)
    cfg.tmd.validate(t.num_blocks)
    t0 = time.time()
    final = run_tmd(t, cfg, out, stages, resume=resume, init=init, checkpoint_every=checkpoint_every,
                    parallel=parallel, data=data)
    main = distributed.is_main()
    distributed.shutdown()
    if not main:
        return
    out_console.print(f"{cfg.tmd.label} student: {final}  ({time.time() - t0:.0f} s)\n"
                      f"evaluate it: {_evaluate_hint(teacher, teacher_path, 'tmd', final, cfg.outer_steps, t)}",
                      highlight=False, soft_wrap=True)


def _evaluate_hint(teacher, teacher_path, method, student, steps, t) -> str:
    """The `tmd-bench evaluate` command for a student just distilled, with every option it needs."""
    import shlex

    from tmd_bench import runtime

    args = ["tmd-bench", "evaluate", "--teacher", teacher]
    if teacher_path is not None:
        args += ["--teacher-path", str(teacher_path)]
    args += ["--methods", method, "--checkpoint", f"{method}={student}", "--steps", str(steps),
             "--dtype", runtime.dtype_name(t.dtype), "--device", str(t.device.type)]
    return shlex.join(args)


def _distill_full_student(method, teacher, teacher_path, steps, iterations, batch_size, seed, device, resume, out,
                          checkpoint_every, kd_pairs, kd_teacher_steps, data=None, dtype=None, prompts=None,
                          size=None, gradient_checkpointing=None, shapes=False, kd_warmup_iterations=None):
    """DMD2-v or KD: the whole network as a few-step student."""
    from dataclasses import replace

    from tmd_bench import runtime
    from tmd_bench.distill import dmd2, kd

    if data is not None and method == "kd" and shapes:
        raise ValueError("--data: on the Shapes teacher kd regresses on teacher ODE pairs drawn from the Shapes "
                         "world and reads no data (on a Wan teacher --data supplies the pairs' prompts)")
    if prompts is not None and shapes:
        raise ValueError("--prompts: the Shapes teacher's KD pairs take their prompts from the Shapes world "
                         "(--prompts is for Wan teachers)")

    if gradient_checkpointing is not None and method in ("rcm", "meanflow"):
        raise ValueError(f"--gradient-checkpointing/--no-gradient-checkpointing: {method} has no gradient "
                         "checkpointing option (tmd, dmd2 and kd do)")
    cfg = dmd2.preset(teacher, steps=steps, iterations=iterations, batch_size=batch_size, seed=seed,
                      kd_pairs=kd_pairs, kd_teacher_steps=kd_teacher_steps,
                      gradient_checkpointing=gradient_checkpointing, kd_warmup_iterations=kd_warmup_iterations)
    if kd_warmup_iterations and cfg.steps != 1:
        raise ValueError(f"--kd-warmup-iterations: only one-step dmd2 has a KD warm-up (--steps {cfg.steps})")
    pairs = method == "kd" or (method == "dmd2" and cfg.steps == 1 and cfg.kd_warmup_iterations > 0)
    if prompts is not None and not pairs:
        raise ValueError(f"--prompts feeds the KD warm-up of one-step dmd2; --steps {cfg.steps} has none")
    pair_prompts = None  # a Wan teacher's KD pairs (kd, one-step dmd2's warm-up): --prompts, else --data's prompts
    if pairs and not shapes:
        if prompts is not None:
            from tmd_bench.suites import load_suite

            pair_prompts = load_suite(prompts).prompts
        elif data is None:
            raise ValueError(f"{method} on {teacher!r} caches teacher ODE pairs, which need prompts: pass --prompts "
                             "FILE (or a suite name) or --data FOLDER (written by `tmd-bench data generate/encode`)")
        else:
            pair_prompts = kd.data_prompts(data)  # a bad folder fails now, before the teacher loads
    t = runtime.load(teacher, teacher_path, device, dtype, **(size or {}))
    t0 = time.time()
    if method == "dmd2":
        final = dmd2.run_dmd2(t, cfg, out, resume=resume, checkpoint_every=checkpoint_every, data=data,
                              prompts=pair_prompts)
        m = cfg.steps
    elif method == "rcm":
        from tmd_bench.distill import rcm

        rc = rcm.preset(teacher, iterations=iterations, batch_size=batch_size, seed=seed)
        final = rcm.run_rcm(t, rc, out, resume=resume, checkpoint_every=checkpoint_every, data=data)
        m = steps or 2
    elif method == "meanflow":
        from tmd_bench.distill import meanflow

        mf = meanflow.preset(teacher, steps=steps, iterations=iterations, batch_size=batch_size, seed=seed)
        final = meanflow.run_meanflow(t, mf, out, resume=resume, checkpoint_every=checkpoint_every, data=data)
        m = mf.steps
    else:
        kd_cfg = kd.KDConfig(pairs=cfg.kd_pairs, teacher_steps=cfg.kd_teacher_steps,
                             iterations=iterations or kd.KDConfig.iterations, batch_size=cfg.batch_size, seed=seed)
        student = dmd2.new_student(t, replace(cfg, steps=1), method="kd")  # the preset's gradient checkpointing
        final = kd.run_kd(t, kd_cfg, out, resume=resume, student=student, checkpoint_every=checkpoint_every,
                          prompts=pair_prompts)
        m = 1
    out_console.print(f"{method} student: {final}  ({time.time() - t0:.0f} s)\n"
                      f"evaluate it: {_evaluate_hint(teacher, teacher_path, method, final, m, t)}",
                      highlight=False, soft_wrap=True)


@app.command()
@user_errors
def compare(
    teacher: str = typer.Option("shapes", help="Teacher id."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout)."),
    only: Optional[str] = typer.Option(None, help="Comma-separated plan entries (tmd-M2, tmd-M2-tmmf, tmd-M1, tmd-M2-H1, "
                                       "dmd2-s1, dmd2-s1-x3, dmd2-s1-nokd, dmd2-s2, dmd2-s3, dmd2-s4, rcm, kd, meanflow); "
                                       "default: all."),
    limit: Optional[int] = typer.Option(None, help="Evaluate on the first N prompts only."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    out: Path = typer.Option(Path("runs/compare"), help="Folder: students/<entry>/, eval/, report/."),
    distill_only: bool = typer.Option(False, help="Distill the chosen entries and stop (run several such processes "
                                      "side by side, then once without it to evaluate and report)."),
    export: bool = typer.Option(False, help="Install the students as the package's shipped ones (float16, with "
                                "provenance), which `tmd-bench demo` evaluates."),
    draws: int = typer.Option(1, help="Seed draws K: every row evaluated with --seed 0, 1000, …, 1000·(K−1); the "
                              "report pools them (intervals, paired-gap and claims tables). The README uses 8."),
    novel: bool = typer.Option(True, help="Also evaluate every student on shapes-novel (the harder split)."),
):
    """Distill every method from one teacher (resuming what exists), evaluate all, write the report."""
    from tmd_bench import runtime
    from tmd_bench.compare import compare as run_compare
    from tmd_bench.compare import plan
    from tmd_bench.teachers import load_teacher

    runtime.check_number("--draws", draws, 1, 64)
    names = [e.name for e in plan(teacher)]
    chosen = [x.strip() for x in only.split(",")] if only else None
    unknown = [x for x in chosen or [] if x not in names]
    if unknown:
        raise ValueError(f"unknown plan entries {unknown}; choose from {', '.join(names)}")
    t = load_teacher(teacher, teacher_path, device=runtime.resolve_device(device))
    html = run_compare(t, out, chosen, limit=limit, console=out_console, distill_only=distill_only, draws=draws,
                       novel=novel)
    if html is not None:
        out_console.print(f"report: {html.resolve()}")
    if export:
        from tmd_bench.compare import export_students

        for folder in export_students(out, names=chosen):
            out_console.print(f"shipped: {folder}")


@bench_app.command("tmd")
@user_errors
def bench_tmd(
    teacher: str = typer.Option("shapes", help="Teacher id."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout)."),
    random_weights: bool = typer.Option(False, help="Wan teachers: exact architecture, random weights (GPU)."),
    outer_steps: int = typer.Option(2), inner_steps: int = typer.Option(2),
    head_blocks: Optional[int] = typer.Option(None, help="Default: 2 on shapes, 5 on Wan."),
    batch_size: int = typer.Option(4, help="Batch of the stage-2 update."),
    frames: Optional[int] = typer.Option(None), height: Optional[int] = typer.Option(None),
    width: Optional[int] = typer.Option(None),
    repeats: int = typer.Option(5), warmup: int = typer.Option(2),
    sampler_batch: int = typer.Option(1, help="Clips per sampler call for the overhead figure."),
    device: str = typer.Option("auto", help="auto, cuda, cpu, or meta: FLOPs only, no memory "
                               "(a full-size Wan config with --random-weights on any machine)."),
    sampler_only: bool = typer.Option(False, help="Skip the stage-2 update (the rollout figure)."),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
):
    """Stage-2 rollout cost and TMD sampler overhead (spec tmd.md §8 and §5), in wall time and FLOPs."""

    from rich.table import Table

    from tmd_bench.bench import bench_tmd as run_bench
    from tmd_bench.teachers import random_wan_teacher

    from tmd_bench import runtime

    runtime.check_dtype(dtype)
    runtime.check_device(device, allow_meta=True)
    for flag, v, lo in (("--outer-steps", outer_steps, 1), ("--inner-steps", inner_steps, 1),
                        ("--head-blocks", head_blocks, 1), ("--batch-size", batch_size, 1),
                        ("--repeats", repeats, 1), ("--warmup", warmup, 0), ("--sampler-batch", sampler_batch, 1)):
        runtime.check_number(flag, v, lo, 10_000)
    if device == "meta" and not random_weights:
        raise typer.BadParameter("--device meta counts FLOPs of an architecture: use it with --random-weights")
    if random_weights:
        device = runtime.resolve_device(device, allow_meta=True)
        t = _resize(random_wan_teacher(teacher, device=device,
                                       dtype=runtime.resolve_dtype(dtype, device if device != "meta" else "cuda",
                                                                   teacher)), frames, height, width)
    else:
        t = runtime.load(teacher, teacher_path, device, dtype, frames, height, width)
    h = head_blocks or (2 if t.num_blocks < 16 else 5)
    result = run_bench(t, outer_steps, inner_steps, h, batch_size, warmup, repeats, sampler_batch,
                       update=not sampler_only)
    table = Table(title=f"tmd-bench bench tmd — {teacher}{' (random weights)' if random_weights else ''} on {device}")
    table.add_column("what")
    table.add_column("measured")
    for k, v in result.rows():
        table.add_row(k, v)
    out_console.print(table)


@bench_app.command("latency")
@user_errors
def bench_latency(
    teacher: str = typer.Option("shapes", help="Teacher id."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout)."),
    random_weights: bool = typer.Option(False, help="Wan teachers: exact architecture and a Wan2.1-config VAE, "
                                        "random weights (no download; bf16 on a GPU)."),
    head_blocks: Optional[int] = typer.Option(None, help="TMD head blocks H (default: 5 for Wan, L/4 otherwise)."),
    frames: Optional[int] = typer.Option(None), height: Optional[int] = typer.Option(None),
    width: Optional[int] = typer.Option(None),
    repeats: int = typer.Option(3), warmup: int = typer.Option(1),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the transformer blocks; rows gain "
                                  "compile_s (the compiling warm-up), timed runs follow it."),
    out: Path = typer.Option(Path("runs/bench-latency"), help="Folder for results.csv (merge with `tmd-bench report`)."),
):
    """Latency per stage of the teacher (50 steps, CFG), DMD2-v at 4/2/1 and TMD M2/M1-N2, counted NFE."""

    import pandas as pd
    import torch
    from rich.table import Table

    from tmd_bench.bench import bench_latency as run_bench
    from tmd_bench.evaluate import prepare_out, write_results
    from tmd_bench.teachers import WanCodec, random_wan_teacher

    from tmd_bench import runtime

    runtime.check_dtype(dtype)
    runtime.check_device(device)
    for flag, v, lo in (("--head-blocks", head_blocks, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0)):
        runtime.check_number(flag, v, lo, 10_000)
    if compile_ and warmup < 1:
        raise ValueError("--compile needs --warmup ≥ 1: the first generation compiles, and is not timed")
    out = prepare_out(out)
    if random_weights:
        from diffusers import AutoencoderKLWan

        device = runtime.resolve_device(device)
        dt = runtime.resolve_dtype(dtype, device, teacher)
        t = _resize(random_wan_teacher(teacher, device=device, dtype=dt), frames, height, width)
        with torch.device(device):
            # Wan2.1's VAE config; float32 as WanPipeline users run it (its causal convs are bf16-sensitive)
            t.codec = WanCodec(AutoencoderKLWan().eval().requires_grad_(False))
    else:
        t = runtime.load(teacher, teacher_path, device, dtype, frames, height, width)
    rows = run_bench(t, head_blocks=head_blocks, warmup=warmup, repeats=repeats, compile=compile_)
    write_results(rows, out / "results.csv")
    df = pd.DataFrame(rows)
    cols = ["row_id", "nfe_counted", "effective_nfe", "latency_text_s", "latency_denoise_s", "latency_decode_s",
            "latency_total_s", "peak_memory_mb"]
    table = Table(title=f"tmd-bench bench latency — {teacher}{' (random weights)' if random_weights else ''} on {device}")
    for c in cols:
        table.add_column(c)
    for _, r in df[cols].iterrows():
        table.add_row(*[str(r[c]) if isinstance(r[c], str) else f"{r[c]:.4g}" for c in cols])
    out_console.print(table)
    out_console.print(f"results: {out / 'results.csv'}")


@teacher_app.command("list")
def teacher_list():
    """List the known teachers and where their files come from."""
    from rich.table import Table

    from tmd_bench.registry import TEACHERS  # torch-free: listing teachers loads no model library

    t = Table()
    for c in ("teacher", "description", "source"):
        t.add_column(c)
    for name, spec in TEACHERS.items():
        t.add_row(name, spec.description, spec.repo_id or "shipped with tmd-bench")
    out_console.print(t)


@teacher_app.command("train")
@user_errors
def teacher_train(
    out: Path = typer.Option(Path("runs/shapes-teacher"), help="Training folder (checkpoints, log.csv)."),
    steps: int = typer.Option(12000, help="Total optimiser steps."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    decay_from: int = typer.Option(0, help="Step at which a cosine lr decay to --final-lr-ratio·lr at --steps begins (0: none)."),
    final_lr_ratio: float = typer.Option(0.02),
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(250),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    export: bool = typer.Option(False, help="When done, install the EMA weights as the shipped shapes teacher."),
):
    """Train the Shapes teacher (rectified flow, CFG dropout); resumable."""
    import shutil

    from tmd_bench import runtime
    from tmd_bench.teacher_train import TeacherTrainConfig, train_teacher
    from tmd_bench.teachers import SHAPES_TEACHER_DIR

    runtime.check_device(device)
    runtime.check_seed(seed)
    runtime.check_number("--steps", steps, 1, 100_000_000)
    runtime.check_number("--batch-size", batch_size, 1, 1_000_000)
    runtime.check_number("--checkpoint-every", checkpoint_every, 1)
    runtime.check_number("--lr", lr, 0, 10, lo_open=True)
    runtime.check_number("--final-lr-ratio", final_lr_ratio, 0, 1)
    if decay_from and not 0 < decay_from < steps:
        raise ValueError(f"--decay-from must lie between 0 and --steps ({steps}), got {decay_from}")
    cfg = TeacherTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, decay_from=decay_from,
                             final_lr_ratio=final_lr_ratio, checkpoint_every=checkpoint_every,
                             device=runtime.resolve_device(device))
    t0 = time.time()
    train_teacher(out, cfg, resume=resume)
    out_console.print(f"trained to step {steps} in {time.time() - t0:.0f} s this session; teacher: {out / 'teacher'}")
    if export:
        if SHAPES_TEACHER_DIR.exists():
            shutil.rmtree(SHAPES_TEACHER_DIR)
        shutil.copytree(out / "teacher", SHAPES_TEACHER_DIR)
        shutil.copy(out / "log.csv", SHAPES_TEACHER_DIR / "training_log.csv")
        out_console.print(f"installed as the shipped shapes teacher: {SHAPES_TEACHER_DIR}")


data_app = typer.Typer(no_args_is_help=True, help="Training data for real teachers: teacher samples or encoded "
                       "videos as sharded latents (read by `distill --data`).")
app.add_typer(data_app, name="data")


def _command(words: str, params: dict) -> str:
    """The command line that reproduces a data folder (recorded in its index.json)."""
    import shlex

    parts = ["tmd-bench", *words.split()]
    for k, v in params.items():
        if v is not None and v is not False:
            parts += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return shlex.join(parts)


def _data_teacher(teacher, teacher_path, device, dtype, frames, height, width):
    from tmd_bench import runtime

    return runtime.load(teacher, teacher_path, device, dtype, frames, height, width)


def _resize(t, frames: int | None, height: int | None, width: int | None):
    """Override the teacher's video size with the given --frames/--height/--width (each ≥ 1)."""
    from dataclasses import replace

    size = {k: v for k, v in (("frames", frames), ("height", height), ("width", width)) if v is not None}
    for k, v in size.items():
        if v < 1:
            raise ValueError(f"--{k} must be ≥ 1, got {v}")
    if size:
        t.spec = replace(t.spec, **size)
    return t


@data_app.command("generate")
@user_errors
def data_generate(
    teacher: str = typer.Option("shapes", help="Teacher id: shapes, wan2.1-1.3b, wan2.1-14b."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout)."),
    prompts: str = typer.Option(..., help="Prompt file (.txt, one per line; .jsonl with \"prompt\") or a built-in suite."),
    out: Path = typer.Option(..., help="Data folder (index.json, shard-NNNNN.safetensors); re-run to resume."),
    steps: int = typer.Option(50, help="Teacher sampling steps."),
    guidance: Optional[float] = typer.Option(None, help="CFG scale (default: the teacher's)."),
    shift: Optional[float] = typer.Option(None, help="Timestep shift (default: the teacher's)."),
    solver: Optional[str] = typer.Option(None, help="euler (tmd-bench's uniform grid), fmeuler or unipc (diffusers' "
                                         "schedulers, as WanPipeline). Default: the checkpoint's own scheduler."),
    per_prompt: int = typer.Option(1, help="Clips per prompt (clip j: prompt j // K, noise seed --seed + j)."),
    frames: Optional[int] = typer.Option(None, help="Video frames (Wan: 4k + 1; default: the teacher's)."),
    height: Optional[int] = typer.Option(None, help="Video height (default: the teacher's)."),
    width: Optional[int] = typer.Option(None, help="Video width (default: the teacher's)."),
    shard_size: int = typer.Option(256, help="Clips per shard."),
    batch_size: int = typer.Option(8, help="Clips sampled together."),
    seed: int = typer.Option(0, help="Base noise seed."),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16 or float16 (default: bfloat16 for Wan on CUDA)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    nproc: Optional[int] = typer.Option(None, help="Processes (GPUs): shards are split across them under torchrun."),
):
    """Teacher samples for a prompt file, saved as latents (before decoding) and text embeddings."""
    from tmd_bench import runtime
    from tmd_bench.suites import load_suite

    runtime.check_device(device)
    runtime.check_dtype(dtype)
    runtime.check_seed(seed)
    runtime.check_sampling(guidance, shift)
    runtime.check_number("--steps", steps, 1, runtime.MAX_STEPS)
    for flag, v in (("--per-prompt", per_prompt), ("--shard-size", shard_size), ("--batch-size", batch_size)):
        runtime.check_number(flag, v, 1, 1_000_000)
    if solver is not None and solver not in ("euler", "fmeuler", "unipc"):
        raise ValueError(f"--solver must be euler, fmeuler or unipc, got {solver[:40]!r}")
    runtime.prepare_teacher(teacher, teacher_path, frames, height, width)  # fail fast, before torch loads
    suite = load_suite(prompts)

    from tmd_bench import dataset, distributed

    if nproc is not None and not distributed.launched():
        raise typer.Exit(distributed.torchrun(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    device = distributed.init(runtime.resolve_device(device))
    t = _data_teacher(teacher, teacher_path, device, dtype, frames, height, width)
    solver, dtype = solver or t.spec.solver, runtime.dtype_name(t.dtype)  # recorded resolved: the command reproduces
    cmd = _command("data generate", dict(teacher=teacher, teacher_path=teacher_path, prompts=prompts, out=out,
                                         steps=steps, guidance=guidance, shift=shift, solver=solver,
                                         per_prompt=per_prompt, frames=frames, height=height, width=width,
                                         shard_size=shard_size, batch_size=batch_size, seed=seed, dtype=dtype))
    t0 = time.time()
    index = dataset.generate(t, list(suite.prompts), out, steps=steps, guidance=guidance, shift=shift, solver=solver,
                             per_prompt=per_prompt, seed=seed, shard_size=shard_size, batch_size=batch_size,
                             prompts_source=suite.source, command=cmd, rank=distributed.rank(),
                             world=distributed.world_size())
    if distributed.is_main():
        out_console.print(f"{index['count']} clips in {len(index['shards'])} shards ({time.time() - t0:.0f} s): "
                          f"{out / dataset.INDEX}")
    distributed.shutdown()


@data_app.command("encode")
@user_errors
def data_encode(
    teacher: str = typer.Option("shapes", help="Teacher id: shapes, wan2.1-1.3b, wan2.1-14b."),
    teacher_path: Optional[Path] = typer.Option(None, help="Teacher folder (diffusers layout, with vae/ for Wan)."),
    videos: Path = typer.Option(..., help="Folder of videos with captions: captions.jsonl ({\"video\": \"a.mp4\", "
                                "\"caption\": \"…\"} per line) or a.txt beside a.mp4. Videos: .gif/.webp (Pillow), "
                                ".safetensors frame tensors, .mp4/.webm/.mov/.mkv/.avi with PyAV installed."),
    out: Path = typer.Option(..., help="Data folder (index.json, shard-NNNNN.safetensors); re-run to resume."),
    frames: Optional[int] = typer.Option(None, help="Frames kept from each video's start (Wan: 4k + 1)."),
    height: Optional[int] = typer.Option(None, help="Height (videos are resized to cover it and centre-cropped)."),
    width: Optional[int] = typer.Option(None, help="Width."),
    frame_stride: int = typer.Option(1, help="Keep every n-th frame."),
    shard_size: int = typer.Option(256, help="Clips per shard."),
    dtype: Optional[str] = typer.Option(None, help="float32, bfloat16 or float16 (default: bfloat16 for Wan on CUDA)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    nproc: Optional[int] = typer.Option(None, help="Processes (GPUs): shards are split across them under torchrun."),
):
    """VAE latents and text embeddings of a folder of captioned videos (same format as `data generate`)."""
    from tmd_bench import runtime

    runtime.check_device(device)
    runtime.check_dtype(dtype)
    for flag, v in (("--frame-stride", frame_stride), ("--shard-size", shard_size)):
        runtime.check_number(flag, v, 1, 1_000_000)
    runtime.prepare_teacher(teacher, teacher_path, frames, height, width)  # fail fast, before torch loads

    from tmd_bench import dataset, distributed

    if nproc is not None and not distributed.launched():
        raise typer.Exit(distributed.torchrun(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    device = distributed.init(runtime.resolve_device(device))
    t = _data_teacher(teacher, teacher_path, device, dtype, frames, height, width)
    dtype = runtime.dtype_name(t.dtype)
    cmd = _command("data encode", dict(teacher=teacher, teacher_path=teacher_path, videos=videos, out=out,
                                       frames=frames, height=height, width=width, frame_stride=frame_stride,
                                       shard_size=shard_size, dtype=dtype))
    t0 = time.time()
    index = dataset.encode(t, videos, out, shard_size=shard_size, frame_stride=frame_stride, command=cmd,
                           rank=distributed.rank(), world=distributed.world_size())
    if distributed.is_main():
        out_console.print(f"{index['count']} clips in {len(index['shards'])} shards ({time.time() - t0:.0f} s): "
                          f"{out / dataset.INDEX}")
    distributed.shutdown()


metrics_app = typer.Typer(no_args_is_help=True, help="Metric models: train Shapes-CLIP.")
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("train-shapes-clip")
@user_errors
def metrics_train_shapes_clip(
    out: Path = typer.Option(Path("runs/shapes-clip"), help="Folder for model.safetensors, config.json, "
                             "training.json and log.csv."),
    steps: int = typer.Option(2000, help="Optimiser steps (the shipped model: 2000)."),
    batch_size: int = typer.Option(128, help="Clips per step (one random frame each)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (linear warm-up, cosine decay)."),
    seed: int = typer.Option(0),
    export: bool = typer.Option(False, help="When done, install it as the shipped Shapes-CLIP."),
):
    """Train Shapes-CLIP (tiny open_clip model, contrastive on Shapes-world frames and captions)."""
    import csv
    import shutil

    from tmd_bench.metrics import shapes_clip as sc

    if steps < 1 or batch_size < 2:
        raise ValueError(f"--steps must be ≥ 1 and --batch-size ≥ 2, got {steps} and {batch_size}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "logit_scale_exp"])
        model, tok, record = sc.train_shapes_clip(
            sc.ShapesClipTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed),
            log=lambda s, loss, t: w.writerow([s, f"{loss:.4f}", f"{t:.2f}"]))
    scorer = sc.ShapesCLIPScorer(model, tok, sc.NAME, out / sc.WEIGHTS, "")
    record["zero_shot_accuracy"] = {k: round(v, 4) for k, v in sc.zero_shot_accuracy(scorer).items()}
    sc.save_shapes_clip(out, model, tok, sc.model_config(tok.bpe_ids), record)
    out_console.print(f"Shapes-CLIP trained: {steps} steps in {record['wall_time_s']:.0f} s, loss "
                      f"{record['final_loss_last100']:.3f}, zero-shot accuracy {record['zero_shot_accuracy']}; {out}")
    if export:
        sc.ASSET_DIR.mkdir(parents=True, exist_ok=True)
        for name in (sc.WEIGHTS, sc.CONFIG, sc.RECORD, "log.csv"):
            shutil.copy(out / name, sc.ASSET_DIR / name)
        out_console.print(f"installed as the shipped Shapes-CLIP: {sc.ASSET_DIR}")


vbench_app = typer.Typer(no_args_is_help=True, help="Full VBench (optional extra, the vbench package): export "
                         "clips under VBench's names, run it, import its results into results.csv.")
app.add_typer(vbench_app, name="vbench")


@vbench_app.command("export")
@user_errors
def vbench_export(
    source: Path = typer.Argument(..., help="Run folder (its samples/) or one samples .safetensors file."),
    out: Path = typer.Option(..., help="Folder for {prompt}-{index}.mp4 (.gif without PyAV) and vbench_videos.json."),
    fps: int = typer.Option(8, help="Frames per second of the written videos (VBench's example: 8)."),
):
    """Write a run's clips with VBench's file names ({prompt}-{index}, index 0–4) and a seed manifest."""
    from tmd_bench.metrics.vbench_bridge import export_videos

    summary = export_videos(source, out, fps)
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {_escape(note)}", highlight=False, soft_wrap=True)
    out_console.print(f"{summary['files']} {summary['format']} videos in {', '.join(summary['folders'])}")


@vbench_app.command("run")
@user_errors
def vbench_run(
    videos: Path = typer.Argument(..., help="Folder written by `tmd-bench vbench export`."),
    out: Path = typer.Option(..., help="Folder for VBench's *_eval_results.json."),
    dimension: list[str] = typer.Option([], help="VBench dimension (repeatable), e.g. subject_consistency."),
    mode: str = typer.Option("custom_input", help="vbench --mode: custom_input (any prompts) or vbench_standard "
                             "(VBench's own prompt suite)."),
    run: Optional[Path] = typer.Option(None, help="Run folder whose results.csv gets the imported columns."),
    row_id: Optional[str] = typer.Option(None, help="Row of --run to write (vb_*, vbench_* columns)."),
):
    """Run `vbench evaluate` (package and weights must be installed) and import its results."""
    from tmd_bench.metrics.vbench_bridge import run_vbench

    if (run is None) != (row_id is None):
        raise ValueError("--run and --row-id go together")
    paths = run_vbench(videos, out, [d for x in dimension for d in x.split(",") if d.strip()], mode)
    _vbench_import(paths, run, row_id)


@vbench_app.command("import")
@user_errors
def vbench_import(
    results: list[Path] = typer.Argument(..., help="VBench *_eval_results.json file(s)."),
    run: Optional[Path] = typer.Option(None, help="Run folder whose results.csv gets the imported columns."),
    row_id: Optional[str] = typer.Option(None, help="Row of --run to write (vb_*, vbench_* columns)."),
):
    """Import VBench results: vb_<dimension> columns and vbench_quality/semantic/total (complete groups)."""
    if (run is None) != (row_id is None):
        raise ValueError("--run and --row-id go together")
    _vbench_import(results, run, row_id)


def _vbench_import(paths, run, row_id):
    import json

    from tmd_bench.metrics.vbench_bridge import import_results, merge_into_run

    row = import_results(paths)
    if run is not None:
        out_console.print(f"{len(row)} columns written to row {row_id} of {merge_into_run(row, run, row_id)}")
    else:
        out_console.print(json.dumps(row, indent=2), highlight=False)


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the demo's runs and report (rewritten)."),
    limit: Optional[int] = typer.Option(None, help="Prompts from the evaluation suite (default: all 128)."),
    draws: int = typer.Option(1, help="Seed draws K (--seed 0, 1000, …): the report pools them, with intervals "
                              "and the paired-gap and claims tables. 1 keeps the demo within minutes; the "
                              "README's table uses 8."),
    novel: bool = typer.Option(True, help="Also evaluate the students and the 50-step teacher on shapes-novel."),
    draw: Optional[str] = typer.Option(None, help="Only these draws (comma-separated, 0-based; e.g. 0,1,2,3): "
                                       "spread --draws over processes, then run once more with --report-only."),
    report_only: bool = typer.Option(False, help="Only pool the draws' folders already written into the report."),
    sweep_draws: Optional[int] = typer.Option(None, help="The teacher's step sweep (besides its 50-step reference) "
                                              "on the first N draws only (default: every draw)."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated, as for `evaluate` (default: its default). With "
                                          "diversity, the report adds each row's diversity against the teacher's, "
                                          "paired by prompt (e.g. --metrics shapes,shapes-clip,fd,diversity --limit 16)."),
    per_prompt: Optional[int] = typer.Option(None, help="Clips per prompt K, as for `evaluate` (default 1, or 8 with "
                                             "--metrics diversity)."),
    latency_warmup: int = typer.Option(1, help="Untimed warm-up generations before each row's latency, as for `evaluate`."),
    latency_repeats: int = typer.Option(3, help="Timed generations per row (the median is reported), as for `evaluate`."),
):
    """The main job on the embedded default: the shipped shapes teacher's step sweep and the shipped
    distilled students (TMD, DMD2-v, rCM, KD, MeanFlow) under one harness, and the report."""
    import shutil

    import pandas as pd

    from tmd_bench import runtime
    from tmd_bench.compare import SHIPPED_STUDENTS, draw_folder, draw_folders, evaluations, novel_evaluations, plan
    from tmd_bench.compare import run_draws
    from tmd_bench.compare import student_evaluations
    from tmd_bench.evaluate import print_table
    from tmd_bench.reports.html import build_report

    runtime.check_number("--draws", draws, 1, 64)
    runtime.check_number("--latency-warmup", latency_warmup, 0, 100)
    runtime.check_number("--latency-repeats", latency_repeats, 1, 100)
    chosen = runtime.parse_indices("--draw", draw, draws) if draw else list(range(draws))
    chosen_metrics = _metric_options(metrics, per_prompt, limit)  # before any folder is removed
    t0 = time.time()
    if not report_only:
        for d in chosen:
            if (draw_folder(out, d) / "results.csv").is_file():
                shutil.rmtree(draw_folder(out, d))  # the demo's own previous output
        shipped = {e.name: SHIPPED_STUDENTS / e.name for e in plan("shapes") if (SHIPPED_STUDENTS / e.name).is_dir()}
        if not shipped:
            out_console.print("no shipped students found: the report shows the teacher only")
        # Euler over the whole sweep, UniPC where a multistep solver differs from Euler (2–8 steps), the students
        evals = evaluations(shipped)
        if novel:
            evals += novel_evaluations(student_evaluations(shipped))
        options = {k: v for k, v in (("metrics", chosen_metrics), ("per_prompt", per_prompt)) if v is not None}
        options.update(latency_warmup=latency_warmup, latency_repeats=latency_repeats)
        evals = [(m, st, c, {**extra, **options}) for m, st, c, extra in evals]
        teacher = runtime.load("shapes", None, "auto", None)  # loaded once for every row of every draw
        run_draws(evals, out, draws, limit, teacher=teacher, console=out_console, only=chosen, sweep_draws=sweep_draws)
    folders, missing = draw_folders(out, draws)
    if missing:
        out_console.print(f"draws {', '.join(map(str, chosen))} done; the report waits for {', '.join(map(str, missing))} "
                          f"(then: tmd-bench demo --draws {draws} --report-only --out {out})")
        return
    csv_path, html_path = build_report(folders, out / "report", pool=draws > 1)
    df = pd.read_csv(csv_path if draws > 1 else folders[0] / "results.csv")  # pooled over the draws
    print_table(df[~df["row_id"].astype(str).str.endswith("-novel")], out_console)
    if draws > 1:
        claims = pd.read_csv(csv_path.parent / "claims.csv")
        for _, c in claims.iterrows():
            gap = "" if pd.isna(c.get("diff")) else f"{c['diff']:+.1f} ± {c['se']:.1f} points: "
            out_console.print(f"{c['claim']}: {gap}[bold]{c['verdict']}[/]", highlight=False)
    out_console.print(f"\n[bold green]demo done[/] in {time.time() - t0:.0f} s\nreport: {html_path.resolve()}\n"
                      f"table:  {csv_path.resolve()}")


def main() -> None:  # python -m tmd_bench
    app(prog_name="tmd-bench")


if __name__ == "__main__":
    main()
