"""`tmd-bench evaluate`: every method × step count through one harness, one tidy CSV row each.

A run folder holds:

- ``results.csv``: one row per configuration (the stable interface; columns in ``docs`` below);
- ``cards/<row_id>.json``: the run card of each row (evaluation spec §4);
- ``per_clip/<row_id>.csv``: what the oracle read from every clip;
- ``per_prompt/<row_id>.csv`` (with ``--metrics diversity``): each prompt's diversity measures over its K
  clips, keyed by the prompt and the first of its K seeds;
- ``samples/<row_id>.safetensors``: the preview clips (first ``--preview`` prompts), which the
  report shows side by side; the same clips as ``samples/<row_id>/<k>.mp4`` (H.264, the teacher's
  fps; ``.gif`` without PyAV/libx264), described by the run card's ``video_files``.

Rows are written as soon as each configuration finishes: an interrupted evaluation keeps them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from safetensors.torch import save_file

import tmd_bench
from tmd_bench import distributed, harness, runtime, suites, video  # video: preview clips as MP4
from tmd_bench.progress import progress_bar
from tmd_bench.registry import clip_text
from tmd_bench.teachers import Teacher

# Columns every results.csv has, in this order (others, e.g. per-metric ones, follow).
CORE_COLUMNS = [
    "row_id", "method", "steps", "nfe", "nfe_counted", "effective_nfe", "effective_nfe_declared",
    "latency_text_s", "latency_denoise_s", "latency_decode_s", "latency_total_s", "latency_total_spread_s",
    "fps", "peak_memory_mb", "teacher", "suite", "num_clips", "seed", "dtype",
]

METRICS = ("shapes", "clip", "fidelity", "vbench-lite", "shapes-clip", "fd", "diversity")  # --metrics choices
DIVERSITY_PER_PROMPT = 8  # samples per prompt when diversity is measured and --per-prompt is not given
SHAPES_DEFAULT_METRICS = ("shapes", "shapes-clip", "fd")  # without --metrics, on the Shapes world
SHAPES_ONLY_METRICS = ("shapes", "shapes-clip", "fd")  # they read Shapes-world clips
MethodFactory = Callable[[Teacher, "EvalConfig", str], harness.Method]
_FACTORIES: dict[str, MethodFactory] = {}


def register_method(prefix: str, factory: MethodFactory) -> None:
    """Make ``--methods <prefix>…`` resolvable (distilled methods register themselves here)."""
    _FACTORIES[prefix] = factory


def _teacher_factory(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    parts = name.split("-")  # teacher[-<solver>][-nocfg]; no solver: the checkpoint's own scheduler
    if parts[1:2] in ([], ["nocfg"]):
        parts.insert(1, teacher.spec.solver)
    if len(parts) in (2, 3) and parts[1] not in harness.SOLVERS:
        raise ValueError(f"unknown solver {clip_text(parts[1])!r} in {clip_text(name)!r}; solvers: "
                         f"{', '.join(harness.SOLVERS)} (euler: tmd-bench's uniform grid; fmeuler, unipc: diffusers' "
                         "schedulers as WanPipeline runs them)")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "nocfg"):
        raise ValueError(f"unknown method {clip_text(name)!r}; teacher methods are teacher[-<solver>][-nocfg] "
                         f"with solver in {', '.join(harness.SOLVERS)} (none: the checkpoint's scheduler)")
    guidance = 1.0 if len(parts) == 3 else cfg.guidance
    return harness.teacher_method(teacher, parts[1], guidance, cfg.shift)


def _tmd_factory(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    from tmd_bench.distill.tmd import load_student, tmd_method

    if name != "tmd":
        raise ValueError(f"unknown method {name!r}; did you mean 'tmd'?")
    if "tmd" not in cfg.checkpoints:
        raise ValueError("method 'tmd' needs a student: --checkpoint tmd=FOLDER (written by `tmd-bench distill`)")
    return tmd_method(load_student(cfg.checkpoints["tmd"], teacher, teacher.device), cfg.inner_steps)


def _full_student_factory(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    from tmd_bench.distill.dmd2 import full_student_method, load_full_student

    if name not in cfg.checkpoints:
        raise ValueError(f"method {name!r} needs a student: --checkpoint {name}=FOLDER (written by `tmd-bench distill`)")
    return full_student_method(load_full_student(cfg.checkpoints[name], teacher, name, teacher.device), name)


def _meanflow_factory(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    from tmd_bench.distill.meanflow import load_meanflow, meanflow_method

    if name not in cfg.checkpoints:
        raise ValueError("method 'meanflow' needs a student: --checkpoint meanflow=FOLDER (written by `tmd-bench distill`)")
    return meanflow_method(load_meanflow(cfg.checkpoints[name], teacher, teacher.device))


def _rcm_factory(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    from tmd_bench.distill.dmd2 import load_full_student
    from tmd_bench.distill.rcm import rcm_method

    if name not in cfg.checkpoints:
        raise ValueError("method 'rcm' needs a student: --checkpoint rcm=FOLDER (written by `tmd-bench distill`)")
    student = load_full_student(cfg.checkpoints[name], teacher, "rcm", teacher.device)
    return rcm_method(student, float(student.config.get("sigma_max", 80.0)))


register_method("teacher", _teacher_factory)
register_method("meanflow", _meanflow_factory)
register_method("rcm", _rcm_factory)
register_method("tmd", _tmd_factory)
register_method("dmd2", _full_student_factory)
register_method("kd", _full_student_factory)


def resolve_method(teacher: Teacher, cfg: "EvalConfig", name: str) -> harness.Method:
    prefix = name.split("-", 1)[0]
    if prefix not in _FACTORIES:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_FACTORIES))} "
                         f"(e.g. teacher-euler, teacher-unipc, teacher-euler-nocfg)")
    return _FACTORIES[prefix](teacher, cfg, name)


@dataclass
class EvalConfig:
    teacher: str = "shapes"
    teacher_path: str | None = None
    methods: list[str] = field(default_factory=lambda: ["teacher"])  # the checkpoint's own sampler
    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 50])
    prompts: str | None = None  # suite name or file; None: the teacher's default suite
    limit: int | None = None
    seed: int = 0
    batch_size: int = 32
    guidance: float | None = None
    shift: float | None = None
    latency_warmup: int = 1
    latency_repeats: int = 3
    preview: int = 4
    device: str = "cpu"
    dtype: str | None = None  # compute dtype (None: runtime.default_dtype for the device and teacher)
    compile: bool = False  # torch.compile the transformer blocks (compile time reported apart)
    frames: int | None = None  # video size overrides (default: the teacher's)
    height: int | None = None
    width: int | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)  # method → student checkpoint folder
    inner_steps: int | None = None  # TMD: N at inference (default: the checkpoint's)
    oracle: int = 3  # the Shapes oracle that reads attributes (3: every object on its own; 2: the earlier reader, for old runs)
    per_prompt: int | None = None  # K clips per prompt (None: 1, or DIVERSITY_PER_PROMPT with --metrics diversity)
    row_suffix: str | None = None  # appended to row ids (e.g. "stage1" for an ablation's student)
    metrics: list[str] | None = None  # None: SHAPES_DEFAULT_METRICS on the Shapes world, none elsewhere
    clip_model: str = "ViT-B-32"
    clip_weights: str | None = None
    out: str = "runs/eval"

    def validate(self) -> None:
        runtime.check_device(self.device)
        runtime.check_dtype(self.dtype)
        runtime.check_seed(self.seed)
        runtime.check_sampling(self.guidance, self.shift)
        runtime.check_number("--inner-steps", self.inner_steps, 1, 64)
        runtime.check_number("--preview", self.preview, 0)
        runtime.check_number("--per-prompt", self.per_prompt, 1, 64)
        if self.oracle not in (2, 3):
            raise ValueError(f"--oracle must be 2 or 3, got {self.oracle}")
        if self.row_suffix is not None and (not self.row_suffix.strip() or len(self.row_suffix) > 100
                                            or re.search(r"[/\\,\x00-\x1f]", self.row_suffix)):
            raise ValueError(f"--tag ends every row id and its file names: 1 to 100 characters, no '/', '\\', ',' "
                             f"or control characters, got {self.row_suffix!r}")
        if "diversity" in (self.metrics or []) and self.per_prompt is not None and self.per_prompt < 2:
            raise ValueError("--metrics diversity compares several samples of a prompt: --per-prompt must be ≥ 2")
        too_many = [s for s in self.steps if s > runtime.MAX_STEPS]
        if too_many:
            raise ValueError(f"--steps must be ≤ {runtime.MAX_STEPS}, got {too_many[0]}")
        if not self.steps:
            raise ValueError("--steps needs at least one step count")
        bad = [s for s in self.steps if s < 1]
        if bad:
            raise ValueError(f"--steps must be positive integers, got {bad[0]}")
        if not self.methods:
            raise ValueError("--methods needs at least one method")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be ≥ 1, got {self.limit}")
        for name in ("frames", "height", "width"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name} must be ≥ 1, got {v}")
        unknown = [m for m in self.metrics or [] if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        if {"clip", "shapes-clip"} <= set(self.metrics or []):
            raise ValueError("--metrics clip and shapes-clip both write clip_score; choose one")
        if self.batch_size < 1 or self.latency_repeats < 1 or self.latency_warmup < 0:
            raise ValueError("--batch-size and --latency-repeats must be ≥ 1, --latency-warmup ≥ 0")
        if self.compile and self.latency_warmup < 1:
            raise ValueError("--compile needs --latency-warmup ≥ 1: the first generation compiles, and is not timed")


def parse_steps(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]`` (each in [1, MAX_STEPS], no empty items, duplicates dropped in order);
    anything else is a ValueError that says what is expected."""
    expected = f"--steps takes comma-separated positive integers (e.g. 1,2,4,50), got {clip_text(text)!r}"
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise ValueError(expected + (" (an empty item)" if text.strip() else ""))
    if not all(re.fullmatch(r"-?[0-9]+", s) for s in items):
        raise ValueError(expected)
    steps = [int(s) for s in items]
    for s in steps:
        if s < 1:
            raise ValueError(f"--steps must be positive integers, got {s}")
        if s > runtime.MAX_STEPS:
            raise ValueError(f"--steps must be ≤ {runtime.MAX_STEPS}, got {s}")
    return list(dict.fromkeys(steps))


