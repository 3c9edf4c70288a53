"""Guards for the distillation maths the rest of the suite only checks at degenerate points: MeanFlow learning,
the MeanFlow / TM-MF targets at r < s against an analytic total derivative, the GAN losses and the adaptive
L2 against hand-written formulas (values and gradients), the teacher's CFG x0, and the direction of the
VSD update at every call site (the student moves towards the teacher's x0, away from the fake score's)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill import critics, losses
from tmd_bench.distill.data import WorldBatches

# -- 4. MeanFlow learns ----------------------------------------------------------------------------------------


def test_meanflow_mse_falls():
    """A few dozen MeanFlow steps (CFG target, half the samples at r < t): the logged mse falls. The same four
    (batch, iteration) pairs are cycled so the first and last windows draw identical t, r, noise and
    dropout; on fresh draws the per-batch mse varies by 5× and a window comparison would be luck."""
    from tmd_bench.distill.meanflow import MeanFlow, MeanFlowConfig, MeanFlowStudent

    teacher = tiny_shapes_teacher()
    cfg = MeanFlowConfig(batch_size=8, lr=1e-3, mf_prob=0.5, text_dropout=0.0)
    student = MeanFlowStudent(copy.deepcopy(teacher.transformer), {"steps": 2, "shift": 10.0})
    method = MeanFlow(teacher, student, cfg)
    data = WorldBatches(teacher, 8)
    batches = [next(data) for _ in range(4)]
    mse = [method.step(batches[i % 4], i % 4)["mse"] for i in range(32)]
    first, last = sum(mse[:8]) / 8, sum(mse[-8:]) / 8
    assert all(math.isfinite(v) for v in mse)
    assert last < 0.9 * first, mse  # measured: 0.78 (no update: 1.0; ascent: > 1)


# -- 5. MeanFlow targets at r < s against an analytic total derivative ----------------------------------------

# u(z, t) = a·z + b·z² + c·t² + e·z·t; along dz/dt = v:  du/dt = a·v + 2b·z·v + 2c·t + e·(v·t + z)
A_, B_, C_, E_ = 0.7, 0.4, -1.1, 0.6
DELTA = 5e-3


def _u(z, t):
    tt = t.view(-1, *[1] * (z.ndim - 1))
    return A_ * z + B_ * z**2 + C_ * tt**2 + E_ * z * tt


def _du_dt(z, t, v):
    tt = t.view(-1, *[1] * (z.ndim - 1))
    return A_ * v + 2 * B_ * z * v + 2 * C_ * tt + E_ * (v * tt + z)


def _one_sided_bound(t, r, v):
    """|error| of a one-sided difference of the quadratic u: δ·(|b|v² + |c| + |e|·|v|), times (t − r)."""
    tt, rr = (a.view(-1, *[1] * (v.ndim - 1)) for a in (t, r))
    return (tt - rr) * DELTA * (abs(B_) * v**2 + abs(C_) + abs(E_) * v.abs()) + 1e-4


@pytest.mark.parametrize("t,r", [(0.6, 0.2), (0.9, 0.05), (0.35, 0.3)])
def test_meanflow_target_matches_the_identity_for_a_quadratic_field(t, r):
    """û = v − (t − r)·du/dt, the total derivative along the flow (central differences: exact here)."""
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    tt, rr = torch.full((3,), t), torch.full((3,), r)
    got = losses.meanflow_target(_u, z, tt, rr, v, DELTA)
    want = v - (t - r) * _du_dt(z, tt, v)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-4)
    partial_only = v - (t - r) * (2 * C_ * t + E_ * z)  # ∂u/∂t without the v·∂u/∂z term: far off
    assert (got - partial_only).abs().max() > 0.05
    wrong_sign = v + (t - r) * _du_dt(z, tt, v)
    assert (got - wrong_sign).abs().max() > 0.05


@pytest.mark.parametrize("t,r", [(0.999, 0.3), (0.302, 0.3)])
def test_meanflow_target_near_the_ends_is_the_one_sided_difference(t, r):
    g = torch.Generator().manual_seed(1)
    z, v = torch.randn(2, 7, generator=g), torch.randn(2, 7, generator=g)
    tt, rr = torch.full((2,), t), torch.full((2,), r)
    got = losses.meanflow_target(_u, z, tt, rr, v, DELTA)
    want = v - (t - r) * _du_dt(z, tt, v)
    assert ((got - want).abs() <= _one_sided_bound(tt, rr, v)).all()


def test_tm_meanflow_target_at_r_below_s_matches_the_identity():
    """TM-MF: u(y, s) = y1 − head(y, s, r; m). With an analytic head (quadratic in y and s, depending on r and
    on the features), û = v − (s − r)·du/ds = v + (s − r)·d head/ds along dy/ds = v, r held fixed."""
    from tmd_bench.distill.tmd_train import tm_meanflow_target

    a, b, c, d = 0.8, 0.5, -0.9, 1.7
    g = torch.Generator().manual_seed(2)
    shape = (3, 3, 2, 4, 4)
    y_s, y1, v, feats = (torch.randn(shape, generator=g) for _ in range(4))

    def col(x):
        return x.view(-1, 1, 1, 1, 1)

    def head(y, s, r, m, time=None):
        return a * y + b * col(s) * y**2 + c * col(s) ** 2 + d * col(r) * col(s) + m * col(s)

    def dhead_ds(y, s, r, m, v):
        return a * v + b * y**2 + 2 * b * col(s) * y * v + 2 * c * col(s) + d * col(r) + m

    s = torch.tensor([0.6, 0.45, 0.8])
    r = torch.tensor([0.2, 0.1, 0.5])
    got = tm_meanflow_target(SimpleNamespace(head=head), feats, y_s, y1, s, r, v, DELTA)
    want = v + col(s - r) * dhead_ds(y_s, s, r, feats, v)
    # central differences are exact but for the cubic s·y(s)² term: error b·v²·δ², times (s − r)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)
    assert (got - v).abs().max() > 0.1  # r < s: the derivative term is there
    # u = head − y1 (the sign of u flipped) would give v − (s − r)·d head/ds
    assert (got - (v - col(s - r) * dhead_ds(y_s, s, r, feats, v))).abs().max() > 0.1
    # at r = s the target is v whatever the head
    torch.testing.assert_close(tm_meanflow_target(SimpleNamespace(head=head), feats, y_s, y1, s, s, v, DELTA), v)


def test_meanflow_step_differentiates_along_t_with_r_fixed(monkeypatch):
    """The MeanFlow training step's own wiring (its ``u_fn`` closure): with an analytic student
    u(z, r, t) = quadratic(z, t) + k·r·t, every target the step builds at r < t is the identity's."""
    from tmd_bench.distill import meanflow
    from tmd_bench.distill.meanflow import MeanFlow, MeanFlowConfig, MeanFlowStudent

    k = 2.5
    teacher = tiny_shapes_teacher()
    st = MeanFlowStudent(copy.deepcopy(teacher.transformer), {"steps": 2, "shift": 10.0})
    anchor = st.delta_time.embed.linear_2.bias  # keeps the analytic output attached to a parameter

    def analytic(z, r, t, text):
        t, r = (t.expand(z.shape[0]) if t.ndim == 0 else t), (r.expand(z.shape[0]) if r.ndim == 0 else r)
        return _u(z, t) + k * (r * t).view(-1, 1, 1, 1, 1) + 0 * anchor.sum()

    st.forward = analytic
    seen = []
    original = losses.meanflow_target

    def capture(u_fn, z, t, r, v, delta):
        out = original(u_fn, z, t, r, v, delta)
        seen.append((z.float(), t, r, v.float(), out))
        return out

    monkeypatch.setattr(meanflow.losses, "meanflow_target", capture)
    cfg = MeanFlowConfig(batch_size=6, mf_prob=1.0, fd_delta=DELTA)
    MeanFlow(teacher, st, cfg).step(next(WorldBatches(teacher, 6)), 0)
    (z, t, r, v, out), = seen
    assert (r < t - 1e-3).any()
    col = lambda a: a.view(-1, 1, 1, 1, 1)  # noqa: E731
    want = v - col(t - r) * (_du_dt(z, t, v) + k * col(r))
    central = (t + DELTA <= 1) & (t - DELTA >= r)
    torch.testing.assert_close(out[central], want[central], rtol=0, atol=2e-3)
    if (~central).any():
        assert ((out - want).abs()[~central] <= _one_sided_bound(t, r, v)[~central] + 2e-3).all()


