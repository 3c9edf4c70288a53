"""MeanFlow over the whole trajectory (spec baselines.md): the full network as an average-velocity
field ``u(z_t, r, t)`` on the outer flow, CFG baked into the target.

The same objective as TMD stage 1 (``losses.meanflow_target`` + ``losses.adaptive_l2``) but
without a flow head: the network is the teacher's transformer with Wan's time embedding of t
plus a zero-initialised embedding of (t − r) (so at initialisation ``u(z, t, t)`` is the
teacher's velocity). Sampler: ``z_r = z_t − (t − r)·u(z_t, r, t)`` on a shifted grid. The paper
argues Wan's trajectories curve too much for this; the harness lets users see it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tmd_bench.distill import losses
from tmd_bench.distill import wan_parts as wp
from tmd_bench.distill.precision import float32_island
from tmd_bench.teachers import compute_dtype
from tmd_bench.distill.dmd import _randn
from tmd_bench.distill.tmd import DeltaTimeEmbedding, seeded_init
from tmd_bench.distill.trainer import SingleNetwork, update
from torch import nn

from tmd_bench import flow, registry


@dataclass(frozen=True)
class MeanFlowConfig:
    steps: int = 2  # sampling steps the grid is tuned for (1 or 2)
    shift: float = 10.0  # γ of the sampling grid
    batch_size: int = 16
    seed: int = 0
    grad_clip: float = 1.0
    iterations: int = 600
    lr: float = 1e-4
    omega: float = 4.0  # CFG baked into the target (the teacher's scale)
    fd_delta: float = 5e-3
    mf_prob: float = 0.25  # probability of r < t (else plain flow matching, r = t)
    t_shift: float = 3.0
    text_dropout: float = 0.1
    norm_c: float = 1.0
    dtype: str = "float32"


PRESETS = {"shapes": MeanFlowConfig(),
           "wan2.1-1.3b": MeanFlowConfig(batch_size=64, iterations=4000, lr=1e-5, omega=5.0, dtype="bfloat16"),
           "wan2.1-14b": MeanFlowConfig(batch_size=64, iterations=4000, lr=1e-5, omega=5.0, norm_c=1e-5,
                                        dtype="bfloat16")}
PRESETS.update(registry.derived_presets(PRESETS))  # Wan2.2 teachers (registry.WAN22_PRESET_BASIS)


def preset(teacher: str, **overrides) -> MeanFlowConfig:
    return replace(PRESETS.get(teacher, PRESETS["shapes"]), **{k: v for k, v in overrides.items() if v is not None})


class MeanFlowStudent(nn.Module):
    """``u(z_t, r, t)``: Wan's transformer, its time conditioning = temb(t) + Δ(t − r)."""

    def __init__(self, transformer: nn.Module, config: dict, seed: int = 0):
        """``seed``: the run's seed; the (t − r) embedding is initialised from it (``seeded_init``),
        never from the global RNG. A loaded student overwrites it."""
        super().__init__()
        self.transformer = transformer
        dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        with seeded_init(seed, "meanflow.delta_time"):
            self.delta_time = DeltaTimeEmbedding(transformer.config.freq_dim, dim)
        self.delta_time.to(compute_dtype(transformer))
        self.config = config

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        tr = self.transformer
        b = z.shape[0]
        t, r = (t.expand(b) if t.ndim == 0 else t), (r.expand(b) if r.ndim == 0 else r)
        tok = wp.embed(tr, z)
        cond = wp.condition(tr, t, text)
        temb = cond.temb + self.delta_time(t - r, cond.temb.dtype)
        h = wp.run_blocks(tr, tr.blocks, tok.hidden, cond, tok.rotary, tproj=wp.time_projection(tr, temb))
        return wp.output(tr, h, temb, tok.grid)

    def save(self, folder: str | Path, teacher_name: str, teacher_hash: str, meta: dict | None = None) -> Path:
        from tmd_bench.pipelines import MeanFlowTime, added_layers_config, write_component

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        write_component(folder / "delta_time", MeanFlowTime, added_layers_config(self.transformer),
                        {f"delta_time.{k}": v for k, v in self.delta_time.state_dict().items()})
        (folder / "student_config.json").write_text(json.dumps({
            "method": "meanflow", **self.config, "teacher": teacher_name, "teacher_sha256": teacher_hash,
            "num_blocks": len(self.transformer.blocks), **(meta or {})}, indent=2))
        return folder