def default_suite(teacher_spec) -> str:
    return "shapes-eval" if teacher_spec.world == "shapes" else "general"


def prepare_out(out: str | Path) -> Path:
    """Create the run folder and prove it is writable before any compute is spent."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    return out


def git_commit() -> str:
    try:
        root = Path(tmd_bench.__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def environment(device: torch.device) -> dict:
    from importlib.metadata import version

    hw = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    sw = {"python": platform.python_version(), "torch": torch.__version__, "tmd_bench": tmd_bench.__version__}
    for pkg in ("diffusers", "transformers"):
        sw[pkg] = version(pkg)
    return {"hardware": hw, "software": sw}


def reproduce_command(cfg: EvalConfig, method: str, steps: int) -> str:
    args = ["tmd-bench", "evaluate", "--teacher", cfg.teacher, "--methods", method, "--steps", str(steps),
            "--prompts", cfg.prompts or "", "--seed", str(cfg.seed)]
    for flag, v in (("--teacher-path", cfg.teacher_path), ("--dtype", cfg.dtype), ("--limit", cfg.limit),
                    ("--guidance", cfg.guidance),
                    ("--shift", cfg.shift), ("--frames", cfg.frames), ("--height", cfg.height),
                    ("--width", cfg.width), ("--inner-steps", cfg.inner_steps if method == "tmd" else None)):
        if v is not None:
            args += [flag, str(v)]
    for m, p in cfg.checkpoints.items():
        if m == method.split("-", 1)[0]:
            args += ["--checkpoint", f"{m}={p}"]
    if cfg.compile:
        args.append("--compile")
    if cfg.per_prompt is not None:
        args += ["--per-prompt", str(cfg.per_prompt)]
    if cfg.oracle != EvalConfig.oracle:
        args += ["--oracle", str(cfg.oracle)]
    if cfg.metrics is not None:
        args += ["--metrics", ",".join(cfg.metrics)]
        if "clip" in cfg.metrics or "vbench-lite" in cfg.metrics:
            args += ["--clip-model", cfg.clip_model] + (["--clip-weights", cfg.clip_weights] if cfg.clip_weights else [])
    return shlex.join(args)


def read_results(path: Path) -> list[dict]:
    """The rows of an existing ``results.csv`` (empty when there is none); a file that is not one written by
    ``tmd-bench evaluate`` is a one-line error naming it, raised before anything is computed or written."""
    if not path.exists():
        return []
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path}: not a readable results table ({clip_text(str(e).splitlines()[0], 160)}); "
                         "choose another --out or remove it") from None
    if "row_id" not in df.columns:
        raise ValueError(f"{path} has no row_id column: not written by `tmd-bench evaluate`; choose another --out")
    return df.to_dict("records")


def check_oracle(rows: list[dict], version: int, path: Path) -> None:
    """Rows read by two oracle versions do not compare: a run adds to a table only with its rows' reader."""
    seen = {int(r["oracle_version"]) for r in rows if pd.notna(r.get("oracle_version", float("nan")))}
    if seen and seen != {version}:
        old = ", ".join(f"v{v}" for v in sorted(seen))
        raise ValueError(f"{path}: its rows were read with oracle {old}, this run reads with v{version}; rows read by "
                         f"two oracles do not compare — pass --oracle {min(seen)} or choose another --out")