# -- 6. GAN losses and the adaptive L2 against hand computations ----------------------------------------------

def _softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_gan_generator_loss_is_non_saturating_softplus():
    heads = [torch.tensor([[-3.0, 0.0, 2.0]], requires_grad=True), torch.tensor([[1.5, -0.5]], requires_grad=True)]
    loss = losses.gan_generator_loss(heads)
    want = 0.5 * (sum(_softplus(-x) for x in (-3.0, 0.0, 2.0)) / 3 + sum(_softplus(-x) for x in (1.5, -0.5)) / 2)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    # d/dl softplus(−l) = −σ(−l): the generator raises every logit; at l = −3 (confidently fake) the
    # gradient stays ≈ −σ(3) ≈ −0.95 (non-saturating), where log(1 − D) would give −σ(−3) ≈ −0.05
    for h, n in zip(heads, (3, 2)):
        want_grad = torch.tensor([[-0.5 * _sigmoid(-x) / n for x in h.detach().flatten().tolist()]])
        torch.testing.assert_close(h.grad, want_grad, rtol=1e-5, atol=1e-7)
    assert heads[0].grad[0, 0].item() < -0.9 * 0.5 / 3


def test_gan_discriminator_loss_is_the_logistic_loss():
    fake = [torch.tensor([[2.0, -1.0]], requires_grad=True), torch.tensor([[0.3]], requires_grad=True)]
    real = [torch.tensor([[0.5, 4.0]], requires_grad=True), torch.tensor([[-2.0]], requires_grad=True)]
    loss = losses.gan_discriminator_loss(fake, real)
    want = 0.5 * ((_softplus(2.0) + _softplus(-1.0)) / 2 + (_softplus(-0.5) + _softplus(-4.0)) / 2
                  + _softplus(0.3) + _softplus(2.0))
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    # the discriminator lowers fake logits (gradient +σ(f)) and raises real ones (gradient −σ(−r))
    torch.testing.assert_close(fake[0].grad, torch.tensor([[0.25 * _sigmoid(2.0), 0.25 * _sigmoid(-1.0)]]))
    torch.testing.assert_close(fake[1].grad, torch.tensor([[0.5 * _sigmoid(0.3)]]))
    torch.testing.assert_close(real[0].grad, torch.tensor([[-0.25 * _sigmoid(-0.5), -0.25 * _sigmoid(-4.0)]]))
    torch.testing.assert_close(real[1].grad, torch.tensor([[-0.5 * _sigmoid(2.0)]]))
    # swapped real/fake arguments would give a different value here
    assert losses.gan_discriminator_loss(real, fake).item() != pytest.approx(want, rel=1e-3)


