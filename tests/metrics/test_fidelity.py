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


def test_frechet_distance_edges_where_a_student_lives():
    """What mutation testing found unguarded: the smallest valid sets, rank-deficient covariances (fewer
    samples than dimensions, where rounding makes eigenvalues slightly negative), float32 features
    computed in float64, and every malformed set refused with a message that counts the bad rows."""
    rng = np.random.default_rng(0)
    two = rng.normal(size=(2, 3))
    assert frechet_distance(two, two + 1.0) == pytest.approx(3.0, abs=1e-6)  # two samples per set are enough
    few = rng.normal(size=(3, 16))  # N < D: a singular covariance
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    wide = rng.normal(size=(5, 64))
    d = frechet_distance(wide, wide[::-1] + 0.5)
    assert np.isfinite(d) and d == pytest.approx(64 * 0.25, rel=1e-6)  # same covariance, shifted mean
    # float32 input is promoted, not computed in float32 (which would lose ~1e-4 here)
    a32 = rng.normal(loc=30.0, size=(400, 8)).astype(np.float32)
    b32 = rng.normal(loc=30.1, size=(400, 8)).astype(np.float32)
    assert frechet_distance(a32, b32) == frechet_distance(a32.astype(np.float64), b32.astype(np.float64))
    with pytest.raises(ValueError, match=r"must be \(N, D\)"):
        frechet_distance(np.zeros(4), np.zeros((4, 2)))  # one set 1-D
    with pytest.raises(ValueError, match=r"must be \(N, D\)"):
        frechet_distance(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="needs at least two samples per set"):
        frechet_distance(np.zeros((4, 2)), np.zeros((1, 2)))
    bad = rng.normal(size=(6, 3))
    bad[[1, 4], 0] = np.nan
    with pytest.raises(ValueError, match=r"the second feature set has NaN or inf values in 2 of 6 samples \(first: sample 1\)"):
        frechet_distance(rng.normal(size=(6, 3)), bad)
    with pytest.raises(ValueError, match="the first feature set"):
        frechet_distance(bad, rng.normal(size=(6, 3)))


def test_psnr_is_the_mean_of_per_frame_psnr_each_capped_at_100_db():
    """A frame equal to its reference is +inf dB; it counts as 100 dB in the mean over frames, beside the
    frames that differ (a mean taken first would be inf, and then 100 for the whole clip)."""
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 3, 2, 16, 16, generator=g) * 2 - 1
    out = ref.clone()
    out[:, :, 1] = (ref[:, :, 1] + 0.2 * torch.randn(ref[:, :, 1].shape, generator=g)).clamp(-1, 1)
    mse = float(((out[:, :, 1].double() - ref[:, :, 1].double()) ** 2).mean())
    psnr, _ = paired_psnr_ssim(out, ref)
    assert psnr == pytest.approx((100.0 + 10 * np.log10(4 / mse)) / 2, abs=1e-3)


def test_psnr_ssim_name_both_shapes_when_they_differ():
    with pytest.raises(ValueError, match=r"clips \(1, 3, 2, 8, 8\) and reference \(1, 3, 2, 8, 6\) differ in shape"):
        paired_psnr_ssim(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 6))
