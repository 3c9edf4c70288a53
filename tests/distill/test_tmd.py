import copy

"""TMD invariants (spec tmd.md §10) on tiny Wan transformers."""

import pytest
import torch
from conftest import tiny_shapes_teacher
from tmd_bench.distill import tmd, wan_parts
from tmd_bench.distill.tmd import TMDConfig, TMDStudent, effective_nfe

from tmd_bench import harness


@pytest.fixture
def teacher():
    t = tiny_shapes_teacher(seed=3)
    # non-trivial weights everywhere (Wan zero-initialises nothing, but be explicit)
    return t


def inputs(teacher, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(teacher.latent_shape(b), generator=g)
    text = teacher.encode_text(["a small red circle moving left on a black background", "two large blue squares standing still on a gray background"][:b])
    return x, text


def test_stage_by_stage_forward_is_the_stock_forward(teacher):
    x, text = inputs(teacher)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ref = teacher.velocity(x, t, text)
        out = wan_parts.forward(teacher.transformer, x, t, text)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("head_blocks", [1, 2, 3])
def test_split_forward_equals_teacher_at_initialisation(teacher, head_blocks):
    """Backbone, then head with s = t, r = s and the fusion at its initial value = teacher forward."""
    student = TMDStudent(teacher.transformer, TMDConfig(head_blocks=head_blocks))
    x, text = inputs(teacher)
    t = torch.tensor([0.25, 0.9])
    y_s = torch.randn_like(x)  # anything: the fusion adds nothing at initialisation
    with torch.no_grad():
        feats = student.backbone(x, t, text)
        out = student.head(y_s, t, t, feats)
        ref = teacher.velocity(x, t, text)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,n,h,l,expected", [(2, 2, 5, 30, 2.333), (1, 2, 5, 30, 1.167), (2, 4, 5, 30, 3.0),
                                              (1, 4, 5, 40, 1.375), (2, 4, 5, 40, 2.75)])
def test_effective_nfe_formula_matches_the_paper(m, n, h, l, expected):
    assert effective_nfe(m, n, h, l) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("m,n,h", [(1, 1, 1), (2, 2, 2), (3, 2, 1), (2, 4, 3)])
def test_counted_blocks_agree_with_the_formula(teacher, m, n, h):
    student = TMDStudent(teacher.transformer, TMDConfig(outer_steps=m, inner_steps=n, head_blocks=h))
    method = tmd.tmd_method(student)
    prompts = ["a small red circle moving left on a black background"] * 3
    gen = harness.generate(method, teacher, prompts, [0, 1, 2], m, batch_size=2)
    assert gen.nfe_counted == m == method.declared_nfe(m)
    assert gen.effective_nfe_counted == pytest.approx(effective_nfe(m, n, h, student.num_blocks))
    assert gen.effective_nfe_counted == pytest.approx(method.declared_effective_nfe(m))