def evaluate(cfg: EvalConfig, console=None, teacher: Teacher | None = None) -> pd.DataFrame:
    """Run the evaluation described by ``cfg``; returns the results table (also on disk).

    Everything that can be checked is checked before any output is written; a run that fails before
    writing its first row removes the run folder it created."""
    cfg.validate()
    read_results(Path(cfg.out) / "results.csv")  # an incompatible run folder fails before any compute
    created = not Path(cfg.out).exists()
    try:
        return _evaluate(cfg, console, teacher)
    except BaseException:
        out = Path(cfg.out)
        if created and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
            import shutil

            shutil.rmtree(out, ignore_errors=True)  # nothing was written: leave no empty run folder behind
        raise


def _evaluate(cfg: EvalConfig, console=None, teacher: Teacher | None = None) -> pd.DataFrame:
    if teacher is None:  # resolve the teacher and check the size before any output or model load
        runtime.prepare_teacher(cfg.teacher, cfg.teacher_path, cfg.frames, cfg.height, cfg.width)
    if cfg.prompts:
        suites.load_suite(cfg.prompts)  # a bad prompt file fails before the teacher loads
    out = prepare_out(cfg.out) if distributed.is_main() else Path(cfg.out)  # under torchrun: rank 0 writes
    if teacher is None:
        teacher = runtime.load(cfg.teacher, cfg.teacher_path, cfg.device, cfg.dtype, cfg.frames, cfg.height, cfg.width)
    else:
        size = {k: v for k, v in (("frames", cfg.frames), ("height", cfg.height), ("width", cfg.width)) if v}
        if size:
            if teacher.spec.world == "shapes":
                raise ValueError("the Shapes teacher samples at its trained size; --frames/--height/--width are for "
                                 "Wan teachers")
            teacher.spec = replace(teacher.spec, **size)
    device = teacher.device
    dtype = runtime.dtype_name(teacher.dtype)
    cfg.prompts = cfg.prompts or default_suite(teacher.spec)
    suite = suites.load_suite(cfg.prompts).head(cfg.limit)
    if teacher.spec.world == "shapes":
        suites.check_world_prompts(suite)
    methods = [resolve_method(teacher, cfg, m) for m in cfg.methods]
    if cfg.compile:
        for method in methods:
            harness.compile_blocks(method.blocks)
    metrics = cfg.metrics if cfg.metrics is not None else (
        list(SHAPES_DEFAULT_METRICS) if teacher.spec.world == "shapes" else [])
    wrong_world = [m for m in metrics if m in SHAPES_ONLY_METRICS]
    if wrong_world and teacher.spec.world != "shapes":
        raise ValueError(f"the {wrong_world[0]} metrics read Shapes-world clips; teacher {teacher.name!r} is not one")
    results_path = out / "results.csv"
    rows = read_results(results_path)
    if "shapes" in metrics:
        check_oracle(rows, cfg.oracle, results_path)  # before any metric model loads
    shapes_clip = None
    if "shapes-clip" in metrics or "fd" in metrics:
        from tmd_bench.metrics.shapes_clip import ShapesClipMetrics

        shapes_clip = ShapesClipMetrics()
    if "diversity" in metrics and teacher.spec.world == "shapes" and shapes_clip is None:
        from tmd_bench.metrics.shapes_clip import ShapesClipMetrics

        shapes_clip = ShapesClipMetrics()  # diversity of Shapes-CLIP features on the Shapes world
    scorer = None
    if "clip" in metrics or "vbench-lite" in metrics or ("diversity" in metrics and shapes_clip is None):
        from tmd_bench.metrics.clip import load_clip

        scorer = load_clip(cfg.clip_model, cfg.clip_weights, device)
    world_div = None
    if "diversity" in metrics and teacher.spec.world == "shapes":
        from tmd_bench.metrics.diversity import WorldDiversity

        world_div = WorldDiversity()  # its reference renders are read once, for every row
    k = cfg.per_prompt or (DIVERSITY_PER_PROMPT if "diversity" in metrics else 1)
    # clip (i, j), the j-th of prompt i, uses seed base + i·K + j (K = 1: base + i, as always)
    prompts = [p for p in suite.prompts for _ in range(k)]
    seeds = [cfg.seed + i * k + j for i in range(len(suite.prompts)) for j in range(k)]
    env = environment(device)
    commit = git_commit()
    if distributed.is_main():  # the other ranks write nothing (and their `out` may not exist yet: rank 0 makes it)
        for d in ("cards", "per_clip", "samples"):
            (out / d).mkdir(exist_ok=True)

    total = len(methods) * len(cfg.steps) * len(prompts)
    with progress_bar(disable=not distributed.is_main()) as bar:
        task = bar.add_task("evaluate", total=total, status="")
        for method in methods:
            for steps in cfg.steps:
                row_id = f"{method.name}-{method.columns(steps).get('config_label', f's{steps}')}"
                row_id += f"-{cfg.row_suffix}" if cfg.row_suffix else ""
                bar.update(task, status=row_id)
                gen = distributed.generate(method, teacher, prompts, seeds, steps, cfg.batch_size,
                                           on_batch=lambda n: bar.advance(task, n))
                if gen is None:  # another rank's share is done; rank 0 scores and writes the row
                    continue
                lat = harness.measure_latency(method, teacher, prompts[0], seeds[0], steps,
                                              cfg.latency_warmup, cfg.latency_repeats)
                row = {
                    "row_id": row_id, "method": method.name,
                    "steps": steps, "nfe": method.declared_nfe(steps), "nfe_counted": gen.nfe_counted,
                    "effective_nfe": gen.effective_nfe_counted,
                    "effective_nfe_declared": method.declared_effective_nfe(steps),
                    **lat.columns(gen.videos.shape[2]), "teacher": teacher.name, "suite": suite.name,
                    "num_clips": len(prompts), "seed": cfg.seed, "dtype": dtype, "compile": cfg.compile,
                    **({"compile_s": max(0.0, lat.first_total_s - lat.total_s)} if cfg.compile else {}),
                    **{k: v for k, v in method.columns(steps).items() if k != "config_label"},
                }
                row.update({f"nfe_{k}": v for k, v in gen.nfe_by_network.items()})  # A14B: per expert
                per_clip: list[dict] = []
                groups: list[dict] = []  # per prompt: its diversity measures
                row.update(harness.diagnose(method, teacher, prompts, seeds, steps))
                metric_impls = {}
                t_metrics = time.perf_counter()
                row.update(_model_metrics(cfg, teacher, gen.videos, prompts, seeds, suite, scorer, metrics, out,
                                          metric_impls, shapes_clip=shapes_clip, per_prompt=k,
                                          world_div=world_div, groups=groups))
                if "shapes" in metrics:
                    from tmd_bench.metrics import shapes

                    t0 = time.perf_counter()
                    agg, per_clip = shapes.evaluate_clips(gen.videos, prompts, cfg.oracle)
                    row.update(agg)
                    row.update(shapes.world_scores(agg))  # VBench's aggregation over the world's dimensions
                    row["oracle_version"] = cfg.oracle
                    metric_impls["shapes"] = {"implementation": shapes.implementation(cfg.oracle), "weights_sha256": None,
                                              "wall_s": round(time.perf_counter() - t0, 4)}
                if metrics:
                    row["metrics_time_s"] = round(time.perf_counter() - t_metrics, 4)
                row["run_card"] = f"cards/{row_id}.json"
                card = {
                    "row_id": row_id, "tmd_bench_version": tmd_bench.__version__, "git_commit": commit,
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "method": method.name, "config": method.config(steps),
                    "teacher": {"name": teacher.name, "path": str(teacher.path),
                                "checkpoint_sha256": teacher.checkpoint_hash(),
                                "dtype": dtype, "sampling_source": teacher.spec.sampling_source,
                                "scheduler": (teacher.scheduler_config or {}).get("_class_name")},
                    "precision": {"compute_dtype": dtype, "latents": "float32", "solver_state": "float32",
                                  "vae": runtime.dtype_name(getattr(getattr(teacher.codec, "vae", None), "dtype",
                                                                    "float32"))},
                    "suite": {"name": suite.name, "source": suite.source, "sha256": suite.sha256,
                              "num_prompts": len(prompts)},
                    "seeds": {"base": cfg.seed, "rule": "clip j of prompt i uses seed base + i·K + j for its "
                                                        "initial noise (K = videos_per_prompt)"},
                    "videos_per_prompt": k,
                    "video": {"frames": gen.videos.shape[2], "height": gen.videos.shape[3],
                              "width": gen.videos.shape[4], "fps": teacher.spec.fps},
                    # the preview clips as video files (written below): format, codec settings, fps, paths
                    "video_files": video.preview_files(row_id, min(cfg.preview, len(prompts)), teacher.spec.fps),
                    "latency_protocol": {"warmup": lat.warmup, "repeats": lat.repeats, "batch_size": lat.batch_size,
                                         "statistic": "median; spread = max − min of total",
                                         "synchronised": device.type == "cuda", "memory": lat.memory_kind,
                                         "attention_backend": "torch SDPA (default choice)",
                                         "torch_compile": "transformer blocks (regional)" if cfg.compile else False,
                                         "compile_time": "first warm-up generation − median (compile_s column)"
                                         if cfg.compile else None},
                    "metrics": metric_impls, **env,
                    "command": reproduce_command(cfg, method.name, steps),
                    "results": row,
                }
                (out / "cards" / f"{row_id}.json").write_text(json.dumps(card, indent=2, default=str))
                if per_clip:
                    pd.DataFrame([{"prompt": c["prompt"], "seed": s, "all_correct": c["all_correct"],
                                   **{f"read_{k}": v for k, v in c["read"].items()}}
                                  for c, s in zip(per_clip, seeds)]).to_csv(out / "per_clip" / f"{row_id}.csv", index=False)
                if groups:  # diversity is a property of a prompt's K clips: `tmd-bench gap --metric div_…` pairs these
                    (out / "per_prompt").mkdir(exist_ok=True)
                    pd.DataFrame(groups).to_csv(out / "per_prompt" / f"{row_id}.csv", index=False)
                else:  # the row re-evaluated without diversity: an earlier run's records no longer describe it
                    (out / "per_prompt" / f"{row_id}.csv").unlink(missing_ok=True)
                n_preview = min(cfg.preview, len(prompts))  # not `k`: that is videos per prompt, used by the next row
                save_file({"videos": gen.videos[:n_preview].contiguous()},
                          str(out / "samples" / f"{row_id}.safetensors"),
                          metadata={"prompts": json.dumps(prompts[:n_preview]), "seeds": json.dumps(seeds[:n_preview])})
                video.write_previews(out, card["video_files"], gen.videos[:n_preview])  # samples/<row>/<i>.mp4
                rows = [r for r in rows if r["row_id"] != row_id] + [row]
                write_results(rows, results_path)
    if not distributed.is_main():
        return pd.DataFrame()
    df = pd.read_csv(results_path)
    if console is not None:
        print_table(df, console)
    return df


