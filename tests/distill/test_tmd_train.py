"""TMD stage 1 and stage 2 on tiny networks: finite losses, gradients where they belong, learning, resume."""

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill.data import WorldBatches
from tmd_bench.distill.tmd import TMDStudent
from tmd_bench.distill.tmd_train import (
    TMDStage1,
    TMDStage2,
    TMDTrainConfig,
    preset,
    run_tmd,
    sample_s_r,
    tm_meanflow_target,
)
from tmd_bench.distill.trainer import train

from tmd_bench import checkpoint as ckpt
from tmd_bench.teacher_train import load_log

CFG = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=4, stage1_lr=1e-3, stage2_lr=1e-3,
                     stage1_iterations=4, stage2_iterations=5, teacher_guidance=2.0)


def student_of(teacher, cfg=CFG):
    import copy

    return TMDStudent(copy.deepcopy(teacher.transformer), cfg.tmd)


def grads(student):
    g = lambda ps: max((p.grad.abs().max().item() for p in ps if p.grad is not None), default=0.0)  # noqa: E731
    return {"backbone": g(student.backbone_blocks.parameters()), "head": g(student.head_blocks.parameters()),
            "fusion": g(student.fusion.parameters()), "delta_time": g(student.delta_time.parameters()),
            "embedding": g(student.transformer.patch_embedding.parameters())}


def test_s_r_sampling_follows_the_spec():
    s, r = sample_s_r(CFG, 4000, torch.Generator().manual_seed(0), "cpu")
    assert (r <= s).all() and (s > 0).all() and (s < 1).all()
    tm = (r == s).float().mean()
    assert 0.72 < tm < 0.78  # r = s with probability 0.75
    grid = CFG.tmd.inner_grid().float()
    flow_map = r[r != s]
    assert all(torch.isclose(grid, v).any() for v in flow_map)  # otherwise r is an inner-grid point


def test_meanflow_target_is_v_when_r_equals_s():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    x = torch.randn(teacher.latent_shape(2))
    text = teacher.encode_text(["a", "b"])
    feats = st.backbone(x, torch.tensor([0.5, 0.9]), text)
    s = torch.tensor([0.3, 0.6])
    v = torch.randn_like(x)
    target = tm_meanflow_target(st, feats, torch.randn_like(x), torch.randn_like(x), s, s, v, 5e-3)
    torch.testing.assert_close(target, v)


def test_stage1_loss_is_finite_and_reaches_backbone_fusion_and_head():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    with torch.no_grad():  # make the fusion path live so its gradients are not trivially zero
        st.fusion.out.weight.normal_(0, 0.02)
    method = TMDStage1(teacher, st, CFG)
    loss = method.step(next(WorldBatches(teacher, 4)), 0)["tm_mf"]
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    g = grads(st)
    assert all(v > 0 for v in g.values()), g


def test_stage1_loss_falls():
    teacher = tiny_shapes_teacher()
    method = TMDStage1(teacher, student_of(teacher), CFG)
    data = WorldBatches(teacher, 8)
    steps = [method.step(next(data), i) for i in range(40)]
    mse = [s["mse"] for s in steps]
    adaptive = [s["tm_mf"] for s in steps]
    assert sum(mse[-8:]) / 8 < 0.8 * sum(mse[:8]) / 8, mse
    assert sum(adaptive[-8:]) < sum(adaptive[:8])


def test_stage2_updates_each_network_on_its_turn():
    teacher = tiny_shapes_teacher()
    st = student_of(teacher)
    with torch.no_grad():
        st.fusion.out.weight.normal_(0, 0.02)
    method = TMDStage2(teacher, st, CFG)
    data = WorldBatches(teacher, 4)
    critic = method.step(next(data), 0)
    assert set(critic) == {"dsm", "disc"} and all(torch.isfinite(torch.tensor(v)) for v in critic.values())
    assert st.transformer.blocks[0].ffn.net[0].proj.weight.grad is None  # the student waits its turn
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.fake.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.disc.parameters())
    student = method.step(next(data), 4)  # every 5th iteration
    assert set(student) == {"vsd", "gan_g"} and all(torch.isfinite(torch.tensor(v)) for v in student.values())
    g = grads(st)
    assert all(v > 0 for v in g.values()), g  # through every inner step, the fusion and the backbone
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher.transformer.parameters())


