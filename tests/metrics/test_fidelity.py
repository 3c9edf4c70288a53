import numpy as np
import pytest
import torch
from tmd_bench.metrics.fidelity import frechet_distance, paired_psnr_ssim


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    """For N(μ1, diag(s1²)) and N(μ2, diag(s2²)): ‖μ1 − μ2‖² + Σ(s1 − s2)²."""
    rng = np.random.default_rng(0)
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    a = rng.normal([0, 1, 2], s1, size=(200_000, 3))
    b = rng.normal([1, 1, 0], s2, size=(200_000, 3))
    assert frechet_distance(a, b) == pytest.approx(1 + 4 + (0.25 + 1.0), rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(np.zeros((1, 2)), np.zeros((4, 2)))


def test_psnr_ssim_identical_and_noisy():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 4, 24, 24, generator=g) * 2 - 1
    psnr, ssim = paired_psnr_ssim(ref, ref)
    assert psnr == 100.0 and ssim == pytest.approx(1.0)
    noisy = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    psnr_n, ssim_n = paired_psnr_ssim(noisy, ref)
    mse = ((noisy - ref) ** 2).mean().item()
    assert psnr_n == pytest.approx(10 * np.log10(4 / mse), rel=0.05) and ssim_n < 0.99


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_frechet_distance_refuses_non_finite_features(bad):
    a = np.random.default_rng(0).normal(size=(8, 3))
    b = a.copy()
    b[5, 1] = bad
    with pytest.raises(ValueError, match="second feature set has NaN or inf values in 1 of 8 samples"):
        frechet_distance(a, b)
