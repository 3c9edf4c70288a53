"""`tmd-bench bench tmd`: the two TMD cost figures the paper states, measured (not asserted).

1. **Rollout cost**: one stage-2 *student* update with the flow-head rollout (N inner steps,
   gradients through each) relative to the same update without it (N = 1). The paper: < 17%
   extra at H = 5, N = 2, L = 30 — i.e. about the extra H/L of a forward+backward.
2. **Sampler overhead**: the TMD sampler's denoising wall time against
   ``effective NFE × one teacher forward`` at batch 1 (``--sampler-batch`` for more) — the
   sampler itself must add < 5%. On the tiny Shapes teacher at batch 1 (144 tokens) every pass is
   dominated by fixed per-module costs, so the head's own embeddings weigh more than at Wan scale;
   a batch of 32 clips is the compute-bound regime a 480p Wan clip is in at batch 1.

Timings: warm-up, then the median of repeats, ``torch.cuda.synchronize`` around each on GPU.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, replace

import torch

from tmd_bench.teachers import Teacher


def _timed(fn, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class TMDBench:
    label: str
    blocks: int
    student_update_rollout_s: float
    student_update_no_rollout_s: float
    teacher_forward_s: float
    sampler_s: float
    sampler_batch: int
    effective_nfe: float

    @property
    def rollout_extra(self) -> float:
        return self.student_update_rollout_s / self.student_update_no_rollout_s - 1

    @property
    def sampler_overhead(self) -> float:
        return self.sampler_s / (self.effective_nfe * self.teacher_forward_s) - 1

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("configuration", f"{self.label} (L = {self.blocks})"),
            ("stage-2 student update, rollout N", f"{self.student_update_rollout_s * 1000:.1f} ms"),
            ("stage-2 student update, no rollout (N = 1)", f"{self.student_update_no_rollout_s * 1000:.1f} ms"),
            ("rollout extra cost", f"{100 * self.rollout_extra:+.1f}%  (paper: < 17% at H5 N2 L30; "
                                   f"H/L·(N−1) of the student's share)"),
            (f"teacher forward (batch {self.sampler_batch}, no CFG)", f"{self.teacher_forward_s * 1000:.2f} ms"),
            ("TMD sampler denoising", f"{self.sampler_s * 1000:.2f} ms at effective NFE {self.effective_nfe:.3g}"),
            ("sampler overhead vs eff. NFE × forward", f"{100 * self.sampler_overhead:+.1f}%  (target < 5%)"),
        ]


def bench_tmd(teacher: Teacher, outer_steps: int = 2, inner_steps: int = 2, head_blocks: int = 2,
              batch_size: int = 4, warmup: int = 2, repeats: int = 5, sampler_batch: int = 1) -> TMDBench:
    from tmd_bench.distill.data import Batch
    from tmd_bench.distill.tmd import TMDStudent, effective_nfe, sample_tmd
    from tmd_bench.distill.tmd_train import TMDStage2, preset

    device = teacher.device
    cfg = preset(teacher.name, outer_steps=outer_steps, inner_steps=inner_steps, head_blocks=head_blocks,
                 batch_size=batch_size, student_every=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(teacher.latent_shape(batch_size), generator=g).to(device, teacher.dtype)
    text = teacher.encode_text(["a small red circle moving left on a black background"] * batch_size)
    batch = Batch([""] * batch_size, x, text)

    def update_time(n: int) -> float:
        c = replace(cfg, inner_steps=n)
        stage = TMDStage2(teacher, TMDStudent(copy.deepcopy(teacher.transformer), c.tmd), c)
        return _timed(lambda: stage.step(batch, 0), warmup, repeats, device)

    with_rollout, without = update_time(inner_steps), update_time(1)
    x1 = torch.randn(teacher.latent_shape(sampler_batch), generator=g).to(device, teacher.dtype)
    t1 = text[:1].expand(sampler_batch, -1, -1)
    t = torch.tensor(0.5, device=device)
    with torch.no_grad():
        fwd = _timed(lambda: teacher.velocity(x1, t, t1), warmup, repeats, device)
        student = TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd).eval()
        outer, inner = cfg.tmd.outer_grid(), cfg.tmd.inner_grid()
        seeds = list(range(sampler_batch))
        sampler = _timed(lambda: sample_tmd(student, x1, t1, outer, inner, seeds), warmup, repeats, device)
    return TMDBench(cfg.tmd.label, teacher.num_blocks, with_rollout, without, fwd, sampler, sampler_batch,
                    effective_nfe(outer_steps, inner_steps, head_blocks, teacher.num_blocks))


# ---------------------------------------------------------------------------------------------
# `tmd-bench bench latency`: the methods' speed on a teacher, no training needed (issue: GPU recipe)

LATENCY_PLAN = (("teacher-euler", 50, None), ("dmd2", 4, None), ("dmd2", 2, None), ("dmd2", 1, None),
                ("tmd", 2, 2), ("tmd", 1, 2))  # (method, steps or M, N)


def bench_latency(teacher: Teacher, plan=LATENCY_PLAN, head_blocks: int | None = None, warmup: int = 1,
                  repeats: int = 3, prompt: str = "a red fox running through a snowy forest") -> list[dict]:
    """Time each (method, steps) on ``teacher`` with the evaluation protocol (text encode, denoise,
    decode; warm-up, median of repeats, sync) and count its NFE and executed blocks while timing.

    Students are untrained (the teacher's weights, and for TMD a zero-initialised fusion): speed does
    not depend on what the weights learned, so this needs no checkpoint and no download."""
    from tmd_bench.distill.dmd2 import FullStudent, full_student_method
    from tmd_bench.distill.tmd import TMDConfig, TMDStudent, tmd_method
    from tmd_bench.harness import Counter, measure_latency, teacher_method

    h = head_blocks or (5 if teacher.num_blocks >= 16 else max(1, teacher.num_blocks // 4))
    dtype = next(teacher.transformer.parameters()).dtype
    rows = []
    for name, steps, inner in plan:
        extra: dict = {}
        if name.startswith("teacher-"):
            method = teacher_method(teacher, name.split("-", 1)[1])
            row_id = f"{name}-s{steps}"
        elif name == "dmd2":
            student = FullStudent(teacher.transformer, "dmd2", {"steps": steps, "shift": None})
            method = full_student_method(student, "dmd2")
            row_id = f"dmd2-s{steps}"
        elif name == "tmd":
            cfg = TMDConfig(steps, inner, h)
            student = TMDStudent(teacher.transformer, cfg).to(teacher.device, dtype).eval().requires_grad_(False)
            method = tmd_method(student)
            row_id, extra = f"tmd-{cfg.label}", {"inner_steps": inner, "head_blocks": h}
        else:
            raise ValueError(f"bench latency knows teacher-<solver>, dmd2 and tmd, not {name!r}")
        with torch.no_grad(), Counter(method.network, method.blocks) as count:
            lat = measure_latency(method, teacher, prompt, 0, steps, warmup=warmup, repeats=repeats)
        runs = warmup + repeats
        rows.append({"row_id": row_id, "method": name, "steps": steps, **extra, "nfe": method.declared_nfe(steps),
                     "nfe_counted": count.network_rows / runs,
                     "effective_nfe": count.block_rows / (len(method.blocks) * runs),
                     "effective_nfe_declared": method.declared_effective_nfe(steps), **lat.columns(teacher.spec.frames),
                     "teacher": teacher.name, "random_weights": bool(teacher.meta.get("random_weights")),
                     "weights": "untrained students (timing only)", "device": str(teacher.device),
                     "dtype": str(dtype).replace("torch.", ""), "frames": teacher.spec.frames,
                     "height": teacher.spec.height, "width": teacher.spec.width})
    return rows