def _model_metrics(cfg: EvalConfig, teacher: Teacher, videos: torch.Tensor, prompts: list[str], seeds: list[int],
                   suite, scorer, metrics: list[str], out: Path, impls: dict, shapes_clip=None,
                   per_prompt: int = 1, world_div=None, groups: list | None = None) -> dict:
    """CLIP score, fidelity to the teacher's 50-step samples from the same noise, and Shapes-CLIP's
    CLIP score and Fréchet distance to real renders (``shapes_clip``: a ShapesClipMetrics). ``groups``:
    filled with each prompt's diversity measures (one dict per prompt) when diversity is measured."""
    row: dict = {}
    if "shapes-clip" in metrics:
        t0 = time.perf_counter()
        row["clip_score"] = shapes_clip.clip_score(videos, prompts)
        impls["shapes-clip"] = {**shapes_clip.impl("shapes-clip"), "wall_s": round(time.perf_counter() - t0, 4)}
    if "fd" in metrics:
        t0 = time.perf_counter()
        row["fd_real"] = shapes_clip.fd_real(videos, prompts, seeds)
        row["fd_real_floor"] = shapes_clip.fd_real_floor(prompts, seeds)  # renders vs renders at the same N
        row["fd_n"] = len(videos)  # FD depends on N: compare rows at equal fd_n
        impls["fd"] = {**shapes_clip.impl("fd"), "wall_s": round(time.perf_counter() - t0, 4)}
    if "vbench-lite" in metrics:
        from tmd_bench.metrics import vbench_lite

        row.update(vbench_lite.vbench_lite(videos, scorer))
        impls["vbench-lite"] = {"implementation": vbench_lite.IMPLEMENTATIONS, "weights_sha256": scorer.weights_sha256}
    if "clip" in metrics:
        row["clip_score"] = float(scorer.score(videos, prompts).mean())
        impls["clip"] = {"implementation": f"open_clip {scorer.name}, frame-averaged max(100·cos, 0)",
                         "weights": str(scorer.weights), "weights_sha256": scorer.weights_sha256}
    if "diversity" in metrics:
        from tmd_bench.metrics.diversity import clip_diversity_per_prompt

        t0 = time.perf_counter()
        k = per_prompt
        feats = shapes_clip.frame_features(videos) if shapes_clip is not None else scorer.frame_features(videos)
        per_prompt_values = clip_diversity_per_prompt(feats, k)
        row.update({m: float(v.mean()) for m, v in per_prompt_values.items()}, div_per_prompt=k)
        values = {m: v.tolist() for m, v in per_prompt_values.items()}
        if teacher.spec.world == "shapes":  # exact: the latent variables the prompt leaves free
            from tmd_bench.metrics.diversity import WorldDiversity

            world_values = (world_div or WorldDiversity()).per_prompt(videos, prompts, k)
            row.update(WorldDiversity.summary(world_values))
            values.update(world_values)
        if groups is not None:  # per prompt: its K clips' first seed and each measure (per_prompt/<row>.csv)
            groups.extend({"prompt": prompts[i * k], "seed": seeds[i * k], "per_prompt": k,
                           **{m: v[i] for m, v in values.items()}} for i in range(len(prompts) // k))
        impls["diversity"] = {"implementation": "1 − mean pairwise cosine and Vendi score (cosine kernel) of each "
                                                f"prompt's {k} clip features ({'Shapes-CLIP' if shapes_clip else scorer.name})"
                                                + ("; Shapes world: oracle-read start and speed, mode coverage and "
                                                   "energy distance vs the world's renders"
                                                   if teacher.spec.world == "shapes" else ""),
                              "wall_s": round(time.perf_counter() - t0, 4)}
    if "fidelity" in metrics:
        from tmd_bench.metrics.fidelity import frechet_distance, paired_psnr_ssim

        ref = teacher_reference(cfg, teacher, prompts, seeds, suite, out)
        row["psnr_teacher"], row["ssim_teacher"] = paired_psnr_ssim(videos, ref)
        impls["fidelity"] = {"implementation": f"torchmetrics PSNR/SSIM vs teacher-{teacher.spec.solver} 50 steps (the checkpoint's "
                                                  "own solver), same noise",
                             "weights_sha256": None}
        if "clip" in metrics:
            b, f = videos.shape[0], videos.shape[2]
            feats = scorer.frame_features(videos).reshape(b * f, -1).cpu().numpy()
            ref_feats = scorer.frame_features(ref).reshape(b * f, -1).cpu().numpy()
            row["fd_clip_teacher"] = frechet_distance(feats, ref_feats)
            row["fd_n"] = b  # clips per feature set (frames pooled: b·f features each)
    return row


def teacher_reference(cfg: EvalConfig, teacher: Teacher, prompts: list[str], seeds: list[int], suite,
                      out: Path) -> torch.Tensor:
    """The teacher's 50-step Euler CFG clips for the suite, cached in ``out/reference``."""
    import hashlib

    from safetensors.torch import load_file

    key = json.dumps([teacher.checkpoint_hash(), suite.sha256, len(prompts),
                      hashlib.sha256(json.dumps(seeds).encode()).hexdigest()[:12], cfg.guidance, cfg.shift,
                      teacher.spec.frames, teacher.spec.height, teacher.spec.width, teacher.spec.solver,
                      runtime.dtype_name(teacher.dtype)])
    path = out / "reference" / f"teacher-{teacher.spec.solver}-50-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
    if path.is_file():
        return load_file(str(path))["videos"]
    method = harness.teacher_method(teacher, teacher.spec.solver, cfg.guidance, cfg.shift)
    videos = harness.generate(method, teacher, prompts, seeds, 50, cfg.batch_size).videos
    path.parent.mkdir(exist_ok=True)
    save_file({"videos": videos.contiguous()}, str(path), metadata={"key": key})
    return videos


def write_results(rows: list[dict], path: Path) -> None:
    df = pd.DataFrame(rows)
    cols = [c for c in CORE_COLUMNS if c in df] + [c for c in df if c not in CORE_COLUMNS]
    tmp = path.with_suffix(".csv.tmp")
    df[cols].to_csv(tmp, index=False)
    os.replace(tmp, path)


def print_table(df: pd.DataFrame, console) -> None:
    from rich.table import Table

    pooled = "draws" in df and df["draws"].max() > 1
    t = Table(title="tmd-bench evaluate" + (f" — pooled over {int(df['draws'].max())} seed draws" if pooled else ""))
    cols = [("row_id", "config"), ("nfe", "NFE"), ("nfe_counted", "counted"), ("effective_nfe", "eff. NFE"),
            ("latency_total_s", "latency"), ("all_correct", "all-correct" + (" ± SE" if pooled else "")),
            ("acc_shape", "shape"), ("acc_motion", "motion"), ("sharpness", "sharpness"), ("num_clips", "clips")]
    cols = [(k, h) for k, h in cols if k in df]
    for _, h in cols:
        t.add_column(h, justify="left" if h == "config" else "right")

    def cell(r, k):
        v = r[k]
        if isinstance(v, str):
            return v
        if k == "latency_total_s":
            return f"{1000 * v:.0f} ms" if v >= 0.1 else f"{1000 * v:.1f} ms"
        if k == "all_correct" or k.startswith("acc_"):
            se = r.get("all_correct_se") if k == "all_correct" and pooled else None
            return f"{100 * v:.1f}%" + (f" ± {100 * se:.1f}" if se is not None and se == se else "")
        if k == "num_clips":
            return str(int(v))
        return f"{v:.3g}"

    for _, r in df.iterrows():
        t.add_row(*[cell(r, k) for k, _ in cols])
    console.print(t)


def command_line() -> str:
    return shlex.join(["tmd-bench", *sys.argv[1:]])