def test_stage2_fake_score_learns_the_student_distribution():
    teacher = tiny_shapes_teacher()
    method = TMDStage2(teacher, student_of(teacher), TMDTrainConfig(**{**CFG.__dict__, "student_every": 10**6,
                                                                                       "stage2_lr": 3e-3}))
    data = WorldBatches(teacher, 8)
    held_out = next(WorldBatches(teacher, 16, seed=99))

    def dsm_on_held_out() -> float:
        from tmd_bench.distill.losses import dsm_loss

        from tmd_bench import flow

        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            x_hat = method.student_sample(held_out.clips, held_out.text, g)
            t = flow.shift(torch.linspace(0.001, 0.999, 16), 5.0)  # the training distribution, fixed draw
            x_t = flow.interpolate(x_hat, torch.randn(x_hat.shape, generator=g), t)
            return dsm_loss(method.fake(x_t, t, held_out.text), x_hat).item()

    before = dsm_on_held_out()
    for i in range(40):
        method.step(next(data), i)
    # most of the x0 error at high noise is irreducible; the reducible part must shrink (deterministic)
    assert dsm_on_held_out() < 0.97 * before


def test_resume_matches_an_uninterrupted_run(tmp_path):
    teacher = tiny_shapes_teacher()
    cfg = TMDTrainConfig(**{**CFG.__dict__, "stage2_iterations": 6})

    def run(out, iterations, resume=False):
        torch.manual_seed(0)  # the discriminator's initialisation
        m = TMDStage2(teacher, student_of(teacher, cfg), cfg)
        train(m, WorldBatches(teacher, 4), out, iterations, resume=resume, checkpoint_every=3, log_every=1)
        return m

    full = run(tmp_path / "full", 6)
    run(tmp_path / "cut", 3)
    resumed = run(tmp_path / "cut", 6, resume=True)
    for name, module in full.modules().items():
        for (k, a), b in zip(module.state_dict().items(), resumed.modules()[name].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name}.{k}")
    assert [int(r["iteration"]) for r in load_log(tmp_path / "cut")] == [1, 2, 3, 4, 5, 6]


def test_resume_from_a_different_config_is_refused(tmp_path):
    teacher = tiny_shapes_teacher()
    run_tmd(teacher, CFG, tmp_path, stages=(1,), checkpoint_every=2)
    other = TMDTrainConfig(**{**CFG.__dict__, "head_blocks": 1})
    with pytest.raises(ckpt.IncompatibleCheckpoint, match="head_blocks"):
        run_tmd(teacher, other, tmp_path, stages=(1,), resume=True)


def test_run_tmd_both_stages_writes_an_evaluable_student(tmp_path):
    from tmd_bench.distill.tmd import load_student, tmd_method

    from tmd_bench import harness

    teacher = tiny_shapes_teacher()
    final = run_tmd(teacher, CFG, tmp_path, checkpoint_every=5)
    assert final == tmp_path / "stage2" / "student"
    student = load_student(final, teacher)
    gen = harness.generate(tmd_method(student), teacher, ["a small red circle moving left on a black background"], [0], 2)
    assert torch.isfinite(gen.videos).all() and gen.nfe_counted == 2


def test_presets():
    assert preset("wan2.1-1.3b").tmd.label == "M2-N2H5" and preset("wan2.1-14b").tmd.label == "M2-N4H5"
    assert preset("wan2.1-1.3b", outer_steps=1).stage2_iterations == 12000
    assert preset("wan2.1-14b").norm_c == 1e-5 and preset("wan2.1-1.3b").norm_c == 1.0


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_the_target_of_text_dropped_samples_follows_the_rule(monkeypatch, dropout):
    """``dropped_target="unguided"`` (FastGen's MeanFlow) trains a text-dropped sample on its own velocity
    y1 − y; ``"guided"`` (the default, which the ablation keeps) on the CFG target. Conditioned samples
    get the CFG target under either rule."""
    from dataclasses import replace

    from tmd_bench.distill import tmd_train

    seen = {}

    def capture(st, feats, y_s, y1, s, r, v, delta):
        seen.update(y_s=y_s, y1=y1, s=s, v=v)
        return v

    monkeypatch.setattr(tmd_train, "tm_meanflow_target", capture)
    teacher = tiny_shapes_teacher()
    batch = next(WorldBatches(teacher, 4))
    v = {}
    for rule in ("unguided", "guided"):
        cfg = replace(CFG, text_dropout=dropout, dropped_target=rule)
        TMDStage1(teacher, student_of(teacher, cfg), cfg).step(batch, 0)
        v[rule] = seen["v"]
    s = seen["s"].view(-1, 1, 1, 1, 1)
    y = (seen["y_s"] - s * seen["y1"]) / (1 - s)  # y_s = (1 − s)·y + s·y1
    plain = seen["y1"] - y
    if dropout == 1.0:
        torch.testing.assert_close(v["unguided"], plain, atol=1e-4, rtol=1e-4)
        assert (v["guided"] - plain).abs().max() > 1e-2  # the earlier rule: the CFG mix, not the plain velocity
    else:
        torch.testing.assert_close(v["unguided"], v["guided"])  # nothing dropped: the same CFG target
        assert (v["unguided"] - plain).abs().max() > 1e-2


