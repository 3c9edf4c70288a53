"""`tmd-bench bench tmd`: the two TMD cost figures the paper states, measured (not asserted).

1. **Rollout cost**: one stage-2 *student* update with the flow-head rollout (N inner steps,
   gradients through each) relative to the same update without it (N = 1). The paper: < 17%
   extra at H = 5, N = 2, L = 30 — i.e. about the extra H/L of a forward+backward.
2. **Sampler overhead**: the TMD sampler's denoising wall time against
   ``effective NFE × one teacher forward`` at batch 1 (``--sampler-batch`` for more) — the
   sampler itself must add < 5%.

Both figures are given twice: in **wall time** on the device, and in **FLOPs** counted by
``torch.utils.flop_counter`` (device-independent; ``--device meta`` counts them for a full-size
Wan config without memory or a GPU). The effective NFE counts DiT blocks only (spec §6), so the
fusion block the head runs on every pass is overhead by definition; it is reported separately.
On the tiny Shapes teacher (D = 128, 144 tokens) the fusion block costs about a quarter of a DiT
block, at Wan2.1-1.3B 480p (D = 1536, 32,760 tokens, attention-dominated) a few percent of one.

Timings: warm-up, then rounds that time the two things compared back to back (teacher forward
and sampler; update with and without rollout), ``torch.cuda.synchronize`` around each on GPU.
The ratio is the median of the per-round ratios, so load that drifts on a shared machine hits
both sides of a ratio alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, replace

import torch

from tmd_bench.harness import sync
from tmd_bench.teachers import Teacher


def _timed(fn, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_once(fn, device) for _ in range(repeats))


def _once(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def _paired(fa, fb, warmup: int, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """Median time of ``fa``, of ``fb``, and the median over rounds of ``t_b / t_a`` (same round)."""
    for _ in range(warmup):
        fa()
        fb()
    a, b = [], []
    for _ in range(repeats):
        a.append(_once(fa, device))
        b.append(_once(fb, device))
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _update_flops(stage, batch) -> int:
    """FLOPs of one stage-2 student update: its losses' forward and backward (the optimiser's
    element-wise step is not counted; the step's logging needs values, which ``meta`` lacks)."""

    def run():
        loss, _ = stage._student_losses(batch, torch.Generator().manual_seed(0))
        loss.backward()

    flops = _flops(run)
    stage.student.zero_grad(set_to_none=True)
    return flops


@dataclass
class TMDBench:
    label: str
    blocks: int
    effective_nfe: float
    sampler_batch: int
    passes: int  # head passes per sampler call (M·N): the fusion block runs once per pass
    # FLOPs (counted; device-independent)
    teacher_forward_flops: int
    sampler_flops: int
    fusion_flops: int  # one fusion block call at the sampler's batch
    update_rollout_flops: int | None
    update_no_rollout_flops: int | None
    # wall time (None when only FLOPs are counted, e.g. on the meta device)
    teacher_forward_s: float | None = None
    sampler_s: float | None = None
    sampler_ratio: float | None = None  # median over rounds of sampler / teacher forward
    fusion_s: float | None = None
    student_update_rollout_s: float | None = None
    student_update_no_rollout_s: float | None = None
    update_ratio: float | None = None  # median over rounds of with / without rollout

    @property
    def rollout_extra(self) -> float | None:
        return None if self.update_ratio is None else self.update_ratio - 1

    @property
    def rollout_extra_flops(self) -> float | None:
        if self.update_rollout_flops is None or not self.update_no_rollout_flops:
            return None
        return self.update_rollout_flops / self.update_no_rollout_flops - 1

    @property
    def sampler_overhead(self) -> float | None:
        return None if self.sampler_ratio is None else self.sampler_ratio / self.effective_nfe - 1

    @property
    def sampler_overhead_flops(self) -> float:
        return self.sampler_flops / (self.effective_nfe * self.teacher_forward_flops) - 1

    @property
    def fusion_share(self) -> float | None:
        """The fusion blocks' wall time as a fraction of ``effective NFE × teacher forward``."""
        if self.fusion_s is None or not self.teacher_forward_s:
            return None
        return self.passes * self.fusion_s / (self.effective_nfe * self.teacher_forward_s)

    @property
    def fusion_share_flops(self) -> float:
        return self.passes * self.fusion_flops / (self.effective_nfe * self.teacher_forward_flops)

    def rows(self) -> list[tuple[str, str]]:
        def pct(v):
            return "—" if v is None else f"{100 * v:+.1f}%"

        def ms(v):
            return "—" if v is None else f"{v * 1000:.2f} ms"

        rows = [("configuration", f"{self.label} (L = {self.blocks}), sampler batch {self.sampler_batch}")]
        if self.student_update_rollout_s is not None:
            rows += [("stage-2 student update, rollout N", ms(self.student_update_rollout_s)),
                     ("stage-2 student update, no rollout (N = 1)", ms(self.student_update_no_rollout_s))]
        rows += [("rollout extra cost, wall / FLOPs", f"{pct(self.rollout_extra)} / {pct(self.rollout_extra_flops)}"
                                                      "  (paper: < 17% at H5 N2 L30)"),
                 ("teacher forward (no CFG), wall / FLOPs",
                  f"{ms(self.teacher_forward_s)} / {self.teacher_forward_flops / 1e9:.4g} GFLOP"),
                 ("TMD sampler denoising, wall / FLOPs",
                  f"{ms(self.sampler_s)} / {self.sampler_flops / 1e9:.4g} GFLOP at effective NFE {self.effective_nfe:.3g}"),
                 ("sampler overhead vs eff. NFE × forward, wall / FLOPs",
                  f"{pct(self.sampler_overhead)} / {pct(self.sampler_overhead_flops)}  (target < 5%)"),
                 (f"  of which the fusion block ({self.passes} passes), wall / FLOPs",
                  f"{pct(self.fusion_share)} / {pct(self.fusion_share_flops)}  (not a DiT block: outside effective NFE)")]
        if self.sampler_overhead is not None:
            rows.append(("  sampler overhead without the fusion block, wall",
                         pct(self.sampler_overhead - self.fusion_share)))
        return rows


