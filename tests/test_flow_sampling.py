import pytest
import torch

from tmd_bench import flow, sampling


def test_shift_is_a_monotone_bijection_of_the_unit_interval():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    for gamma in (1.0, 3.0, 10.0):
        t = flow.shift(u, gamma)
        assert t[0] == 0 and t[-1] == 1
        assert (t[1:] > t[:-1]).all()
        assert (t >= u - 1e-12).all()  # γ ≥ 1 moves mass towards noise


def test_time_grid_ends():
    g = flow.time_grid(4, 10.0)
    assert g.shape == (5,) and g[0] == pytest.approx(flow.T_MAX) and g[-1] == 0
    with pytest.raises(ValueError):
        flow.time_grid(0, 3.0)


def point_mass_velocity(a: torch.Tensor):
    """Exact flow velocity when the data is a single point a: v = (x_t − a)/t."""
    return lambda x, t: (x - a) / t


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_samplers_are_exact_on_straight_flows(steps):
    a = torch.tensor([[0.3, -1.2, 2.0]])
    x1 = torch.randn(1, 3, generator=torch.Generator().manual_seed(0))
    v = point_mass_velocity(a)
    out = sampling.sample_euler(v, x1.clone(), sampling.euler_grid(steps, 3.0))
    torch.testing.assert_close(out, a, atol=1e-5, rtol=0)
    out = sampling.sample_flowmatch_euler(v, x1.clone(), steps, 3.0)  # diffusers' float timesteps: exact σ
    torch.testing.assert_close(out, a, atol=1e-4, rtol=0)
    # UniPC as WanPipeline runs it: the network is told the int64 timestep ⌊1000·σ⌋ while the state is at σ,
    # so a velocity that reads t exactly is off by up to 1e-3 in t (the point mass's 1/t magnifies it)
    out = sampling.sample_unipc(v, x1.clone(), steps, 3.0)
    torch.testing.assert_close(out, a, atol=1e-2, rtol=0)


def test_guided_combines_one_batched_pass():
    calls = []

    def net(x, t, text):
        calls.append(x.shape[0])
        return x * 0 + text[:, :1, :1].view(-1, 1)

    text, neg = torch.full((2, 1, 1), 3.0), torch.full((1, 1, 1), 1.0)
    v = sampling.guided(net, text, neg, 4.0)(torch.zeros(2, 1), torch.tensor(0.5))
    assert calls == [4]  # cond and uncond in one pass of 2B rows
    torch.testing.assert_close(v, torch.full((2, 1), 1.0 + 4.0 * (3.0 - 1.0)))
    calls.clear()
    sampling.guided(net, text, neg, 1.0)(torch.zeros(2, 1), torch.tensor(0.5))
    assert calls == [2]


def test_unguided_velocity_is_the_conditional_one_at_its_own_time():
    """``scale == 1``: the network itself, told the time and the prompt it is given (no uncond half)."""
    def net(x, t, text):
        return x * t + text[:, :1, :1].view(-1, 1)

    x, t = torch.tensor([[2.0], [-1.0]]), torch.tensor(0.25)
    text, neg = torch.tensor([[[3.0]], [[5.0]]]), torch.zeros(1, 1, 1)
    torch.testing.assert_close(sampling.guided(net, text, neg, 1.0)(x, t), net(x, t, text), rtol=0, atol=0)


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 3.0), (50, 5.0)])
def test_teacher_euler_grid_runs_from_pure_noise_at_1_to_0(steps, shift):
    """``teacher-euler`` starts where Wan samples start, t = 1 exactly (the training grids stop at
    T_MAX = 0.999), and is the shifted uniform grid ``shift(linspace(1, 0, k + 1))``."""
    ts = sampling.euler_grid(steps, shift)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0 and len(ts) == steps + 1
    torch.testing.assert_close(ts, shift * u / (1 + (shift - 1) * u), rtol=0, atol=1e-12)