def test_adaptive_l2_is_squared_error_over_a_detached_normaliser():
    """‖u − û‖² / sg(‖u − û‖² + c) per sample (summed squares), mean over the batch; gradient
    2(u − û)/(‖u − û‖² + c)/B — with the normaliser not detached it would be that times c/(‖·‖² + c)."""
    pred = torch.tensor([[1.0, 2.0, 0.0], [0.5, -0.5, 3.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 1.0]])
    c = 3.0
    sq = [1 + 4 + 0, 0 + 1 + 4]  # 5, 5
    loss = losses.adaptive_l2(pred, target, c)
    assert loss.item() == pytest.approx(sum(s / (s + c) for s in sq) / 2, rel=1e-6)  # 0.625
    loss.backward()
    diff = pred.detach() - target
    want = torch.stack([2 * diff[i] / (sq[i] + c) / 2 for i in range(2)])
    torch.testing.assert_close(pred.grad, want)
    # descent direction: pred moves towards the target
    assert (pred.grad * diff).sum() > 0
    # a per-sample normaliser: scaling one sample's error leaves the other's gradient alone
    p2 = pred.detach().clone()
    p2[1] = target[1] + 10 * diff[1]
    p2.requires_grad_(True)
    losses.adaptive_l2(p2, target, c).backward()
    torch.testing.assert_close(p2.grad[0], want[0])


