"""DMD2-v and KD baselines on tiny networks."""

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill import dmd2, kd
from tmd_bench.distill.data import WorldBatches
from tmd_bench.distill.dmd2 import DMD2V, DMD2Config, full_student_method, new_student, sample_x0_chain

from tmd_bench import harness

CFG = DMD2Config(steps=2, batch_size=4, lr=1e-3, teacher_guidance=2.0, iterations=5, kd_warmup_iterations=3)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_x0_chain_is_exact_when_the_student_knows_the_answer(steps):
    """If g_θ returns the data point a, x_{t'} = (1 − t'/t)a + (t'/t)x_t ends at a."""
    teacher = tiny_shapes_teacher()
    student = new_student(teacher, CFG)
    a = torch.full(teacher.latent_shape(1), 0.25)
    student.x0 = lambda x, t, text: a.expand_as(x)
    out = sample_x0_chain(student, torch.randn(teacher.latent_shape(1)), None, dmd2.student_grid(steps))
    torch.testing.assert_close(out, a.expand_as(out))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_counted_nfe_is_the_step_count(steps):
    teacher = tiny_shapes_teacher()
    m = full_student_method(new_student(teacher, CFG), "dmd2")
    gen = harness.generate(m, teacher, ["a small red circle moving left on a black background"] * 2, [0, 1], steps)
    assert gen.nfe_counted == steps == m.declared_nfe(steps) and gen.effective_nfe_counted == steps


def test_student_grids_follow_the_paper():
    assert dmd2.student_grid(2)[1] == pytest.approx(0.999 * 10 * 0.5 / (9 * 0.5 + 1))  # γ = 10
    assert dmd2.student_grid(4)[1] == pytest.approx(0.999 * 5 * 0.75 / (4 * 0.75 + 1))  # γ = 5


def test_vsd_gradient_is_the_weighted_score_difference():
    """∇_x̂ ½‖x̂ − sg(x̂ − w(g_F − g_T))‖² (mean) = w·(g_F − g_T) / numel, w = 1/mean|x̂ − g_T|."""
    from tmd_bench.distill.losses import vsd_loss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, 4, generator=g, requires_grad=True)
    g_t, g_f = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    vsd_loss(x, g_t, g_f).backward()
    w = 1 / ((x.detach() - g_t).abs().flatten(1).mean(1) + 1e-6)
    torch.testing.assert_close(x.grad, w.view(-1, 1, 1, 1, 1) * (g_f - g_t) / x.numel())


def test_dmd2_student_step_reaches_every_block_and_spares_the_teacher():
    teacher = tiny_shapes_teacher()
    method = DMD2V(teacher, new_student(teacher, CFG), CFG)
    losses = method.step(next(WorldBatches(teacher, 4)), CFG.student_every - 1)
    assert set(losses) == {"vsd", "gan_g"} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for block in method.student.transformer.blocks:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.attn1.parameters())
    assert all(p.grad is None for p in teacher.transformer.parameters())


def test_dmd2_fake_score_learns_the_students_samples():
    from tmd_bench.distill.losses import dsm_loss

    from tmd_bench import flow

    teacher = tiny_shapes_teacher()
    cfg = DMD2Config(**{**CFG.__dict__, "student_every": 10**6, "lr": 3e-3})
    method = DMD2V(teacher, new_student(teacher, cfg), cfg)
    held = next(WorldBatches(teacher, 16, seed=99))

    def dsm() -> float:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            x_hat = method.student_sample(held.clips, held.text, g)
            t = flow.shift(torch.linspace(0.001, 0.999, 16), 5.0)
            x_t = flow.interpolate(x_hat, torch.randn(x_hat.shape, generator=g), t)
            return dsm_loss(method.fake(x_t, t, held.text), x_hat).item()

    before, data = dsm(), WorldBatches(teacher, 8)
    for i in range(40):
        method.step(next(data), i)
    assert dsm() < 0.97 * before


def test_kd_pairs_are_cached_and_regression_falls(tmp_path):
    teacher = tiny_shapes_teacher()
    cfg = kd.KDConfig(pairs=24, teacher_steps=2, batch_size=8, lr=3e-3, iterations=30)
    folder = kd.make_pairs(teacher, cfg, tmp_path / "pairs", shard_size=16)
    stamp = [p.stat().st_mtime_ns for p in sorted(folder.glob("*.safetensors"))]
    assert len(stamp) == 2
    kd.make_pairs(teacher, cfg, tmp_path / "pairs", shard_size=16)  # cached: not regenerated
    assert stamp == [p.stat().st_mtime_ns for p in sorted(folder.glob("*.safetensors"))]
    data = kd.PairBatches(teacher, folder, 8)
    first = next(data)
    # the cached target is the teacher's ODE endpoint from the cached noise
    gen = harness.generate(harness.teacher_method(teacher, "euler"), teacher, first.prompts[:1],
                           [cfg.seed * 1_000_003 + 0], cfg.teacher_steps)
    torch.testing.assert_close(first.clips[:1], gen.videos, rtol=0, atol=1e-5)
    method = kd.KD(teacher, new_student(teacher, DMD2Config(steps=1), "kd"), cfg)
    held = kd.PairBatches(teacher, folder, 24)
    held_batch = next(held)

    def held_loss():
        with torch.no_grad():
            t = torch.full((24,), 0.999)
            return (method.student.x0(held_batch.noise, t, held_batch.text) - held_batch.clips).pow(2).mean().item()

    before = held_loss()
    for i in range(cfg.iterations):
        method.step(next(data), i)
    assert held_loss() < 0.7 * before


def test_one_step_dmd2_runs_kd_warmup_then_dmd(tmp_path):
    teacher = tiny_shapes_teacher()
    cfg = DMD2Config(**{**CFG.__dict__, "steps": 1, "kd_pairs": 8, "kd_teacher_steps": 1})
    final = dmd2.run_dmd2(teacher, cfg, tmp_path, checkpoint_every=5)
    assert (tmp_path / "kd-warmup" / "student" / "student_config.json").is_file()
    student = dmd2.load_full_student(final, teacher, "dmd2")
    assert student.config["steps"] == 1
    with pytest.raises(ValueError, match="holds a 'dmd2' student, not a 'kd' one"):
        dmd2.load_full_student(final, teacher, "kd")


def test_one_step_dmd2_without_its_kd_warmup_starts_from_the_teacher(tmp_path):
    """Fair M = 1 (issue 14): kd_warmup_iterations=0 skips the warm-up, as TMD M1 has none; the student's
    first DMD2-v iteration then starts from the teacher's weights."""
    teacher = tiny_shapes_teacher()
    cfg = DMD2Config(**{**CFG.__dict__, "steps": 1, "kd_warmup_iterations": 0, "iterations": 1})
    final = dmd2.run_dmd2(teacher, cfg, tmp_path, checkpoint_every=5)
    assert not (tmp_path / "kd-warmup").exists()
    student = dmd2.load_full_student(final, teacher, "dmd2")
    assert student.config["steps"] == 1
    # one iteration is a critic turn (the student moves every 5th): the student is still the teacher
    for (name, a), b in zip(student.transformer.state_dict().items(), teacher.transformer.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