def gaussian_flow(mu: torch.Tensor, s: torch.Tensor):
    """Data x ~ N(μ, diag s²): x_t = (1 − t)·x + t·x1 is N((1 − t)μ, σ_t²) with σ_t² = (1 − t)²s² + t², and
    the exact velocity is v = E[x1 − x | x_t] = −μ + (t − (1 − t)s²)/σ_t² · (x_t − (1 − t)μ). Its ODE paths are
    x_t = (1 − t)μ + σ_t·x1, so the exact noise→data map is x0 = μ + s·x1."""
    def velocity(x, t):
        t = t.to(torch.float64)
        var = (1 - t) ** 2 * s**2 + t**2
        return (-mu + (t - (1 - t) * s**2) / var * (x.to(torch.float64) - (1 - t) * mu)).to(x.dtype)
    return velocity


def test_unipc_converges_faster_than_euler_on_an_exact_gaussian_flow():
    """UniPC (2nd order + corrector) must beat Euler clearly at 8–16 steps and shrink its error from 4 to 8 steps
    much faster. Feeding the network 1 − σ or the neighbouring step's σ (or timestep/1000 one step off), or
    dropping the final step, breaks both (checked: UniPC/Euler at 8 steps ≥ 1.0, rate ratio ≤ 1.6; correct: 0.11
    and 4.4). The grid check pins the exact σ (an unshifted, rounded timestep/1000 would pass the rates)."""
    d = 48
    mu = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(100))
    s = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64).repeat(d // 3)  # curved paths; not symmetric in t ↔ 1 − t
    x1 = torch.randn(32, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = mu + s * x1
    v = gaussian_flow(mu, s)
    fine = sampling.sample_euler(v, x1.clone(), flow.time_grid(2000, 1.0, t_max=1.0))
    torch.testing.assert_close(fine, exact, atol=1e-2, rtol=0)  # the closed form is the ODE's solution

    seen = []

    def recording(x, t):
        seen.append(float(t))
        return v(x, t)

    def rms(out):
        return (out.double() - exact).pow(2).mean().sqrt().item()

    euler, unipc = {}, {}
    for n in (4, 8, 16):
        euler[n] = rms(sampling.sample_euler(v, x1.float(), sampling.euler_grid(n, 3.0)))
        seen.clear()
        unipc[n] = rms(sampling.sample_unipc(recording, x1.float(), n, 3.0))
        # one call per step, at diffusers' shifted flow grid (σ from 1 − 1e-6 down to shift(1/n-ish)), told
        # the int64 timestep ⌊1000·σ⌋ as WanPipeline tells the network (t = timestep / 1000)
        grid = flow.shift(torch.linspace(1.0, 1e-3, n + 1, dtype=torch.float64)[:-1], 3.0)
        sigma = grid.clamp(max=1 - 1e-6)  # diffusers starts at 1 − 1e-6: timestep 999
        assert seen == pytest.approx((torch.floor(1000 * sigma + 1e-6) / 1000).tolist(), abs=1e-9)
    assert unipc[8] < 0.3 * euler[8] and unipc[16] < 0.3 * euler[16], (euler, unipc)
    assert unipc[4] / unipc[8] > 2.5 * (euler[4] / euler[8]), (euler, unipc)


def test_flowmatch_euler_takes_the_checkpoints_own_scheduler_config():
    """A checkpoint whose scheduler/ is a FlowMatchEuler config is sampled on *its* grid (here a
    shift_terminal the default lacks), with ``shift`` set as the harness asks; another class's config
    (UniPC) falls back to diffusers' FlowMatchEuler defaults."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from tmd_bench.sampling import flowmatch_euler_scheduler

    config = {**FlowMatchEulerDiscreteScheduler(shift=1.0, shift_terminal=0.2).config,
              "_class_name": "FlowMatchEulerDiscreteScheduler"}
    ours = flowmatch_euler_scheduler(4, 3.0, config)
    ref = FlowMatchEulerDiscreteScheduler.from_config(config, shift=3.0)
    ref.set_timesteps(4)
    assert torch.equal(ours.sigmas, ref.sigmas) and torch.equal(ours.timesteps, ref.timesteps)
    assert ours.config.shift == 3.0 and ours.config.shift_terminal == 0.2
    default = FlowMatchEulerDiscreteScheduler(shift=3.0)
    default.set_timesteps(4)
    assert not torch.equal(ours.sigmas, default.sigmas)  # the checkpoint's config was used
    unipc = flowmatch_euler_scheduler(4, 3.0, {"_class_name": "UniPCMultistepScheduler", "shift_terminal": 0.2})
    assert torch.equal(unipc.sigmas, default.sigmas)


@pytest.mark.parametrize("solver", ["unipc", "fmeuler"])
def test_samplers_follow_the_checkpoints_scheduler_config_through_sample(solver):
    """sample_unipc / sample_flowmatch_euler with a checkpoint's config (non-default settings) equal the
    diffusers loop over ``from_config(config, shift)``, and differ from the defaults: the config is used."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    from tmd_bench import sampling

    if solver == "unipc":
        cls = UniPCMultistepScheduler
        config = {**UniPCMultistepScheduler(**sampling.WAN_UNIPC_CONFIG, solver_order=1, flow_shift=1.0).config,
                  "_class_name": "UniPCMultistepScheduler"}
        run = lambda v, x: sampling.sample_unipc(v, x, 4, 3.0, config)  # noqa: E731
        default = lambda v, x: sampling.sample_unipc(v, x, 4, 3.0)  # noqa: E731
        ref_sched = UniPCMultistepScheduler.from_config(config, flow_shift=3.0)
    else:
        cls = FlowMatchEulerDiscreteScheduler
        config = {**FlowMatchEulerDiscreteScheduler(shift=1.0, shift_terminal=0.2).config,
                  "_class_name": "FlowMatchEulerDiscreteScheduler"}
        run = lambda v, x: sampling.sample_flowmatch_euler(v, x, 4, 3.0, config)  # noqa: E731
        default = lambda v, x: sampling.sample_flowmatch_euler(v, x, 4, 3.0)  # noqa: E731
        ref_sched = cls.from_config(config, shift=3.0)
    velocity = lambda x, t: -x * (1 + t.float())  # noqa: E731 - any smooth field
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    ref_sched.set_timesteps(4)
    ref = x.clone()
    for ts in ref_sched.timesteps:
        ref = ref_sched.step(velocity(ref, ts.to(torch.float64) / 1000), ts, ref, return_dict=False)[0]
    out = run(velocity, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert (out - default(velocity, x)).abs().max() > 1e-4


def test_guidance_scale_may_depend_on_time_and_on_the_row():
    """A two-expert teacher's CFG scale is a function of t (Wan2.2 A14B: 4 for the high-noise expert, 3
    for the low-noise one), a float or one value per row: v = v(∅) + w(t)·(v(c) − v(∅)), in one batched
    2B pass whatever w is (so a guided step costs 2 NFE)."""
    from tmd_bench import sampling

    calls = []

    def net(x, t, text):  # conditional and unconditional rows differ through the text
        calls.append((x.shape[0], t))
        return x * (1 + t) + text.mean(dim=(1, 2)).view(-1, *([1] * (x.ndim - 1)))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 2, 2, generator=g)
    text, negative = torch.randn(3, 4, 5, generator=g), torch.randn(1, 4, 5, generator=g)
    t = torch.tensor(0.6)
    v_u, v_c = net(x, t, negative.expand(3, -1, -1)), net(x, t, text)
    calls.clear()
    by_time = sampling.guided(net, text, negative, lambda tt: 4.0 if tt >= 0.5 else 3.0)
    torch.testing.assert_close(by_time(x, t), v_u + 4.0 * (v_c - v_u))
    torch.testing.assert_close(by_time(x, torch.tensor(0.2)), net(x, torch.tensor(0.2), negative.expand(3, -1, -1))
                               + 3.0 * (net(x, torch.tensor(0.2), text) - net(x, torch.tensor(0.2), negative.expand(3, -1, -1))))
    assert calls[0][0] == 6 and calls[1][0] == 6  # one batched pass of 2B rows per call, at the call's t
    assert calls[0][1] is t
    rows = torch.tensor([4.0, 3.0, 1.0])
    per_row = sampling.guided(net, text, negative, lambda tt: rows)(x, t)
    torch.testing.assert_close(per_row, v_u + rows.view(-1, 1, 1, 1, 1) * (v_c - v_u))
    torch.testing.assert_close(per_row[2], v_c[2])  # w = 1 on a row is its conditional velocity