def test_teacher_x0_is_the_cfg_mix_of_the_teachers_x0_predictions():
    """g_T = x_t − t·(v_u + w·(v_c − v_u)), from two separate teacher passes (Teacher.velocity)."""
    teacher = tiny_shapes_teacher()
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn(teacher.latent_shape(2), generator=g)
    t = torch.tensor([0.3, 0.8])
    text = teacher.encode_text(["a small red circle moving left on a black background",
                                "two large blue squares standing still on a gray background"])
    neg = teacher.encode_text([teacher.spec.negative_prompt])
    with torch.no_grad():
        v_c = teacher.velocity(x_t, t, text)
        v_u = teacher.velocity(x_t, t, neg.expand(2, -1, -1))
        for w in (1.0, 3.0):
            got = critics.teacher_x0(teacher, x_t, t, text, neg, w)
            want = x_t - t.view(-1, 1, 1, 1, 1) * (v_u + w * (v_c - v_u))
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert (v_c - v_u).abs().max() > 1e-3  # the text matters, so a swapped cond/uncond would show


# -- 7. VSD at its call sites: the student moves towards the teacher's x0, away from the fake score's ---------

def _pattern(teacher):
    g = torch.Generator().manual_seed(5)
    return torch.randn(teacher.latent_shape(1)[1:], generator=g)


def _dmd2(teacher):
    from tmd_bench.distill.dmd2 import DMD2V, DMD2Config, new_student

    cfg = DMD2Config(steps=2, batch_size=4, lr=1e-4, gan_weight=0.0, student_every=1)
    method = DMD2V(teacher, new_student(teacher, cfg), cfg)

    def probe(batch):
        return method.student_sample(batch.clips, batch.text, torch.Generator().manual_seed(77))

    return method, probe, lambda batch: method.step(batch, 0)


def _tmd(teacher):
    from tmd_bench.distill.tmd import TMDStudent
    from tmd_bench.distill.tmd_train import TMDStage2, TMDTrainConfig

    cfg = TMDTrainConfig(batch_size=4, stage2_lr=1e-4, gan_weight=0.0, student_every=1)
    st = TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd)
    with torch.no_grad():
        st.fusion.out.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(6))
    method = TMDStage2(teacher, st, cfg)

    def probe(batch):
        return method.student_sample(batch.clips, batch.text, torch.Generator().manual_seed(77))

    return method, probe, lambda batch: method.step(batch, 0)


def _rcm(teacher):
    from tmd_bench.distill import rcm
    from tmd_bench.distill.dmd2 import FullStudent

    # the DMD term weighted so it dominates the sCM term; one unrolled step
    cfg = rcm.RCMConfig(batch_size=4, lr=1e-4, dmd_weight=1e6, max_unroll=1)
    method = rcm.RCM(teacher, FullStudent(copy.deepcopy(teacher.transformer), "rcm", {"sigma_max": 80.0}), cfg)
    noise = torch.randn(teacher.latent_shape(4), generator=torch.Generator().manual_seed(77))

    def probe(batch):
        return rcm.sample_rcm(method.student, noise, batch.text, 1, cfg.sigma_max, seeds=[0, 1, 2, 3])

    return method, probe, lambda batch: method.step(batch, 0)


@pytest.mark.parametrize("build", [_dmd2, _tmd, _rcm], ids=["dmd2", "tmd-stage2", "rcm"])
def test_vsd_step_moves_the_student_towards_the_teacher_and_away_from_the_fake_score(build, monkeypatch):
    """Teacher x0 fixed at A = +P, fake score's at B = −P: the VSD gradient w·(g_F − g_T) points from A to B,
    so one student step moves its sample along A − B. Swapping the two at a call site reverses it."""
    teacher = tiny_shapes_teacher()
    p = _pattern(teacher)
    monkeypatch.setattr(critics, "teacher_x0", lambda teacher_, x_t, *a, **k: p.expand_as(x_t).clone())
    method, probe, step = build(teacher)
    anchor = next(method.fake.parameters())  # the fake score's own losses still need a graph

    def fake_x0(x_t, t, text):
        return (-p).expand_as(x_t) + 0 * anchor.sum()

    method.fake.forward = fake_x0
    batch = next(WorldBatches(teacher, 4))
    with torch.no_grad():
        before = probe(batch)
    step(batch)
    with torch.no_grad():
        after = probe(batch)
    moved = after - before
    assert moved.abs().max() > 0  # the student was updated
    direction = (2 * p).expand_as(moved)  # A − B
    cos = torch.nn.functional.cosine_similarity(moved.flatten(), direction.flatten(), dim=0)
    assert cos > 0.02, float(cos)  # 5× what a random direction gives in this many dimensions (~0.004)
    dist = lambda x, y: (x - y).pow(2).mean()  # noqa: E731
    assert dist(after, p) - dist(before, p) < dist(after, -p) - dist(before, -p)


