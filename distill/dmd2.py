"""DMD2-v (spec baselines.md): the whole student network as an x0-predictor, trained with the
shared DMD2-v step (``distill/dmd.py``); one-step students start with a KD warm-up.

- Student ``g_θ(x_t, t) = x_t − t·v_θ(x_t, t)``, initialised from the teacher.
- Training inputs: real clips noised at a random point of the student grid (γ = 10 for 1–2 steps,
  5 for 4); M = 1: pure noise at 0.999.
- Sampler (the paper's Eq. 18, deterministic): ``x_{t'} = (1 − t'/t)·g_θ(x_t, t) + (t'/t)·x_t``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tmd_bench.distill.dmd import DMDStep, _randn
from torch import nn

from tmd_bench import distributed, flow, registry
from tmd_bench.teachers import compute_dtype, wan_timestep


@dataclass(frozen=True)
class DMD2Config:
    steps: int = 2  # M: student steps
    shift: float | None = None  # student grid γ (None: 10 for M ≤ 2, 5 for M ≥ 3)
    batch_size: int = 16
    seed: int = 0
    grad_clip: float = 1.0
    iterations: int = 1000  # as TMD stage 2 (same critic/generator schedule): a matched budget
    lr: float = 1e-4
    teacher_guidance: float = 4.0  # Wan: 5
    gan_weight: float = 0.03
    critic_t_shift: float = 5.0
    student_every: int = 5
    disc_blocks: tuple[int, ...] | None = None
    kd_warmup_iterations: int = 200  # used when steps == 1
    kd_pairs: int = 1024  # teacher ODE pairs cached for the warm-up
    kd_teacher_steps: int = 25
    gradient_checkpointing: bool = False
    dtype: str = "float32"

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"DMD2-v needs at least 1 step, got {self.steps}")

    def grid(self, steps: int | None = None) -> torch.Tensor:
        return student_grid(steps or self.steps, self.shift)


PRESETS = {
    "shapes": DMD2Config(),
    "wan2.1-1.3b": DMD2Config(batch_size=64, iterations=4000, lr=1e-5, teacher_guidance=5.0,
                              gradient_checkpointing=True, dtype="bfloat16", kd_warmup_iterations=2000),
    "wan2.1-14b": DMD2Config(batch_size=64, iterations=4000, lr=1e-5, teacher_guidance=5.0,
                             gradient_checkpointing=True, dtype="bfloat16", kd_warmup_iterations=2000),
}
PRESETS.update(registry.derived_presets(PRESETS))  # Wan2.2 teachers (registry.WAN22_PRESET_BASIS)


class FullStudent(nn.Module):
    """A whole Wan transformer as a few-step x0-predictor (DMD2-v, KD, rCM, MeanFlow students)."""

    def __init__(self, transformer: nn.Module, method: str, config: dict):
        super().__init__()
        self.transformer = transformer
        self.method = method
        self.config = config

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        return self.transformer(x_t.to(self.dtype), wan_timestep(t).to(x_t.device), text.to(self.dtype),
                                return_dict=False)[0]

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (diffusers' fp32-kept modules aside)."""
        return compute_dtype(self.transformer)

    def x0(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``g_θ(x_t, t) = x_t − t·v_θ(x_t, t)``."""
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        return flow.x0_from_velocity(x_t, t.to(x_t.dtype), self.velocity(x_t, t, text))

    def save(self, folder: str | Path, teacher_name: str, teacher_hash: str, meta: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        (folder / "student_config.json").write_text(json.dumps({
            "method": self.method, **self.config, "teacher": teacher_name, "teacher_sha256": teacher_hash,
            "num_blocks": len(self.transformer.blocks), **(meta or {})}, indent=2))
        return folder


def load_full_student(folder: str | Path, teacher, method: str, device="cpu") -> FullStudent:
    """Load a student saved by :meth:`FullStudent.save`, checking method and teacher."""
    from tmd_bench.distill.students import read_student

    meta, tr = read_student(folder, teacher, method, "student_config.json")
    config = {k: v for k, v in meta.items() if k not in ("method", "teacher", "teacher_sha256", "num_blocks")}
    return FullStudent(tr, method, config).to(device).eval().requires_grad_(False)


@torch.no_grad()
def sample_x0_chain(student: FullStudent, x: torch.Tensor, text: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Deterministic few-step sampler (DMD2-v's Eq. 18): ``x_{t'} = (1 − t'/t)·g + (t'/t)·x_t``."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        g = student.x0(x, t.to(torch.float32).to(x.device), text)
        ratio = float(t_next / t)
        x = (1 - ratio) * g + ratio * x
    return x


def student_grid(steps: int, shift: float | None = None) -> torch.Tensor:
    """The few-step grid from 0.999 to 0: γ = 10 for ≤ 2 steps, 5 for more, unless ``shift`` is set."""
    return flow.time_grid(steps, shift if shift is not None else (10.0 if steps <= 2 else 5.0))


def full_student_method(student: FullStudent, name: str):
    """A harness method for an x0-predicting student on the x0-chain sampler; NFE = steps."""
    from tmd_bench.harness import Method

    def sample(noise, text, negative, steps, seeds=None):
        return sample_x0_chain(student, noise, text, student_grid(steps, student.config.get("shift")))

    return Method(
        name=name, sample=sample, declared_nfe=lambda m: m, declared_effective_nfe=lambda m: m,
        network=student.transformer, blocks=list(student.transformer.blocks),
        config=lambda m: {**student.config, "steps": m, "sampler": "x0 chain (DMD2-v Eq. 18)", "guidance": "distilled"},
        columns=lambda m: {"config_label": f"s{m}"},
    )


class DMD2V(DMDStep):
    """DMD2-v: the shared DMD2-v step with the full student as generator."""

    name = "dmd2"
    generator_stage = 3

    def __init__(self, teacher, student: FullStudent, cfg: DMD2Config):
        super().__init__(teacher, student, cfg, cfg.lr)

    def student_sample(self, x: torch.Tensor, text: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.config
        b = x.shape[0]
        x1 = _randn(x.shape, g, x)
        points = cfg.grid()[:-1].to(torch.float32)  # t_M … t_1
        t = points[distributed.randint(len(points), b, g)].to(x.device)
        x_t = x1 if cfg.steps == 1 else flow.interpolate(x, x1, t)
        return self.student.x0(x_t, t, text)

    def export(self, folder: Path) -> Path:
        return self.student.save(folder, self.teacher.name, self.teacher.checkpoint_hash(),
                                 {"train_config": _jsonable(asdict(self.config))})


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def new_student(teacher, cfg: DMD2Config, method: str = "dmd2") -> FullStudent:
    student = FullStudent(copy.deepcopy(teacher.transformer), method,
                          {"steps": cfg.steps, "shift": cfg.shift, "shift_rule": "γ = 10 for ≤ 2 steps, 5 for more"})
    if cfg.gradient_checkpointing:
        student.transformer.enable_gradient_checkpointing()
    return student


def preset(teacher: str, **overrides) -> DMD2Config:
    return replace(PRESETS.get(teacher, PRESETS["shapes"]), **{k: v for k, v in overrides.items() if v is not None})


def run_dmd2(teacher, cfg: DMD2Config, out: str | Path, resume: bool = False, checkpoint_every: int = 100,
             log_every: int = 10, data=None, prompts: list[str] | None = None) -> Path:
    """DMD2-v in ``out/dmd2`` (after a KD warm-up in ``out/kd-warmup`` for one step); returns the student folder.
    ``data``: a folder of latents (``tmd-bench data generate/encode``) instead of the Shapes world.
    ``prompts``: a Wan teacher's warm-up pairs cycle them (default: the prompts recorded in ``data``)."""
    from tmd_bench.distill.data import training_batches
    from tmd_bench.distill.kd import KDConfig, run_kd
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    cfg.validate()
    out = Path(out)
    batches = training_batches(teacher, cfg.batch_size, cfg.seed, data)
    student = new_student(teacher, cfg)
    if cfg.steps == 1 and cfg.kd_warmup_iterations > 0:
        kd_cfg = KDConfig(pairs=cfg.kd_pairs, teacher_steps=cfg.kd_teacher_steps, iterations=cfg.kd_warmup_iterations,
                          batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
        # trains student.transformer in place (or loads its finished state on resume)
        # pair prompts: the Shapes world on the Shapes teacher; on a Wan teacher ``prompts``, else ``data``'s
        run_kd(teacher, kd_cfg, out / "kd-warmup", resume=resume,
               student=FullStudent(student.transformer, "kd", student.config), checkpoint_every=checkpoint_every,
               prompts=prompts, data=data)
    train(DMD2V(teacher, student, cfg), batches, out / "dmd2",
          cfg.iterations, resume=resume and ckpt.has_state(out / "dmd2"), checkpoint_every=checkpoint_every,
          log_every=log_every, description=f"DMD2-v ({cfg.steps} steps)")
    return out / "dmd2" / "student"