def load_meanflow(folder: str | Path, teacher, device="cpu") -> MeanFlowStudent:
    from safetensors.torch import load_file
    from tmd_bench.distill.students import read_student

    meta, tr = read_student(folder, teacher, "meanflow", "student_config.json")
    student = MeanFlowStudent(tr, {k: meta[k] for k in ("steps", "shift")})
    from tmd_bench.distill.tmd import component_weights

    state = load_file(str(component_weights(Path(folder), "delta_time")))
    student.delta_time.load_state_dict({k.removeprefix("delta_time."): v for k, v in state.items()})
    return student.to(device).eval().requires_grad_(False)


@torch.no_grad()
def sample_meanflow(student: MeanFlowStudent, z: torch.Tensor, text: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """``z_r = z_t − (t − r)·u(z_t, r, t)`` along the decreasing grid ``ts``."""
    for t, r in zip(ts[:-1], ts[1:]):
        t32, r32 = t.to(torch.float32).to(z.device), r.to(torch.float32).to(z.device)
        z = z - (t - r).to(z.dtype) * student(z, r32, t32, text)
    return z


def meanflow_method(student: MeanFlowStudent):
    from tmd_bench.harness import Method

    shift = float(student.config.get("shift", 10.0))

    def sample(noise, text, negative, steps, seeds=None):
        return sample_meanflow(student, noise, text, flow.time_grid(steps, shift))

    return Method(name="meanflow", sample=sample, declared_nfe=lambda m: m, declared_effective_nfe=lambda m: m,
                  network=student, blocks=list(student.transformer.blocks),
                  config=lambda m: {**student.config, "steps": m, "sampler": "mean-flow map", "guidance": "distilled"},
                  columns=lambda m: {"config_label": f"s{m}"})


class MeanFlow(SingleNetwork):
    """Training step: MeanFlow identity on the outer trajectory, CFG in the target."""

    name = "meanflow"
    loss_names = ("mf", "mse")

    def __init__(self, teacher, student: MeanFlowStudent, cfg: MeanFlowConfig):
        super().__init__(teacher, student, cfg, cfg.lr)

    def step(self, batch, iteration: int) -> dict[str, float]:
        cfg, st = self.config, self.student
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 4 * 100_003 + iteration)
        x = batch.clips
        b, dev = x.shape[0], x.device
        x1 = _randn(x.shape, g, x)
        t = flow.shift(0.001 + 0.998 * torch.rand(b, generator=g), cfg.t_shift)
        r = torch.where(torch.rand(b, generator=g) < cfg.mf_prob, t * torch.rand(b, generator=g), t)
        t, r = t.to(dev), r.to(dev)
        z = flow.interpolate(x, x1, t)
        neg = self.negative.expand(b, -1, -1)
        drop = (torch.rand(b, generator=g) < cfg.text_dropout).view(-1, 1, 1).to(dev)
        text = torch.where(drop, neg, batch.text)
        u = st(z, r, t, text)
        with torch.no_grad():
            u_uncond = st(z, t, t, neg)
            v_cfg = u_uncond + cfg.omega * ((x1 - x) - u_uncond)
            with float32_island(st):  # the finite difference needs float32 (distill/precision.py)
                target = losses.meanflow_target(lambda z_, t_: st(z_, r, t_, text), z, t, r, v_cfg, cfg.fd_delta)
        loss = losses.adaptive_l2(u, target, cfg.norm_c * x[0].numel())
        update(self.opt, loss, st.parameters(), cfg.grad_clip)
        return {"mf": loss.item(), "mse": (u.detach().float() - target.float()).pow(2).mean().item()}

    def export(self, folder: Path) -> Path:
        return self.student.save(folder, self.teacher.name, self.teacher.checkpoint_hash(),
                                 {"train_config": asdict(self.config)})


def run_meanflow(teacher, cfg: MeanFlowConfig, out: str | Path, resume: bool = False, checkpoint_every: int = 100,
                 log_every: int = 10, data=None) -> Path:
    from tmd_bench.distill.data import training_batches
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    out = Path(out)
    batches = training_batches(teacher, cfg.batch_size, cfg.seed, data)  # data: a latents folder, or the world
    student = MeanFlowStudent(copy.deepcopy(teacher.transformer), {"steps": cfg.steps, "shift": cfg.shift},
                              seed=cfg.seed)
    train(MeanFlow(teacher, student, cfg), batches, out, cfg.iterations,
          resume=resume and ckpt.has_state(out), checkpoint_every=checkpoint_every, log_every=log_every,
          description="MeanFlow (whole trajectory)")
    return out / "student"

