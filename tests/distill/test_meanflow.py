"""MeanFlow over the whole trajectory, and the shared MeanFlow target."""

import copy

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill import losses
from tmd_bench.distill.data import WorldBatches
from tmd_bench.distill.meanflow import MeanFlow, MeanFlowConfig, MeanFlowStudent, load_meanflow, meanflow_method

from tmd_bench import harness

CFG = MeanFlowConfig(batch_size=8, lr=1e-3, omega=2.0, mf_prob=0.5)


@pytest.mark.parametrize("t,r", [(0.5, 0.2), (0.999, 0.3), (0.201, 0.2), (0.4, 0.4)])
def test_meanflow_target_is_exact_for_a_linear_field(t, r):
    """u(z, t) = a·z + b·t has total derivative a·v + b along dz/dt = v: û = v − (t − r)(a·v + b)."""
    a, b = 0.7, -1.3
    z, v = torch.randn(2, 3), torch.randn(2, 3)
    tt, rr = torch.full((2,), t), torch.full((2,), r)
    target = losses.meanflow_target(lambda z_, t_: a * z_ + b * t_.view(-1, 1), z, tt, rr, v, 5e-3)
    torch.testing.assert_close(target, v - (t - r) * (a * v + b), rtol=1e-4, atol=1e-4)


def student_of(teacher):
    return MeanFlowStudent(copy.deepcopy(teacher.transformer), {"steps": 2, "shift": 10.0})


def test_at_initialisation_u_at_r_equals_t_is_the_teachers_velocity():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    z = torch.randn(teacher.latent_shape(2))
    text = teacher.encode_text(["a", "b"])
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        torch.testing.assert_close(st(z, t, t, text), teacher.velocity(z, t, text), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(st(z, t * 0.5, t, text), teacher.velocity(z, t, text), rtol=1e-5, atol=1e-5)


def test_step_is_finite_reaches_every_part_and_mse_falls():
    teacher = tiny_shapes_teacher()
    method = MeanFlow(teacher, student_of(teacher), CFG)
    data = WorldBatches(teacher, 8)
    first = method.step(next(data), 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in first.values())
    st = method.student
    assert st.delta_time.embed.linear_2.weight.grad.abs().sum() > 0
    assert st.transformer.blocks[0].attn1.to_q.weight.grad.abs().sum() > 0



def test_a_short_run_improves_the_flow_matching_error_on_held_out_clips():
    """At r = t with ω = 1 the target is the fixed conditional velocity x1 − x; its error must fall."""
    from tmd_bench import flow

    teacher = tiny_shapes_teacher()
    cfg = MeanFlowConfig(batch_size=8, lr=2e-3, omega=1.0, mf_prob=0.25)
    method = MeanFlow(teacher, student_of(teacher), cfg)
    held = next(WorldBatches(teacher, 16, seed=42))
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(held.clips.shape, generator=g)
    t = torch.linspace(0.05, 0.95, 16)

    def error() -> float:
        with torch.no_grad():
            z = flow.interpolate(held.clips, x1, t)
            return (method.student(z, t, t, held.text) - (x1 - held.clips)).pow(2).mean().item()

    before, data = error(), WorldBatches(teacher, 8)
    for i in range(40):
        method.step(next(data), i)
    assert error() < 0.8 * before


def test_sampler_counts_and_round_trip(tmp_path):
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    with torch.no_grad():
        st.delta_time.embed.linear_2.weight.normal_()
    st.save(tmp_path / "mf", teacher.name, "x")
    loaded = load_meanflow(tmp_path / "mf", teacher)
    m = meanflow_method(loaded)
    prompts = ["a small red circle moving left on a black background"] * 2
    gen = harness.generate(m, teacher, prompts, [0, 1], 2)
    assert gen.nfe_counted == 2 and gen.effective_nfe_counted == 2
    ref = harness.generate(meanflow_method(st.eval()), teacher, prompts, [0, 1], 2)
    torch.testing.assert_close(gen.videos, ref.videos)