def test_rollout_closed_form_with_a_constant_head(teacher, monkeypatch):
    """With head ≡ c, y_r = y_s − (s − r)(y1 − c) telescopes to y_0 = y1 − s_N·(y1 − c)."""
    student = TMDStudent(teacher.transformer, TMDConfig(inner_steps=3, head_blocks=1))
    c = torch.full(teacher.latent_shape(2), 0.7)
    monkeypatch.setattr(student, "head", lambda y, s, r, feats, time=None: c)
    y1 = torch.randn(teacher.latent_shape(2), generator=torch.Generator().manual_seed(1))
    inner = student.config.inner_grid()
    y0 = tmd.rollout(student, None, y1, inner)
    torch.testing.assert_close(y0, y1 - float(inner[0]) * (y1 - c), rtol=1e-5, atol=1e-5)
    # one step from s = 1 to r = 0 returns the head output exactly
    y = tmd.rollout(student, None, y1, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(y, c)


def test_sampling_is_reproducible_for_a_seed(teacher):
    student = TMDStudent(teacher.transformer, TMDConfig(outer_steps=2, inner_steps=2, head_blocks=2))
    m = tmd.tmd_method(student)
    prompts = ["a small red circle moving left on a black background"] * 2
    a = harness.generate(m, teacher, prompts, [5, 6], 2, batch_size=2).videos
    b = harness.generate(m, teacher, prompts, [5, 6], 2, batch_size=1).videos
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    c = harness.generate(m, teacher, prompts[:1], [7], 2).videos
    assert (a[0] - c[0]).abs().max() > 1e-4


def test_cached_sampler_equals_the_plain_composition(teacher):
    """The sampler computes the head's (s, r) conditioning once and reuses the text projection and
    rotary embedding across outer steps; it must equal backbone → N heads → outer update recomputed
    from scratch, with trained-looking (non-zero) fusion and (s − r) weights."""
    student = TMDStudent(teacher.transformer, TMDConfig(outer_steps=3, inner_steps=2, head_blocks=2))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in [*student.fusion.parameters(), *student.delta_time.parameters()]:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    x, text = inputs(teacher)
    outer, inner = student.config.outer_grid(), student.config.inner_grid()
    with torch.no_grad():
        ref = x
        for i, (t, t_prev) in enumerate(zip(outer[:-1], outer[1:])):
            feats = student.backbone(ref, t.float(), text)
            y1 = tmd.inner_noise([3, 4], i, x.shape, x.device, x.dtype)
            y = y1
            for s, r in zip(inner[:-1], inner[1:]):
                y = tmd.inner_step(y, y1, student.head(y, s.float(), r.float(), feats), s.float(), r.float())
            ref = ref - (t - t_prev).float() * y
        out = tmd.sample_tmd(student, x, text, outer, inner, [3, 4])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (out - x).abs().max() > 0.1  # it sampled something


@pytest.mark.parametrize("cfg,msg", [(TMDConfig(head_blocks=4), "1 ≤ H < L"), (TMDConfig(head_blocks=0), "1 ≤ H < L"),
                                     (TMDConfig(outer_steps=0), "M ≥ 1"), (TMDConfig(inner_steps=0), "N ≥ 1")])
def test_bad_configs_are_clear_errors(teacher, cfg, msg):
    with pytest.raises(ValueError, match=msg):
        TMDStudent(teacher.transformer, cfg)


def test_save_load_round_trip_and_wrong_teacher(teacher, tmp_path, wan_teacher_dir):
    from tmd_bench.teachers import load_teacher

    student = TMDStudent(teacher.transformer, TMDConfig(outer_steps=1, inner_steps=2, head_blocks=2))
    with torch.no_grad():
        student.fusion.alpha.fill_(0.3)
        student.fusion.out.weight.normal_()
    student.save(tmp_path / "s", teacher.name, "abc")
    loaded = tmd.load_student(tmp_path / "s", teacher)
    x, text = inputs(teacher)
    with torch.no_grad():
        a = student.head(torch.ones_like(x), torch.tensor(0.5), torch.tensor(0.2), student.backbone(x, torch.tensor(0.7), text))
        b = loaded.head(torch.ones_like(x), torch.tensor(0.5), torch.tensor(0.2), loaded.backbone(x, torch.tensor(0.7), text))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    wan = load_teacher("wan2.1-1.3b", wan_teacher_dir)
    with pytest.raises(ValueError, match="distilled from teacher 'shapes'"):
        tmd.load_student(tmp_path / "s", wan)


def test_inner_noise_sensitivity_is_zero_for_a_head_that_ignores_its_noise(teacher, monkeypatch):
    """The diagnostic on every TMD row: redrawing only y1 moves the sample by the relative amount it
    reports; a head whose output does not depend on y1 (a collapsed transition) gives exactly 0, and
    redrawing the outer noise still moves the sample."""
    from tmd_bench.distill import tmd as tmd_mod
    from tmd_bench.harness import diagnose

    st = TMDStudent(copy.deepcopy(teacher.transformer), TMDConfig(2, 2, 2))
    with torch.no_grad():  # a live fusion: the head reads its noisy input y (at initialisation it does not)
        st.fusion.out.weight.normal_(0, 0.3)
    method = tmd_mod.tmd_method(st)
    prompts, seeds = ["a small red circle moving left on a black background"] * 3, [0, 1, 2]
    live = diagnose(method, teacher, prompts, seeds, 2)
    assert live["tmd_inner_noise_sensitivity"] > 1e-3 and live["tmd_outer_noise_sensitivity"] > 1e-3
    # by hand: the same quantity from two samples that differ only in their inner noise
    noise = torch.stack([torch.randn(teacher.latent_shape(1)[1:], generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    text = teacher.encode_text(prompts)
    a = tmd_mod.sample_tmd(st, noise, text, st.config.outer_grid(2), st.config.inner_grid(2), seeds)
    b = tmd_mod.sample_tmd(st, noise, text, st.config.outer_grid(2), st.config.inner_grid(2),
                           [s + tmd_mod.DIAGNOSTIC_SEED_OFFSET for s in seeds])
    expected = float(((b - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)).mean())
    assert live["tmd_inner_noise_sensitivity"] == pytest.approx(expected, rel=1e-5)
    monkeypatch.setattr(st, "head", lambda y, s, r, feats, times=None: torch.full_like(y, 0.1))
    dead = diagnose(method, teacher, prompts, seeds, 2)
    # what is left of y1 is the (1 − s_N)·y1 the grid's first point (s_N < 1) keeps, nothing the head adds
    s_n = float(st.config.inner_grid(2)[0])
    assert dead["tmd_inner_noise_sensitivity"] < 2 * (1 - s_n) + 1e-6 < live["tmd_inner_noise_sensitivity"] / 5
    assert dead["tmd_outer_noise_sensitivity"] > 1e-3