def test_dropped_target_must_be_known_and_defaults_to_guided():
    assert preset("shapes").dropped_target == "guided"
    with pytest.raises(ValueError, match="--dropped-target must be one of unguided, guided"):
        preset("shapes", dropped_target="cfg")


def test_plain_tm_draws_r_equal_s_always_and_the_probability_is_checked():
    """--tm-prob 1 is the paper's plain-TM ablation: every (s, r) pair has r = s, so the TM-MF target is the
    plain CFG velocity (test_meanflow_target_is_v_when_r_equals_s); 0 draws a flow-map pair every time."""
    from dataclasses import replace

    s, r = sample_s_r(replace(CFG, tm_prob=1.0), 500, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(s, r)
    s, r = sample_s_r(replace(CFG, tm_prob=0.0), 500, torch.Generator().manual_seed(0), "cpu")
    assert (r < s).all()
    assert preset("shapes", tm_prob=1.0).tm_prob == 1.0 and preset("shapes").tm_prob == 0.75
    with pytest.raises(ValueError, match="--tm-prob is a probability"):
        preset("shapes", tm_prob=1.5)


@pytest.mark.parametrize("rollout", [True, False])
def test_stage2_sample_rolls_out_n_inner_steps_or_takes_the_heads_one_jump(rollout, monkeypatch):
    """The student's stage-2 sample x̂ = x_t − t·ŷ: with rollout, ŷ is the N-step rollout of the head
    (gradients through each step); without (the paper's ablation), one head query from the grid's first
    point to 0, (s, r) = (s_N, 0). Both replayed here from the same generator."""
    from dataclasses import replace

    from tmd_bench import flow
    from tmd_bench.distill import tmd
    from tmd_bench.distill.tmd_train import sample_outer_times

    teacher = tiny_shapes_teacher()
    cfg = replace(CFG, inner_steps=3, stage2_rollout=rollout)
    st = student_of(teacher, cfg)
    with torch.no_grad():
        st.fusion.out.weight.normal_(0, 0.05)
    method = TMDStage2(teacher, st, cfg)
    x = torch.randn(teacher.latent_shape(2), generator=torch.Generator().manual_seed(1))
    text = teacher.encode_text(["a small red circle moving left on a black background"] * 2)
    queries = []
    head = st.head
    monkeypatch.setattr(st, "head", lambda y, s, r, feats, time=None: queries.append((float(s.reshape(-1)[0]), float(r.reshape(-1)[0])))
                        or head(y, s, r, feats, time))
    got = method.student_sample(x, text, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay: x1, t, then y1, as student_sample draws them
    x1 = torch.randn(x.shape, generator=g)
    t = sample_outer_times(cfg, 2, g, "cpu")
    x_t = flow.interpolate(x, x1, t)
    y1 = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        feats = st.backbone(x_t, t, text)
        y_hat = tmd.rollout(st, feats, y1, cfg.tmd.inner_grid() if rollout else cfg.tmd.inner_grid(1))
    torch.testing.assert_close(got.detach(), x_t - t.view(-1, 1, 1, 1, 1) * y_hat, rtol=1e-4, atol=1e-5)
    assert len(queries) == (6 if rollout else 2)  # the replay's rollout queries the patched head too
    if not rollout:
        first = float(cfg.tmd.inner_grid()[0])
        assert queries[0] == pytest.approx((first, 0.0)) and first > 0.99
    full = TMDStage2(teacher, st, replace(cfg, stage2_rollout=not rollout)).student_sample(
        x, text, torch.Generator().manual_seed(5))
    assert (full.detach() - got.detach()).abs().max() > 1e-4  # the two samples differ: the option does something
