"""TMD training: stage 1 (TM-MeanFlow) and stage 2 (DMD2-v with flow-head rollout), spec tmd.md §7–§8.

Each stage is a small class with one ``step``; :func:`tmd_bench.distill.trainer.train` runs it.
Randomness in a step is drawn from a generator seeded by (seed, iteration), so a resumed run
draws exactly what an uninterrupted one would; the layers TMD adds (fusion block, (s − r)
embedding) and the discriminator are initialised from the seed too (``tmd.seeded_init``), so two
runs with the same ``--seed`` give bit-identical students and the global RNG is never used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tmd_bench.distill import losses
from tmd_bench.distill.precision import float32_island
from tmd_bench.distill.dmd import DMDStep, _bcast, _randn
from tmd_bench.distill.tmd import TMDConfig, TMDStudent, rollout
from tmd_bench.distill.trainer import SingleNetwork

from tmd_bench import distributed, flow, registry
from tmd_bench.teachers import Teacher


@dataclass(frozen=True)
class TMDTrainConfig:
    """Everything a TMD run depends on. Presets per teacher in :data:`PRESETS`."""

    outer_steps: int = 2  # M
    inner_steps: int = 2  # N
    head_blocks: int = 2  # H
    outer_shift: float = 10.0
    inner_shift: float = 10.0
    batch_size: int = 16
    seed: int = 0
    grad_clip: float = 1.0
    # stage 1: TM-MF (§7)
    stage1_iterations: int = 400
    stage1_lr: float = 1e-4
    omega: float = 3.0  # CFG scale baked into the target
    fd_delta: float = 5e-3  # finite-difference step of the total derivative
    tm_prob: float = 0.75  # probability of r = s (plain transition matching; 1.0: plain TM, the paper's ablation)
    s_shift: float = 3.0  # γ of the s distribution
    text_dropout: float = 0.1
    # what a text-dropped sample is trained on: "guided", the CFG target ω-mixed with the unconditional head
    # (the shipped students were trained so), or "unguided", its own TM-MF target (y1 − y, no CFG), as
    # FastGen's MeanFlow does. Ablated on the Shapes world (README, "Stage 1, ablated"): at the same budget
    # stage 2 from an unguided stage 1 is 1.2 ± 0.6 points *worse* than from a guided one (1,024 paired clips),
    # so "guided" stays the default.
    dropped_target: str = "guided"
    norm_c: float = 1.0  # adaptive-loss constant c = norm_c · d (1.3B: 1, 14B: 1e-5)
    # stage 2: DMD2-v with rollout (§8)
    stage2_iterations: int = 1000  # measured on the shapes teacher: M2 all-correct 77% at 200, 78% at 300, 85% at 600
    stage2_lr: float = 1e-4
    teacher_guidance: float = 4.0  # CFG of the teacher's x0 in the VSD target (Wan: 5)
    gan_weight: float = 0.03
    critic_t_shift: float = 5.0
    student_every: int = 5  # student updated on every 5th iteration, critics on the other 4
    disc_blocks: tuple[int, ...] | None = None  # None: the paper's taps for this depth
    # the student's sample in stage 2: rolled out through the head's N inner steps (the paper), or, for the
    # paper's "no rollout" ablation, the head's single flow-map jump from the grid's first point s_N (≈ 1) to 0
    # (sampling still runs N steps)
    stage2_rollout: bool = True
    gradient_checkpointing: bool = False
    dtype: str = "float32"

    @property
    def tmd(self) -> TMDConfig:
        return TMDConfig(self.outer_steps, self.inner_steps, self.head_blocks, self.outer_shift, self.inner_shift)


PRESETS: dict[str, TMDTrainConfig] = {
    # small and fast: minutes on a CPU (H = 2 of 8 blocks: M2-N2H2 has effective NFE 2.5)
    "shapes": TMDTrainConfig(),
    # the paper's hyper-parameters (global batch 64; bf16; gradient checkpointing)
    "wan2.1-1.3b": TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=5, batch_size=64,
                                  stage1_iterations=3000, stage1_lr=3e-5, stage2_iterations=4000, stage2_lr=1e-5,
                                  teacher_guidance=5.0, norm_c=1.0, gradient_checkpointing=True, dtype="bfloat16"),
    "wan2.1-14b": TMDTrainConfig(outer_steps=2, inner_steps=4, head_blocks=5, batch_size=64,
                                 stage1_iterations=3000, stage1_lr=1e-5, stage2_iterations=4000, stage2_lr=1e-5,
                                 teacher_guidance=5.0, norm_c=1e-5, gradient_checkpointing=True, dtype="bfloat16"),
}
PRESETS.update(registry.derived_presets(PRESETS))  # Wan2.2 teachers (registry.WAN22_PRESET_BASIS)


DROPPED_TARGETS = ("unguided", "guided")


def preset(teacher: str, **overrides) -> TMDTrainConfig:
    if overrides.get("tm_prob") is not None and not 0.0 <= overrides["tm_prob"] <= 1.0:
        raise ValueError(f"--tm-prob is a probability (0 to 1), got {overrides['tm_prob']}")
    if overrides.get("dropped_target") not in (None, *DROPPED_TARGETS):
        raise ValueError(f"--dropped-target must be one of {', '.join(DROPPED_TARGETS)}, got {overrides['dropped_target']!r}")
    base = PRESETS.get(teacher, PRESETS["shapes"])
    if teacher in PRESETS and teacher.startswith("wan") and overrides.get("outer_steps") == 1 \
            and "stage2_iterations" not in overrides:
        overrides["stage2_iterations"] = 12000  # the paper trains M = 1 three times longer
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _gen(cfg, stage: int, iteration: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + stage * 100_003 + iteration)


def _rand(n: int, g: torch.Generator, device) -> torch.Tensor:
    return distributed.rand(n, g).to(device)


def sample_outer_times(cfg: TMDTrainConfig, n: int, g: torch.Generator, device) -> torch.Tensor:
    """t_i uniformly from the outer grid's points {t_1 … t_M} (never t_0 = 0)."""
    grid = cfg.tmd.outer_grid()[:-1].to(torch.float32)  # t_M … t_1
    return grid[distributed.randint(len(grid), n, g)].to(device)