def bench_tmd(teacher: Teacher, outer_steps: int = 2, inner_steps: int = 2, head_blocks: int = 2,
              batch_size: int = 4, warmup: int = 2, repeats: int = 5, sampler_batch: int = 1,
              timing: bool | None = None, update: bool = True) -> TMDBench:
    """Measure both figures on ``teacher``. ``timing`` (default: unless the device is ``meta``) adds
    wall times to the FLOP counts; ``update=False`` skips the stage-2 update (the sampler only)."""
    from tmd_bench.distill import wan_parts as wp
    from tmd_bench.distill.data import Batch
    from tmd_bench.distill.tmd import TMDStudent, effective_nfe, head_times, sample_tmd
    from tmd_bench.distill.tmd_train import TMDStage2, preset

    device = teacher.device
    timing = device.type != "meta" if timing is None else timing
    dtype = teacher.dtype  # the compute dtype (diffusers keeps some modules in float32)
    cfg = preset(teacher.name, outer_steps=outer_steps, inner_steps=inner_steps, head_blocks=head_blocks,
                 batch_size=batch_size, student_every=1)
    g = torch.Generator().manual_seed(0)
    prompt = "a small red circle moving left on a black background"

    def student_of(c):
        return TMDStudent(copy.deepcopy(teacher.transformer), c).to(device)

    figures: dict = {}
    if update:
        x = torch.randn(teacher.latent_shape(batch_size), generator=g).to(device)
        batch = Batch([""] * batch_size, x, teacher.encode_text([prompt] * batch_size))
        stages = [TMDStage2(teacher, student_of(replace(cfg, inner_steps=n).tmd), replace(cfg, inner_steps=n))
                  for n in (inner_steps, 1)]
        figures["update_rollout_flops"], figures["update_no_rollout_flops"] = (_update_flops(st, batch) for st in stages)
        if timing:
            without, with_rollout, ratio = _paired(lambda: stages[1].step(batch, 0), lambda: stages[0].step(batch, 0),
                                                   warmup, repeats, device)
            figures.update(student_update_rollout_s=with_rollout, student_update_no_rollout_s=without,
                           update_ratio=ratio)
        del stages
    else:
        figures["update_rollout_flops"] = figures["update_no_rollout_flops"] = None

    x1 = torch.randn(teacher.latent_shape(sampler_batch), generator=g).to(device)
    text = teacher.encode_text([prompt]).expand(sampler_batch, -1, -1)
    t = torch.tensor(0.5, device=device)
    with torch.no_grad():
        student = student_of(cfg.tmd).eval()
        outer, inner = cfg.tmd.outer_grid(), cfg.tmd.inner_grid()
        seeds = list(range(sampler_batch))

        def forward():
            return teacher.velocity(x1, t, text)

        def sampler():
            return sample_tmd(student, x1, text, outer, inner, seeds)

        feats = student.backbone(x1, t, text)
        e = wp.patchify(student.transformer, x1)
        mod = head_times(student, inner, sampler_batch, device, dtype)[0].fusion

        def fusion():
            return student.fusion(feats.m, e, mod=mod)

        figures.update(teacher_forward_flops=_flops(forward), sampler_flops=_flops(sampler), fusion_flops=_flops(fusion))
        if timing:
            fwd, smp, ratio = _paired(forward, sampler, warmup, repeats, device)
            figures.update(teacher_forward_s=fwd, sampler_s=smp, sampler_ratio=ratio,
                           fusion_s=_timed(fusion, warmup, repeats, device))
    return TMDBench(cfg.tmd.label, teacher.num_blocks, effective_nfe(outer_steps, inner_steps, head_blocks,
                                                                     teacher.num_blocks),
                    sampler_batch, outer_steps * inner_steps, **figures)


