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
    out = sampling.sample_unipc(v, x1.clone(), steps, 3.0)
    torch.testing.assert_close(out, a, atol=1e-3, rtol=0)


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