def sample_s_r(cfg: TMDTrainConfig, n: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Spec §7.3: s = shift_γ(U[0.001, 0.999]); r = the largest inner-grid point ≤ s; r = s w.p. tm_prob."""
    s = flow.shift(0.001 + 0.998 * distributed.rand(n, g), cfg.s_shift)
    grid = cfg.tmd.inner_grid().to(torch.float32)  # decreasing, ends at 0
    r = torch.stack([grid[grid <= v].max() for v in s])
    tm = distributed.rand(n, g) < cfg.tm_prob
    return s.to(device), torch.where(tm, s, r).to(device)


def tm_meanflow_target(student: TMDStudent, feats, y_s: torch.Tensor, y1: torch.Tensor, s: torch.Tensor,
                       r: torch.Tensor, v_cfg: torch.Tensor, delta: float) -> torch.Tensor:
    """MeanFlow target on the inner flow (spec §7.6–7.7) with ``u(y, s, r) = y1 − head(y, s, r; m)``."""
    return losses.meanflow_target(lambda y, s_: y1 - student.head(y, s_, r, feats), y_s, s, r, v_cfg, delta)


class TMDStage1(SingleNetwork):
    """TM-MF: turn the flow head into a conditional flow map (spec §7). No teacher queries."""

    name = "tmd-stage1"
    loss_names = ("tm_mf", "mse")  # the adaptive loss, and the raw mean squared error ‖u − û‖²/d

    def __init__(self, teacher: Teacher, student: TMDStudent, cfg: TMDTrainConfig):
        super().__init__(teacher, student, cfg, cfg.stage1_lr)

    shardable = True  # runs on several processes (tmd_bench.distributed)

    def step(self, batch, iteration: int) -> dict[str, float]:
        seed = self.config.seed * 1_000_003 + 1 * 100_003 + iteration  # as _gen(cfg, 1, iteration)
        return distributed.optimise(self, batch, seed, ("student",), self._losses, self.config.grad_clip)

    def _losses(self, batch, g: torch.Generator):
        cfg, st = self.config, self.student
        x = batch.clips
        b, dev = x.shape[0], x.device
        x1 = _randn(x.shape, g, x)
        t = sample_outer_times(cfg, b, g, dev)
        x_t = flow.interpolate(x, x1, t)
        neg = self.negative.expand(b, -1, -1)
        drop = (_rand(b, g, dev) < cfg.text_dropout).view(-1, 1, 1)
        text = torch.where(drop, neg, batch.text)
        feats = st.backbone(x_t, t, text)
        y, y1 = x1 - x, _randn(x.shape, g, x)
        s, r = sample_s_r(cfg, b, g, dev)
        y_s = flow.interpolate(y, y1, s)
        u = y1 - st.head(y_s, s, r, feats)
        with torch.no_grad():
            feats_u = st.backbone(x_t, t, neg)
            u_uncond = y1 - st.head(y_s, s, s, feats_u)
            v_cfg = u_uncond + cfg.omega * ((y1 - y) - u_uncond)
            if cfg.dropped_target == "unguided":
                v_cfg = torch.where(drop.view(-1, *[1] * (v_cfg.ndim - 1)), y1 - y, v_cfg)
            with float32_island(st) as upcast:  # the finite difference needs float32 (distill/precision.py)
                target = tm_meanflow_target(st, st.backbone(x_t, t, text) if upcast else feats, y_s.float(),
                                            y1.float(), s, r, v_cfg, cfg.fd_delta)
        loss = losses.adaptive_l2(u, target, cfg.norm_c * x[0].numel())
        return loss, {"tm_mf": loss.detach(), "mse": (u.detach().float() - target.float()).pow(2).mean()}

    def export(self, folder: Path) -> Path:
        return export_student(self, folder, stage=1)


class TMDStage2(DMDStep):
    """DMD2-v with flow-head rollout (spec §8): the shared DMD2-v step, with the student's sample
    for one outer step rolled out through the flow head."""

    name = "tmd-stage2"

    def __init__(self, teacher: Teacher, student: TMDStudent, cfg: TMDTrainConfig):
        super().__init__(teacher, student, cfg, cfg.stage2_lr)

    def student_sample(self, x: torch.Tensor, text: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One outer step from a noised real clip (pure noise for M = 1), rolled out through the head:
        ``x̂ = x_{t_i} − t_i·ŷ`` (differentiable through every inner step and the backbone)."""
        cfg = self.config
        b = x.shape[0]
        x1 = _randn(x.shape, g, x)
        t = sample_outer_times(cfg, b, g, x.device)
        x_t = x1 if cfg.outer_steps == 1 else flow.interpolate(x, x1, t)
        feats = self.student.backbone(x_t, t, text)
        inner = cfg.tmd.inner_grid() if cfg.stage2_rollout else cfg.tmd.inner_grid(1)
        y_hat = rollout(self.student, feats, _randn(x.shape, g, x), inner)
        return x_t - _bcast(t, x_t) * y_hat

    def export(self, folder: Path) -> Path:
        return export_student(self, folder, stage=2)


def export_student(method: "TMDStage1 | TMDStage2", folder: Path, stage: int) -> Path:
    """The student as an evaluable checkpoint, with the config that trained it."""
    return method.student.save(folder, method.teacher.name, method.teacher.checkpoint_hash(),
                               {"stage": stage, "train_config": _jsonable(asdict(method.config))})


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def run_tmd(teacher: Teacher, cfg: TMDTrainConfig, out: str | Path, stages: tuple[int, ...] = (1, 2),
            resume: bool = False, init: str | Path | None = None, checkpoint_every: int = 100,
            log_every: int = 10, parallel=None, data: str | Path | None = None) -> Path:
    """Stage 1 then stage 2 (or either alone) in ``out/stage1``, ``out/stage2``; returns the final
    student folder. Stage 2 starts from stage 1's student, from ``init``, or from the teacher.
    ``data``: a folder of latents (``tmd-bench data generate/encode``) instead of the Shapes world."""
    import copy

    from tmd_bench.distill.data import training_batches
    from tmd_bench.distill.tmd import load_student
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    out = Path(out)
    cfg.tmd.validate(teacher.num_blocks)
    data = training_batches(teacher, cfg.batch_size, cfg.seed, data, sharded=parallel is not None)
    final = None
    if 1 in stages:
        student = TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd, seed=cfg.seed)
        if cfg.gradient_checkpointing:
            student.transformer.enable_gradient_checkpointing()
        stage1 = TMDStage1(teacher, student, cfg)
        train(stage1, data, out / "stage1", cfg.stage1_iterations, resume=resume and ckpt.has_state(out / "stage1"),
              checkpoint_every=checkpoint_every, log_every=log_every, description="TMD stage 1 (TM-MF)",
              parallel=parallel)
        final = out / "stage1" / "student"
        del stage1, student  # stage 2 reloads the exported student: free stage 1's weights, grads and AdamW state
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if 2 in stages:
        start = final or (Path(init) if init else None)
        if start is not None:
            student = load_student(start, teacher, teacher.device)
            if student.config != cfg.tmd:
                raise ckpt.IncompatibleCheckpoint(
                    f"{start} is a {student.config.label} student; this run is {cfg.tmd.label}")
        else:
            student = TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd, seed=cfg.seed)
        if cfg.gradient_checkpointing:
            student.transformer.enable_gradient_checkpointing()
            # the teacher's features are differentiated w.r.t. the student's sample, and the fake score
            # (a copy of the teacher made below) is trained: recompute their blocks in backward as well
            teacher.transformer.enable_gradient_checkpointing()
        stage2 = TMDStage2(teacher, student, cfg)
        train(stage2, data, out / "stage2", cfg.stage2_iterations, resume=resume and ckpt.has_state(out / "stage2"),
              checkpoint_every=checkpoint_every, log_every=log_every, description="TMD stage 2 (DMD2-v + rollout)",
              parallel=parallel)
        final = out / "stage2" / "student"
    return final
