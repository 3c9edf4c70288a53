"""The one training loop every distillation method runs in (edm2 / FastGen style).

A method is a small class with ``modules`` (what to checkpoint), ``optimizers`` and
``step(batch, iteration) -> losses``; the loop owns data, progress, the append-only metrics
log, periodic crash-safe checkpoints (safetensors + JSON, see ``tmd_bench.checkpoint``), resume,
and the NaN guard. A method never copies this loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Iterator, Protocol

import torch

from tmd_bench import checkpoint as ckpt
from tmd_bench import distributed
from tmd_bench.progress import progress_bar


class Batch(Protocol):
    prompts: list[str]
    clips: torch.Tensor  # latents (B, C, F, H, W)
    text: torch.Tensor  # (B, S, D)


class DistillMethod(Protocol):
    name: str
    config: object  # a dataclass; compared on resume
    loss_names: tuple[str, ...]  # every key step() may return (the log's columns)

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def step(self, batch, iteration: int) -> dict[str, float]: ...

    def export(self, folder: Path) -> Path: ...


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float) -> None:
    """One optimiser step: zero the gradients, backward, clip the gradient norm, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


class SingleNetwork:
    """Base of the methods that train one network (TMD stage 1, MeanFlow, KD): the student, its
    AdamW, and the negative-prompt embedding for CFG targets; a subclass writes ``step``."""

    def __init__(self, teacher, student: torch.nn.Module, cfg, lr: float):
        self.teacher, self.student, self.config = teacher, student.train().requires_grad_(True), cfg
        self.opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.99))
        self.negative = teacher.encode_text([teacher.spec.negative_prompt])

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.student}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt}


def _config_dict(cfg) -> dict:
    """The config as JSON would give it back (tuples become lists), minus what may change on resume
    (iteration budgets: a finished run can be extended)."""
    d = json.loads(json.dumps(asdict(cfg) if is_dataclass(cfg) else dict(cfg)))
    return {k: v for k, v in d.items() if not k.endswith("iterations")}


SNAPSHOT_ITERATIONS = (100, 200, 500, 1000, 2000)  # on the Shapes world by default: training-efficiency curves
SNAPSHOT_DIR = "snapshots"


