"""rCM: score-regularised continuous-time consistency (Zheng et al., NVIDIA, arXiv:2510.08431).

``L = L_sCM + λ·L_DMD`` with λ = 0.01 (spec baselines.md).

**TrigFlow.** A rectified-flow time t maps to τ by ``tan τ = t / (1 − t)``; then
``x_τ = cos τ·x0 + sin τ·ε = (sin τ + cos τ)·x_t``. From the student's rectified-flow velocity
``v_θ(x_t, t)`` the TrigFlow velocity is ``F_θ(x_τ, τ) = ((cos τ − sin τ)·x_τ + v_θ) / (sin τ + cos τ)``
and the consistency function ``f_θ = cos τ·x_τ − sin τ·F_θ`` is exactly the x0-prediction
``x_t − t·v_θ`` (tested), so the student samples like any x0-predictor.

**sCM** (Lu & Song, 2024): ``L_sCM = ‖F_θ − sg(F_θ⁻ + ĝ)‖²`` with the tangent
``g = −cos²τ·(F_θ⁻ − dx_τ/dτ) − r·cos τ·sin τ·(x_τ + dF_θ⁻/dτ)`` (= −cos τ·df_θ⁻/dτ at r = 1),
``dx_τ/dτ`` the teacher's CFG velocity, r warmed up from 0 to 1, and the normalisation
``ĝ = g / (‖g‖ + 0.1)`` (sCM's tangent normalisation, L2 norm per sample). ``dF_θ⁻/dτ`` along the
teacher ODE: forward-mode JVP (``torch.func.jvp``) where the model allows it, else the
"semi-continuous" finite difference with Δτ = 1e-4.

**DMD regulariser.** The generator is unrolled with the rCM sampler over 1–4 steps, only the last
x0-prediction keeps gradients; ``L_DMD`` is the VSD loss against the teacher's CFG x0 and a fake
score trained by flow matching on the generator's samples (no GAN).

**Sampler.** TrigFlow times ``[arctan σ_max, 1.3, 1.0, 0.6]`` (the first k for k steps): predict the
clean sample, re-noise it to the next time with fresh noise. NFE = k, no CFG.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tmd_bench.distill.precision import float32_island
from tmd_bench.distill import critics, losses
from tmd_bench.distill.dmd import _bcast, _randn
from tmd_bench.distill.dmd2 import FullStudent
from tmd_bench.distill.tmd import inner_noise
from tmd_bench.distill.trainer import update

from tmd_bench import flow, registry


@dataclass(frozen=True)
class RCMConfig:
    batch_size: int = 16
    seed: int = 0
    grad_clip: float = 1.0
    iterations: int = 600
    lr: float = 1e-4
    dmd_weight: float = 0.01  # λ
    teacher_guidance: float = 4.0  # Wan: 5
    tangent_warmup: int = 100  # iterations for r: 0 → 1
    tangent_c: float = 0.1
    fd_dtau: float = 1e-4
    tangent: str = "auto"  # "jvp", "fd" or "auto" (JVP if the model supports it)
    p_mean: float = -1.0  # log-normal proposal of tan τ (sCM)
    p_std: float = 1.4
    sigma_max: float = 80.0
    critic_t_shift: float = 5.0
    max_unroll: int = 4
    dtype: str = "float32"


# shapes: an rCM iteration (JVP tangent through the student, plus the fake score) measured ≈ 2.7 DMD2-v
# iterations on the CPU, so 300 iterations ≈ the wall-clock of DMD2-v's and TMD stage 2's 1000
PRESETS = {"shapes": RCMConfig(iterations=300),
           "wan2.1-1.3b": RCMConfig(batch_size=64, iterations=4000, lr=1e-5, teacher_guidance=5.0, dtype="bfloat16",
                                    tangent="fd"),
           "wan2.1-14b": RCMConfig(batch_size=64, iterations=4000, lr=1e-5, teacher_guidance=5.0, dtype="bfloat16",
                                   tangent="fd")}
PRESETS.update(registry.derived_presets(PRESETS))  # Wan2.2 teachers (registry.WAN22_PRESET_BASIS)

SAMPLER_TIMES = (None, 1.3, 1.0, 0.6)  # None: arctan(σ_max)


def preset(teacher: str, **overrides) -> RCMConfig:
    return replace(PRESETS.get(teacher, PRESETS["shapes"]), **{k: v for k, v in overrides.items() if v is not None})


def t_of_tau(tau: torch.Tensor) -> torch.Tensor:
    """Rectified-flow time of a TrigFlow time: ``t = sin τ / (sin τ + cos τ)``."""
    return torch.sin(tau) / (torch.sin(tau) + torch.cos(tau))


def tau_of_t(t: torch.Tensor) -> torch.Tensor:
    """``τ = arctan(t / (1 − t))``."""
    return torch.atan2(t, 1 - t)


def trig_velocity(v: torch.Tensor, x_tau: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``F = ((cos τ − sin τ)·x_τ + v) / (sin τ + cos τ)`` from a rectified-flow velocity v."""
    s, c = torch.sin(tau), torch.cos(tau)
    return (_bcast(c - s, x_tau) * x_tau + v) / _bcast(s + c, x_tau)


