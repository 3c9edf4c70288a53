"""rCM on tiny networks: TrigFlow identities, tangent by JVP = finite difference, training, sampler."""

import copy

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill import rcm
from tmd_bench.distill.data import WorldBatches
from tmd_bench.distill.dmd2 import FullStudent

from tmd_bench import harness

CFG = rcm.RCMConfig(batch_size=4, lr=1e-3, teacher_guidance=2.0, tangent_warmup=5)


def student_of(teacher):
    return FullStudent(copy.deepcopy(teacher.transformer), "rcm", {"sigma_max": 80.0})


def test_trigflow_time_maps_are_inverse():
    t = torch.linspace(0.001, 0.999, 50, dtype=torch.float64)
    torch.testing.assert_close(rcm.t_of_tau(rcm.tau_of_t(t)), t)
    assert rcm.t_of_tau(torch.tensor(torch.pi / 2)) == pytest.approx(1.0)


def test_consistency_function_is_the_x0_prediction():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    x_t = torch.randn(teacher.latent_shape(2))
    text = teacher.encode_text(["a", "b"])
    t = torch.tensor([0.2, 0.85])
    tau = rcm.tau_of_t(t)
    x_tau = x_t * (torch.sin(tau) + torch.cos(tau)).view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        f = rcm.consistency(x_tau, tau, rcm.student_F(st, x_tau, tau, text))
        torch.testing.assert_close(f, st.x0(x_t, t, text), rtol=1e-4, atol=1e-4)


def test_jvp_tangent_matches_finite_differences():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    text = teacher.encode_text(["a", "b"])
    x = torch.randn(teacher.latent_shape(2))
    tau, dx = torch.tensor([0.4, 1.1]), torch.randn(teacher.latent_shape(2))
    jvp = rcm.RCM(teacher, st, rcm.RCMConfig(tangent="jvp"))
    F1, d1 = jvp.dF_dtau(x, tau, text, dx)
    assert jvp.use_jvp  # forward-mode AD worked (math attention kernel)
    fd = rcm.RCM(teacher, st, rcm.RCMConfig(tangent="fd", fd_dtau=1e-4))
    F2, _ = fd.dF_dtau(x, tau, text, dx)
    torch.testing.assert_close(F1, F2)
    # central differences in float64 converge to the JVP
    st64 = copy.deepcopy(st).double()
    h = 1e-5
    with torch.no_grad():
        hi = rcm.student_F(st64, (x + h * dx).double(), tau.double() + h, text.double())
        lo = rcm.student_F(st64, (x - h * dx).double(), tau.double() - h, text.double())
    assert ((hi - lo) / (2 * h) - d1.double()).abs().mean() < 0.01 * d1.abs().mean()


def test_step_is_finite_and_reaches_student_and_fake():
    teacher = tiny_shapes_teacher()
    method = rcm.RCM(teacher, student_of(teacher), CFG)
    out = method.step(next(WorldBatches(teacher, 4)), 0)
    assert set(out) == {"scm", "vsd", "fake_fm"} and all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert method.student.transformer.blocks[0].attn1.to_q.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.fake.parameters())
    assert all(p.grad is None for p in teacher.transformer.parameters())


def test_warmup_phase_pulls_the_student_velocity_to_the_guided_teacher():
    """At r ≈ 0 the sCM tangent is −cos²τ·(F⁻ − dx/dτ): training moves F_θ to the teacher's CFG
    velocity (which differs from the student's initial, unguided one). Measured on held-out clips.
    (The full consistency property needs a smooth, trained teacher: random tiny networks wiggle
    in t at the scale of Wan's 1000·t sinusoidal embedding.)"""
    teacher = tiny_shapes_teacher()
    cfg = rcm.RCMConfig(**{**CFG.__dict__, "dmd_weight": 0.0, "lr": 2e-3, "tangent_warmup": 10**9})
    method = rcm.RCM(teacher, student_of(teacher), cfg)
    held = next(WorldBatches(teacher, 16, seed=7))
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(held.clips.shape, generator=g)
    tau = torch.atan(torch.exp(-1.0 + 1.4 * torch.randn(16, generator=g)))
    c, s = torch.cos(tau).view(-1, 1, 1, 1, 1), torch.sin(tau).view(-1, 1, 1, 1, 1)
    x_tau = c * held.clips + s * eps
    target = method.teacher_F(x_tau, tau, held.text)

    def error() -> float:
        with torch.no_grad():
            return (rcm.student_F(method.student, x_tau, tau, held.text) - target).pow(2).mean().item()

    before, data = error(), WorldBatches(teacher, 8)
    for i in range(30):
        method.step(next(data), i)
    assert error() < 0.8 * before


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sampler_counts_nfe_and_is_batch_independent(steps):
    teacher = tiny_shapes_teacher()
    m = rcm.rcm_method(student_of(teacher).eval())
    prompts = ["a small red circle moving left on a black background"] * 2
    a = harness.generate(m, teacher, prompts, [3, 4], steps, batch_size=2)
    b = harness.generate(m, teacher, prompts, [3, 4], steps, batch_size=1)
    assert a.nfe_counted == steps
    torch.testing.assert_close(a.videos, b.videos, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="1–4 steps"):
        rcm.sampler_taus(5, 80.0)