def export_pipeline(method: DistillMethod, folder: Path) -> None:
    """The method's student export, made a diffusers pipeline folder as well (``model_index.json``,
    the teacher's components or references to them, a model card: :mod:`tmd_bench.pipelines`)."""
    import sys

    from tmd_bench.pipelines import write_pipeline_files

    method.export(folder)
    teacher = getattr(method, "teacher", None)
    if teacher is not None:
        command = " ".join(["tmd-bench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "tmd-bench" else None
        write_pipeline_files(folder, teacher, command=command)


def default_snapshots(method) -> tuple[int, ...]:
    """Where a run keeps evaluable student snapshots unless told: the Shapes world's students are a few MB,
    so :data:`SNAPSHOT_ITERATIONS` there; none for real teachers (a Wan student is gigabytes: ``--snapshots``)."""
    spec = getattr(getattr(method, "teacher", None), "spec", None)
    return SNAPSHOT_ITERATIONS if getattr(spec, "world", None) == "shapes" else ()


def snapshot_folders(run: str | Path) -> list[tuple[int, Path]]:
    """(iteration, student folder) of every snapshot a training run kept, in order."""
    root = Path(run) / SNAPSHOT_DIR
    found = []
    for d in sorted(root.glob("iter-*")) if root.is_dir() else []:
        if d.is_dir() and (d / "snapshot.json").is_file():
            found.append((int(json.loads((d / "snapshot.json").read_text())["iteration"]), d))
    return sorted(found)


def train(method: DistillMethod, data: Iterator, out: str | Path, iterations: int, *, resume: bool = False,
          checkpoint_every: int = 100, log_every: int = 10, description: str | None = None,
          parallel: "distributed.Parallel | None" = None, snapshots: tuple[int, ...] | None = None) -> int:
    """Run ``method`` for ``iterations`` total iterations in ``out``; returns the final iteration.

    ``data`` must support ``data.position`` (batches consumed), so resume continues the stream; it
    yields the global batch. With ``parallel`` (inside torchrun) the method's networks are wrapped
    (DDP or FSDP2), each process computes its share of every batch, rank 0 logs and exports, and
    checkpoints are DCP (``state.json`` says ``"format": "dcp"``); without it nothing changes.

    Crash safety: a checkpoint is one unit (``tmd_bench.checkpoint``: written beside the previous one,
    switched to by replacing ``state.json``), and holds everything the rest of the run depends on —
    networks, optimisers, the global RNG state, the stream position, the running sums of the log rows
    since the last one written and the log's length — so a run killed at any moment (inside a save
    included) and resumed ends bit-identical, weights and ``log.csv`` (but ``elapsed_s``), to an
    uninterrupted one, whatever ``checkpoint_every``. The student export is written beside the
    previous one and swapped in; ``state.json`` marks it done, and a resume redoes an unfinished one.

    ``snapshots``: iterations at which the exported student is also kept, with its iteration and
    training wall time, in ``out/snapshots/iter-<k>/`` (default :func:`default_snapshots`): what
    ``tmd-bench curves`` evaluates. A snapshot is a checkpoint iteration too, so a resumed run keeps the
    same snapshots."""
    out = Path(out)
    cfg = _config_dict(method.config)
    rep = distributed.setup(method, parallel) if parallel is not None else None
    main = distributed.is_main()
    it, elapsed, meta = 0, 0.0, {}
    if resume:
        if not ckpt.has_state(out):
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        meta = ckpt.load_meta(out)
        if meta.get("method") != method.name:
            raise ckpt.IncompatibleCheckpoint(
                f"{out} holds a {meta.get('method')!r} run; cannot resume it as {method.name!r}")
        if meta["config"] != cfg:
            diff = {k: (meta["config"].get(k), cfg.get(k)) for k in set(meta["config"]) | set(cfg)
                    if meta["config"].get(k) != cfg.get(k)}
            raise ckpt.IncompatibleCheckpoint(f"cannot resume {out}: its config differs (saved, now): {diff}")
        if meta.get("data") != getattr(data, "identity", None):
            raise ckpt.IncompatibleCheckpoint(f"cannot resume {out}: it trained on data {meta.get('data')}, "
                                              f"this run on {getattr(data, 'identity', None)}")
        if meta.get("format") == "dcp":  # any number of processes, one included
            distributed.load_checkpoint(out, meta["dcp"], method, meta["world_size"], meta["fresh_optimizers"])
        else:
            if rep is not None and rep.strategy == "fsdp":
                raise ckpt.IncompatibleCheckpoint(f"{out} holds a single-process checkpoint; resume it with "
                                                  "--strategy ddp or in one process")
            tensors, meta = ckpt.load_checkpoint(out)  # verified against the manifest's size and sha256
            for name, module in method.modules().items():
                ckpt.load_module_tensors(f"module.{name}", module, tensors)
            for name, opt in method.optimizers().items():
                ckpt.load_optimizer(f"optim.{name}", opt, tensors, meta["optim"][name])
            ckpt.restore_rng(tensors)
            del tensors
        it, elapsed = meta["iteration"], meta["elapsed_s"]
        data.position = meta["data_position"]
    elif ckpt.has_state(out):
        raise FileExistsError(f"{out} already holds a training run; pass --resume to continue it or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    log = ckpt.MetricsLog(out / "log.csv", resume_step=it if resume else None,
                          resume_bytes=meta.get("log_bytes")) if main else None
    # the log rows' running sums since the last row written (a resumed run continues the same window)
    window = meta.get("log_window") or {}
    sums, counts = dict(window.get("sums", {})), dict(window.get("counts", {}))
    t_last = time.perf_counter()

    def export() -> None:
        if rep is not None:
            distributed.export(method, out / "student", lambda f: export_pipeline(method, f))
        elif main:
            ckpt.export_folder(out / "student", lambda f: export_pipeline(method, f), method.name, it)
        ckpt.crash_point("exported", method.name, it)
        if main:
            ckpt.mark_exported(out, it)

    def save() -> None:
        nonlocal elapsed, t_last
        now = time.perf_counter()
        elapsed += now - t_last
        t_last = now
        state = {"method": method.name, "iteration": it, "elapsed_s": elapsed, "config": cfg,
                 "data_position": data.position, "data": getattr(data, "identity", None),
                 "log_window": {"sums": sums, "counts": counts}, "log_bytes": log.sync() if main else None}
        if rep is not None:
            rel, fresh = distributed.save_checkpoint(out, method, it)
            if main:
                ckpt.save_meta(out, {**state, "format": "dcp", "dcp": rel, "fresh_optimizers": fresh,
                                     "world_size": rep.world_size, "parallel": asdict(parallel), "exported": False})
                distributed.prune_checkpoints(out, rel)
            export()
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, module in method.modules().items():
            tensors.update(ckpt.module_tensors(f"module.{name}", module))
        optim_meta = {}
        for name, opt in method.optimizers().items():
            t, m = ckpt.optimizer_tensors(f"optim.{name}", opt)
            tensors.update(t)
            optim_meta[name] = m
        tensors.update(ckpt.rng_tensors())
        ckpt.save_checkpoint(out, tensors, {**state, "optim": optim_meta})
        export()

    keep = set(default_snapshots(method) if snapshots is None else snapshots)

    def snapshot() -> None:
        """Copy the student just exported to ``snapshots/iter-<it>/`` (a temporary name, then a rename)."""
        import shutil

        final = out / SNAPSHOT_DIR / f"iter-{it:08d}"
        if not main or final.is_dir():
            return
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out / "student", tmp)
        (tmp / "snapshot.json").write_text(json.dumps({"iteration": it, "elapsed_s": round(elapsed, 2),
                                                       "method": method.name}))
        tmp.rename(final)

    if resume and not meta.get("exported", True):  # killed after the checkpoint, before its export was whole
        export()
    with progress_bar(disable=not main) as bar:
        task = bar.add_task(description or method.name, total=iterations, completed=it, status="")
        while it < iterations:
            losses = method.step(next(data), it)
            for k, v in losses.items():
                v = float(v)  # a Python float: the running sums are saved in state.json exactly
                ckpt.check_finite(torch.tensor(v), it, k)
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            it += 1
            ckpt.crash_point("step", method.name, it)
            bar.update(task, completed=it, status=" ".join(f"{k} {v:.4g}" for k, v in losses.items()))
            if it % log_every == 0 or it == iterations:
                if main:
                    now = time.perf_counter()
                    elapsed += now - t_last
                    t_last = now
                    log.append({"iteration": it, **{k: sums[k] / counts[k] if k in sums else float("nan")
                                                     for k in method.loss_names}, "elapsed_s": round(elapsed, 2)})
                    ckpt.crash_point("logged", method.name, it)
                sums, counts = {}, {}
            if it % checkpoint_every == 0 or it == iterations or it in keep:
                save()
                if it in keep:
                    snapshot()
    return it
