"""Diversity: does a distilled generator still cover the modes, or has it collapsed?

Distribution-matching distillation (DMD2, TMD's stage 2) is known to drop modes, and neither VBench
nor a per-clip correctness rate sees it: a student that draws the same clip for every seed of a prompt
can score perfectly. These measures need several samples per prompt (``evaluate --per-prompt K``,
K = 8 by default when diversity is asked for, as distillation papers do).

On features ``(P, K, D)`` — P prompts, K samples each (clip-level CLIP features: the mean of the
frames' normalised image features):

- :func:`pairwise_diversity`: ``1 − mean cos(f_i, f_j)`` over the K(K − 1)/2 pairs of a prompt,
  averaged over prompts. 0: every sample of a prompt is the same clip.
- :func:`vendi_score`: the Vendi score (Friedman & Dieng, 2023), ``exp(−Σ λ log λ)`` with λ the
  eigenvalues of ``S / K``, S the K × K cosine-similarity matrix: the effective number of distinct
  samples, from 1 (all alike) to K (mutually orthogonal), averaged over prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(feats: torch.Tensor) -> torch.Tensor:
    if feats.ndim != 3 or feats.shape[1] < 2:
        raise ValueError(f"diversity needs features (prompts, K ≥ 2 samples, dim), got {tuple(feats.shape)}")
    if not torch.isfinite(feats).all():
        raise ValueError("diversity: the features have NaN or inf values")
    return F.normalize(feats.double(), dim=-1)


def pairwise_diversity(feats: torch.Tensor) -> float:
    """``1 − mean pairwise cosine`` of each prompt's K samples, averaged over prompts."""
    x = _check(feats)
    k = x.shape[1]
    sim = x @ x.transpose(1, 2)  # (P, K, K)
    off = ~torch.eye(k, dtype=torch.bool)
    return float((1 - sim[:, off].mean(1)).mean())


def vendi_score(feats: torch.Tensor) -> float:
    """The Vendi score of each prompt's K samples (cosine kernel), averaged over prompts."""
    x = _check(feats)
    k = x.shape[1]
    lam = torch.linalg.eigvalsh(x @ x.transpose(1, 2) / k).clamp_min(0)  # (P, K), sums to 1
    entropy = -(lam * torch.where(lam > 0, lam.log(), torch.zeros_like(lam))).sum(1)
    return float(entropy.exp().mean())


def clip_diversity(frame_features: torch.Tensor, per_prompt: int) -> dict[str, float]:
    """Both measures from frame features ``(P·K, F, D)`` ordered prompt-major (K samples of prompt 0,
    then prompt 1, …), as ``evaluate --per-prompt K`` generates them."""
    n = frame_features.shape[0]
    if per_prompt < 2 or n % per_prompt:
        raise ValueError(f"diversity needs --per-prompt ≥ 2 dividing the {n} clips, got {per_prompt}")
    clips = F.normalize(frame_features.float().mean(1), dim=-1).view(n // per_prompt, per_prompt, -1)
    return {"div_pairwise": pairwise_diversity(clips), "div_vendi": vendi_score(clips)}
