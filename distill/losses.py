"""Distillation losses: one small function each, the equation in its docstring (FastGen style).

Shared by TMD (stage 1 and 2) and the baselines (DMD2-v, rCM's DMD term, KD, MeanFlow).
Per-sample reductions are means over the latent elements, then over the batch; the
normalisations that matter are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def adaptive_l2(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """MeanFlow's adaptive loss (spec tmd.md §7.7): ``‖u − û‖² / sg(‖u − û‖² + c)``, per sample.

    ``c`` is the constant in summed-squares units: c = d (number of latent elements) for Wan 1.3B.
    """
    sq = _per_sample(pred.float() - target.float()).pow(2).sum(1)
    return (sq / (sq.detach() + c)).mean()


def meanflow_target(u_fn, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, v: torch.Tensor,
                    delta: float) -> torch.Tensor:
    """MeanFlow's target ``û = v − (t − r)·du/dt`` (Geng et al., 2025; spec tmd.md §7.6), no gradient.

    ``u_fn(z, t)`` is the average velocity to the fixed ``r``; its total derivative along
    ``dz/dt = v`` is taken by central finite differences
    ``[u(z + δv, t + δ) − u(z − δv, t − δ)] / 2δ``, one-sided where t ± δ leaves [r, 1]
    (finite differences, not forward-mode JVP: JVP does not work with FlashAttention/FSDP).
    """

    def col(a: torch.Tensor) -> torch.Tensor:
        return a.view(-1, *[1] * (z.ndim - 1)).to(torch.float32)

    # a difference of nearly equal outputs: formed in float32 (run u_fn itself in float32 when the
    # network is bf16: distill/precision.py), never in the compute dtype
    z, v = z.float(), v.float()
    with torch.no_grad():
        hi = torch.where(t + delta <= 1.0, t + delta, t)
        lo = torch.where(t - delta >= r, t - delta, t)
        du_dt = ((u_fn(z + col(hi - t) * v, hi).float() - u_fn(z + col(lo - t) * v, lo).float())
                 / col((hi - lo).clamp_min(delta)))
        return v - col(t - r) * du_dt


def vsd_loss(x_hat: torch.Tensor, g_teacher: torch.Tensor, g_fake: torch.Tensor) -> torch.Tensor:
    """Variational score distillation (DMD2; spec §8.4), reverse-KL gradient in x0-space:

    ``w = 1 / (mean|x̂ − g_T| + 1e-6)``, ``L = ½‖x̂ − sg(x̂ − w·(g_F − g_T))‖²`` (mean over elements),
    whose gradient w.r.t. x̂ is ``w·(g_F − g_T)``.
    """
    x32, gt, gf = x_hat.float(), g_teacher.float().detach(), g_fake.float().detach()
    w = 1.0 / (_per_sample(x32 - gt).abs().mean(1).detach() + 1e-6)
    target = (x32 - w.view(-1, *[1] * (x32.ndim - 1)) * (gf - gt)).detach()
    return 0.5 * F.mse_loss(x32, target)


def dsm_loss(g_fake: torch.Tensor, x_clean: torch.Tensor) -> torch.Tensor:
    """Denoising score matching in x0-space for the fake score: ``‖g_F(x̂_t, t) − sg(x̂)‖²``."""
    return F.mse_loss(g_fake.float(), x_clean.float().detach())


def gan_generator_loss(logits: list[torch.Tensor]) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(−D(φ(x̂_t)))``, averaged over heads."""
    return torch.stack([F.softplus(-lg.float()).mean() for lg in logits]).mean()


def gan_discriminator_loss(fake_logits: list[torch.Tensor], real_logits: list[torch.Tensor]) -> torch.Tensor:
    """``softplus(D(fake)) + softplus(−D(real))``, averaged over heads."""
    return torch.stack([F.softplus(f.float()).mean() + F.softplus(-r.float()).mean()
                        for f, r in zip(fake_logits, real_logits)]).mean()


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KD's ODE-pair regression ``½·MSE(G(noise), x_teacher)``."""
    return 0.5 * F.mse_loss(pred.float(), target.float().detach())