def student_F(student: FullStudent, x_tau: torch.Tensor, tau: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    s, c = torch.sin(tau), torch.cos(tau)
    x_t = x_tau / _bcast(s + c, x_tau)
    return trig_velocity(student.velocity(x_t, t_of_tau(tau), text), x_tau, tau)


def consistency(x_tau: torch.Tensor, tau: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """``f = cos τ·x_τ − sin τ·F``."""
    return _bcast(torch.cos(tau), x_tau) * x_tau - _bcast(torch.sin(tau), x_tau) * F


def sampler_taus(steps: int, sigma_max: float) -> list[float]:
    if not 1 <= steps <= len(SAMPLER_TIMES):
        raise ValueError(f"rCM samples with 1–{len(SAMPLER_TIMES)} steps, got {steps}")
    return [math.atan(sigma_max) if v is None else v for v in SAMPLER_TIMES[:steps]]


def sample_rcm(student: FullStudent, noise: torch.Tensor, text: torch.Tensor, steps: int, sigma_max: float = 80.0,
               seeds: list[int] | None = None, keep_grad_last: bool = False) -> torch.Tensor:
    """Predict the clean sample at each TrigFlow time, re-noise to the next with fresh noise."""
    taus = sampler_taus(steps, sigma_max)
    b = noise.shape[0]
    x_tau = noise  # x at τ_max ≈ pure noise (cos τ_max = 1/√(1 + σ_max²))
    x0 = noise
    for i, tau in enumerate(taus):
        last = i == len(taus) - 1
        with torch.set_grad_enabled(keep_grad_last and last and torch.is_grad_enabled()):
            tt = torch.full((b,), tau, device=noise.device, dtype=torch.float32)
            x0 = consistency(x_tau, tt, student_F(student, x_tau, tt, text))
        if not last:
            nxt = taus[i + 1]
            eps = inner_noise(seeds, i, noise.shape, noise.device, noise.dtype)
            x_tau = math.cos(nxt) * x0.detach() + math.sin(nxt) * eps
    return x0


def rcm_method(student: FullStudent, sigma_max: float = 80.0):
    from tmd_bench.harness import Method

    def sample(noise, text, negative, steps, seeds=None):
        with torch.no_grad():
            return sample_rcm(student, noise, text, steps, sigma_max, seeds)

    return Method(name="rcm", sample=sample, declared_nfe=lambda m: m, declared_effective_nfe=lambda m: m,
                  network=student.transformer, blocks=list(student.transformer.blocks),
                  config=lambda m: {**student.config, "steps": m, "sampler": "rCM re-noising (TrigFlow)",
                                    "taus": sampler_taus(m, sigma_max), "guidance": "distilled"},
                  columns=lambda m: {"config_label": f"s{m}"})


class RCM:
    """One iteration: the student by ``L_sCM + λ·L_DMD``, then the fake score by flow matching."""

    name = "rcm"
    loss_names = ("scm", "vsd", "fake_fm")

    def __init__(self, teacher, student: FullStudent, cfg: RCMConfig):
        self.teacher, self.student, self.config = teacher, student.train().requires_grad_(True), cfg
        teacher.transformer.eval().requires_grad_(False)
        self.fake = critics.FakeScore(teacher.transformer)
        self.opts = {"student": torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99)),
                     "fake_score": torch.optim.AdamW(self.fake.parameters(), lr=cfg.lr, betas=(0.0, 0.99))}
        self.negative = teacher.encode_text([teacher.spec.negative_prompt])
        self.use_jvp = cfg.tangent in ("jvp", "auto")

    def modules(self):
        return {"student": self.student, "fake_score": self.fake}

    def optimizers(self):
        return self.opts

    def teacher_F(self, x_tau, tau, text) -> torch.Tensor:
        """The teacher's CFG velocity in TrigFlow: ``dx_τ/dτ`` of the probability-flow ODE."""
        s, c = torch.sin(tau), torch.cos(tau)
        x_t, t = x_tau / _bcast(s + c, x_tau), t_of_tau(tau)
        with torch.no_grad():
            g = critics.teacher_x0(self.teacher, x_t, t, text, self.negative, self.config.teacher_guidance)
        v = (x_t - g) / _bcast(t, x_t)  # g = x_t − t·v
        return trig_velocity(v, x_tau, tau)

    def dF_dtau(self, x_tau, tau, text, dx) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_θ⁻, dF_θ⁻/dτ)`` along ``(dx_τ/dτ, 1)``, no gradient: JVP or finite difference."""
        st = self.student
        if self.use_jvp:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            try:
                # fused attention kernels have no forward-mode AD; the math kernel does (fine at
                # Shapes size, quadratic memory at video length: Wan presets use "fd")
                with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
                    return torch.func.jvp(lambda x, tt: student_F(st, x, tt, text), (x_tau, tau),
                                          (dx, torch.ones_like(tau)))
            except (RuntimeError, NotImplementedError) as e:
                if self.config.tangent == "jvp":
                    raise RuntimeError(f"--tangent jvp: forward-mode AD failed on this model ({e}); use fd") from e
                self.use_jvp = False  # e.g. FlashAttention has no forward-mode AD: finite differences
        # a difference of near-equal outputs: in float32 even when the student computes in bf16
        with torch.no_grad(), float32_island(st):
            h = self.config.fd_dtau
            F0 = student_F(st, x_tau.float(), tau, text).float()
            F1 = student_F(st, x_tau.float() + h * dx.float(), tau + h, text).float()
            return F0, (F1 - F0) / h

    def step(self, batch, iteration: int) -> dict[str, float]:
        cfg, st = self.config, self.student
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 5 * 100_003 + iteration)
        x, text = batch.clips, batch.text
        b, dev = x.shape[0], x.device
        eps = _randn(x.shape, g, x)
        tau = torch.atan(torch.exp(cfg.p_mean + cfg.p_std * torch.randn(b, generator=g))).to(dev)
        s, c = torch.sin(tau), torch.cos(tau)
        x_tau = _bcast(c, x) * x + _bcast(s, x) * eps
        dx = self.teacher_F(x_tau, tau, text)
        F_minus, dF = self.dF_dtau(x_tau, tau, text, dx)
        r = min(1.0, (iteration + 1) / max(cfg.tangent_warmup, 1))
        tangent = -_bcast(c * c, x) * (F_minus - dx) - r * _bcast(c * s, x) * (x_tau + dF)
        tangent = tangent / _bcast(tangent.flatten(1).norm(dim=1) + cfg.tangent_c, x)
        F = student_F(st, x_tau, tau, text)
        l_scm = (F.float() - (F_minus + tangent).float()).pow(2).mean()
        # DMD regulariser through a 1–4 step unroll, gradients through the last step only
        k = int(torch.randint(1, cfg.max_unroll + 1, (), generator=g))
        noise = _randn(x.shape, g, x)
        x_hat = sample_rcm(st, noise, text, k, cfg.sigma_max, seeds=[int(v) for v in torch.randint(0, 2**31, (b,), generator=g)],
                           keep_grad_last=True)
        t2 = flow.shift(0.001 + 0.998 * torch.rand(b, generator=g), cfg.critic_t_shift).to(dev)
        eps2 = _randn(x.shape, g, x)
        x_hat_t = flow.interpolate(x_hat, eps2, t2)
        g_teacher = critics.teacher_x0(self.teacher, x_hat_t.detach(), t2, text, self.negative, cfg.teacher_guidance)
        with torch.no_grad():
            g_fake = self.fake(x_hat_t.detach(), t2, text)
        l_vsd = losses.vsd_loss(x_hat, g_teacher, g_fake)
        self._update("student", l_scm + cfg.dmd_weight * l_vsd)
        # fake score: flow matching on the generator's samples, v_F = (x_t − g_F)/t vs ε − x̂
        x_hat = x_hat.detach()
        v_fake = (x_hat_t.detach() - self.fake(x_hat_t.detach(), t2, text)) / _bcast(t2, x)
        l_fm = losses.regression_loss(v_fake, eps2 - x_hat) * 2
        self._update("fake_score", l_fm)
        return {"scm": l_scm.item(), "vsd": l_vsd.item(), "fake_fm": l_fm.item()}

    def _update(self, name: str, loss: torch.Tensor) -> None:
        update(self.opts[name], loss, self.modules()[name].parameters(), self.config.grad_clip)

    def export(self, folder: Path) -> Path:
        return self.student.save(folder, self.teacher.name, self.teacher.checkpoint_hash(),
                                 {"train_config": asdict(self.config)})


def run_rcm(teacher, cfg: RCMConfig, out: str | Path, resume: bool = False, checkpoint_every: int = 100,
            log_every: int = 10, data=None) -> Path:
    from tmd_bench.distill.data import training_batches
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    out = Path(out)
    batches = training_batches(teacher, cfg.batch_size, cfg.seed, data)  # data: a latents folder, or the world
    student = FullStudent(copy.deepcopy(teacher.transformer), "rcm", {"sigma_max": cfg.sigma_max})
    train(RCM(teacher, student, cfg), batches, out, cfg.iterations,
          resume=resume and ckpt.has_state(out), checkpoint_every=checkpoint_every, log_every=log_every,
          description="rCM (sCM + DMD)")
    return out / "student"
