"""Fidelity to the teacher (evaluation spec §2): paired PSNR/SSIM against the teacher's 50-step
CFG samples from the same initial noise, and the Fréchet distance between feature sets.
"""

from __future__ import annotations

import numpy as np
import torch


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2·(Σ_a Σ_b)^{1/2})`` between two feature sets ``(N, D)``.

    The trace of the matrix square root is computed from the eigenvalues of the symmetric
    ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` (float64), which stays real where ``sqrtm(Σ_a Σ_b)`` may not.

    FD is biased upwards at small N (sample covariances), so values are comparable only at equal N:
    the harness reports N beside every FD column, and on the Shapes world the floor at that N.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples per set")
    for name, x in (("first", a), ("second", b)):
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.flatnonzero(bad.any(1))
            raise ValueError(f"Fréchet distance: the {name} feature set has NaN or inf values in {len(rows)} of "
                             f"{len(x)} samples (first: sample {rows[0]}); the clips or the feature model are broken")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def paired_psnr_ssim(videos: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over frames of clips ``(B, 3, F, H, W)`` in [−1, 1] against the
    reference clips from the same noise (torchmetrics, data range 2)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if videos.shape != reference.shape:
        raise ValueError(f"clips {tuple(videos.shape)} and reference {tuple(reference.shape)} differ in shape")
    b, c, f, h, w = videos.shape
    x = videos.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    y = reference.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    psnr = peak_signal_noise_ratio(x, y, data_range=2.0, reduction="none", dim=(1, 2, 3))
    # torchmetrics' default Gaussian window (σ = 1.5, 11 × 11, as in Wang et al. 2004); with a Gaussian
    # window its kernel_size argument is unused (the size comes from σ), so none is passed
    ssim = structural_similarity_index_measure(x, y, data_range=2.0)
    return float(psnr.clamp(max=100.0).mean()), float(ssim)