# ---------------------------------------------------------------------------------------------
# What `make mutate` found unguarded in the training maths (each test kills a class of survivors)


def test_interpolation_is_the_flow_path_per_sample():
    from tmd_bench.flow import interpolate

    g = torch.Generator().manual_seed(0)
    x, x1 = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    t = torch.tensor([0.0, 0.25, 1.0])
    xt = interpolate(x, x1, t)
    torch.testing.assert_close(xt[0], x[0], rtol=0, atol=0)
    torch.testing.assert_close(xt[2], x1[2], rtol=0, atol=0)
    torch.testing.assert_close(xt[1], 0.75 * x[1] + 0.25 * x1[1], rtol=0, atol=1e-7)


def test_time_grids_are_float64_and_start_where_their_sampler_does():
    from tmd_bench import flow, sampling

    grid = flow.time_grid(4, 3.0)
    assert grid.dtype == torch.float64 and grid[-1] == 0
    u = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(grid, flow.T_MAX * 3 * u / (1 + 2 * u), rtol=0, atol=1e-15)  # float32 would be ~1e-8 off
    euler = sampling.euler_grid(4, 3.0)
    assert euler[0].item() == 1.0 and flow.T_MAX < 1.0  # tmd-bench's Euler starts at pure noise, not at T_MAX
    with pytest.raises(ValueError, match="steps must be ≥ 1, got 0"):
        flow.time_grid(0, 3.0)


def test_unguided_velocity_is_the_networks_own_at_that_time():
    from tmd_bench import sampling

    seen = []

    def net(x, t, text):
        seen.append(t)
        return x * t + text.mean()

    x, t, text = torch.ones(2, 3), torch.tensor(0.3), torch.zeros(2, 4)
    v = sampling.guided(net, text, torch.zeros(1, 4), 1.0)(x, t)
    assert seen == [t] and torch.equal(v, x * t)


def test_vsd_gradient_is_the_normalised_score_difference():
    """d/dx̂ of the VSD loss (mean over elements) is ``w·(g_F − g_T)/n`` with ``w = 1/(mean|x̂ − g_T| + 1e-6)``
    per sample: the DMD2 normaliser, the sign and the ½ all enter the gradient the student follows."""
    from tmd_bench.distill.losses import vsd_loss

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64).float().requires_grad_(True)
    gt, gf = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    gt[1] *= 5  # the two samples get different weights
    loss = vsd_loss(x, gt, gf)
    loss.backward()
    w = 1.0 / ((x.detach() - gt).abs().flatten(1).mean(1) + 1e-6)
    expect = w.view(-1, 1, 1) * (gf - gt) / x.numel()
    torch.testing.assert_close(x.grad, expect, rtol=1e-5, atol=1e-9)
    # its value is ½·mean((w·(g_F − g_T))²)
    torch.testing.assert_close(loss, 0.5 * (w.view(-1, 1, 1) * (gf - gt)).pow(2).mean(), rtol=1e-5, atol=0)


def test_regression_and_dsm_losses_are_their_documented_means():
    from tmd_bench.distill.losses import dsm_loss, regression_loss

    pred = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = regression_loss(pred, target)
    assert loss.item() == pytest.approx(0.5 * (1 + 4 + 0 + 4) / 4)
    loss.backward()
    assert target.grad is None  # the teacher's target is detached
    torch.testing.assert_close(pred.grad, (pred - target).detach() / 4)
    assert dsm_loss(pred, target).item() == pytest.approx((1 + 4 + 0 + 4) / 4)