# ---------------------------------------------------------------------------------------------
# `tmd-bench bench latency`: the methods' speed on a teacher, no training needed (issue: GPU recipe)

LATENCY_PLAN = (("teacher", 50, None), ("dmd2", 4, None), ("dmd2", 2, None), ("dmd2", 1, None),
                ("tmd", 2, 2), ("tmd", 1, 2))  # (method, steps or M, N)


def bench_latency(teacher: Teacher, plan=LATENCY_PLAN, head_blocks: int | None = None, warmup: int = 1,
                  repeats: int = 3, prompt: str = "a red fox running through a snowy forest",
                  compile: bool = False) -> list[dict]:
    """Time each (method, steps) on ``teacher`` with the evaluation protocol (text encode, denoise,
    decode; warm-up, median of repeats, sync) and count its NFE and executed blocks while timing.

    Students are untrained (the teacher's weights, and for TMD a zero-initialised fusion): speed does
    not depend on what the weights learned, so this needs no checkpoint and no download.

    ``teacher`` in the plan is the teacher with its checkpoint's own solver (UniPC for Wan, as
    WanPipeline); ``compile``: regional torch.compile of the blocks, its cost in ``compile_s``."""
    from tmd_bench.distill.dmd2 import FullStudent, full_student_method
    from tmd_bench.distill.tmd import TMDConfig, TMDStudent, tmd_method
    from tmd_bench.harness import Counter, compile_blocks, measure_latency, teacher_method

    h = head_blocks or (5 if teacher.num_blocks >= 16 else max(1, teacher.num_blocks // 4))
    dtype = teacher.dtype
    rows = []
    for name, steps, inner in plan:
        extra: dict = {}
        if name.startswith("teacher"):
            method = teacher_method(teacher, name.split("-", 1)[1] if "-" in name else teacher.spec.solver)
            row_id = f"{method.name}-s{steps}"
        elif name == "dmd2":
            student = FullStudent(teacher.transformer, "dmd2", {"steps": steps, "shift": None})
            method = full_student_method(student, "dmd2")
            row_id = f"dmd2-s{steps}"
        elif name == "tmd":
            cfg = TMDConfig(steps, inner, h)
            student = TMDStudent(teacher.transformer, cfg).to(teacher.device).eval().requires_grad_(False)
            method = tmd_method(student)
            row_id, extra = f"tmd-{cfg.label}", {"inner_steps": inner, "head_blocks": h}
        else:
            raise ValueError(f"bench latency knows teacher-<solver>, dmd2 and tmd, not {name!r}")
        if compile:
            compile_blocks(method.blocks)
        with torch.no_grad(), Counter(method.network, method.blocks) as count:
            lat = measure_latency(method, teacher, prompt, 0, steps, warmup=warmup, repeats=repeats)
        runs = warmup + repeats
        rows.append({"row_id": row_id, "method": method.name if name.startswith("teacher") else name, "steps": steps, **extra, "nfe": method.declared_nfe(steps),
                     "nfe_counted": count.network_rows / runs,
                     "effective_nfe": count.block_rows / (len(method.blocks) * runs),
                     "effective_nfe_declared": method.declared_effective_nfe(steps), **lat.columns(teacher.spec.frames),
                     "teacher": teacher.name, "random_weights": bool(teacher.meta.get("random_weights")),
                     "weights": "untrained students (timing only)", "device": str(teacher.device),
                     "dtype": str(dtype).replace("torch.", ""), "frames": teacher.spec.frames,
                     "height": teacher.spec.height, "width": teacher.spec.width, "compile": compile,
                     **({"compile_s": max(0.0, lat.first_total_s - lat.total_s)} if compile else {})})
    return rows