def test_meanflow_target_uses_one_sided_differences_at_the_interval_ends():
    """``u(z, t) = a·t² + z`` along ``dz/dt = v``: du/dt = 2a·t + v (for the linear path z + (s − t)·v).
    Central differences are exact for a quadratic, and so are the one-sided ones only where they are
    used correctly: at t + δ > 1 the forward point is dropped, at t − δ < r the backward one."""
    from tmd_bench.distill.losses import meanflow_target

    a, delta = 3.0, 0.01
    u_fn = lambda z, t: a * t.view(-1, 1) ** 2 + z  # noqa: E731
    z = torch.zeros(3, 1)
    v = torch.full((3, 1), 0.5)
    t = torch.tensor([0.5, 0.995, 0.205])  # interior; forward step leaves [r, 1]; backward step passes r
    r = torch.tensor([0.1, 0.1, 0.2])
    target = meanflow_target(u_fn, z, t, r, v, delta)
    hi = torch.where(t + delta <= 1, t + delta, t)
    lo = torch.where(t - delta >= r, t - delta, t)
    du = a * (hi**2 - lo**2) / (hi - lo) + v.flatten()  # the exact slope of the chord actually taken
    expect = v.flatten() - (t - r) * du
    torch.testing.assert_close(target.flatten(), expect, rtol=1e-5, atol=1e-6)
    # and those chords: central in the interior, one-sided at the ends (2a·t + v ± a·δ)
    exact = v.flatten() - (t - r) * (2 * a * t + v.flatten())
    assert abs(target[0, 0] - exact[0]) < 1e-4
    assert target[1, 0] == pytest.approx(float(exact[1] + (t[1] - r[1]) * a * delta), abs=1e-4)  # backward only
    assert target[2, 0] == pytest.approx(float(exact[2] - (t[2] - r[2]) * a * delta), abs=1e-4)  # forward only


def test_meanflow_target_keeps_central_differences_where_t_plus_or_minus_delta_lands_on_an_end():
    """The interval [r, 1] is closed: where t + δ = 1 or t − δ = r exactly, both points are inside and the
    difference stays central, exact for a quadratic (u = t²: du/dt = 2t; a one-sided chord reads 2t ± δ).
    Every value here is exact in float32 (δ = 1/4)."""
    from tmd_bench.distill.losses import meanflow_target

    delta = 0.25
    u_fn = lambda z, t: t.view(-1, 1) ** 2 + 0 * z  # noqa: E731
    z, v = torch.zeros(2, 1), torch.zeros(2, 1)
    t = torch.tensor([0.75, 0.5])  # t + δ = 1; t − δ = r
    r = torch.tensor([0.0, 0.25])
    target = meanflow_target(u_fn, z, t, r, v, delta)
    torch.testing.assert_close(target.flatten(), -(t - r) * 2 * t, rtol=0, atol=0)  # −0.75·1.5, −0.25·1.0


def test_meanflow_target_is_float32_whatever_the_dtype_of_its_times():
    """Times from a float64 grid (tmd_bench.flow's grids are float64) or bf16 ones: the target is formed and
    returned in float32, the dtype the loss compares it in."""
    from tmd_bench.distill.losses import meanflow_target

    u_fn = lambda z, t: z * t.view(-1, 1).float()  # noqa: E731
    z, v = torch.ones(2, 3, dtype=torch.bfloat16), torch.ones(2, 3, dtype=torch.bfloat16)
    for dtype in (torch.float64, torch.bfloat16, torch.float32):
        t, r = torch.tensor([0.5, 0.9], dtype=dtype), torch.tensor([0.1, 0.2], dtype=dtype)
        assert meanflow_target(u_fn, z, t, r, v, 0.01).dtype == torch.float32, dtype


def test_vsd_gradient_where_the_student_matches_the_teacher_keeps_its_sign():
    """x̂ = g_T exactly: mean|x̂ − g_T| = 0 and w = 1/(0 + 1e-6) = 1e6, finite and positive, so the student
    still moves along g_F − g_T (the normaliser's 1e-6 is an offset up, never a divide by zero or a flip)."""
    from tmd_bench.distill.losses import vsd_loss

    g = torch.Generator().manual_seed(2)
    gt, gf = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    x = gt.clone().requires_grad_(True)
    vsd_loss(x, gt, gf).backward()
    torch.testing.assert_close(x.grad, 1e6 * (gf - gt) / x.numel(), rtol=1e-5, atol=0)
